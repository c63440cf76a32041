"""End to end: two RustDesk-like clients (L{p2pnet.protocols.rustdesk_client}) through
real rendezvous and relay listeners on loopback (rustdesk.md §10 checklist)."""

from __future__ import annotations

import base64
import os
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SkipTest, TestCase
from wsproto.utilities import LocalProtocolError

from p2pnet.codecs import addrmangle
from p2pnet.codecs.proto.rendezvous_pb2 import (
    PunchHoleResponse,
    RegisterPkResponse,
    RendezvousMessage,
)
from p2pnet.protocols.rustdesk_client import (
    ControlledPeer,
    Controller,
    MessageWebSocket,
    UDPRegistration,
    connectStream,
    connectWebSocket,
)
from p2pnet.services.relay import RelayService
from p2pnet.services.rendezvous import RendezvousService
from p2pnet.services.rendezvous_keys import loadServerKey
from p2pnet.store.peers import PeerStore

SECRET = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQGKiOPddAnxlf1S2y08ul1yymcJvx2UEhvzdIgBtA9vXA=="
PUBLIC = "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w="
SERVER_PK = base64.b64decode(PUBLIC)
Failure = PunchHoleResponse.Failure


def withTimeout(d: defer.Deferred[Any], seconds: float = 5.0) -> defer.Deferred[Any]:
    return d.addTimeout(seconds, reactor)


def closeClientWebSocket(transport: Any) -> None:
    """Close a Twisted client WebSocket, also when the server's close handshake already
    finished it (twisted.web's wire protocol then raises wsproto's LocalProtocolError)."""
    try:
        transport.loseConnection()
    except LocalProtocolError:
        transport.transport.loseConnection()


class EndToEndTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        store = PeerStore(os.path.join(self.dir, "peers.sqlite3"))
        self.rendezvous = RendezvousService(
            reactor, store, loadServerKey(SECRET, self.dir), listen=("127.0.0.1",), port=0)
        self.relay = RelayService(reactor, key=PUBLIC, dataDir=self.dir,
                                  listen=("127.0.0.1",), port=0)
        self.rendezvous.startService()
        self.relay.startService()
        self.addCleanup(self.relay.stopService)
        self.addCleanup(self.rendezvous.stopService)
        self.udpPort = self.rendezvous.boundPorts["udp"]
        self.tcpPort = self.rendezvous.boundPorts["tcp"]
        self.natPort = self.rendezvous.boundPorts["nat"]
        self.wsPort = self.rendezvous.boundPorts["ws"]
        self.relayPort = self.relay.boundPorts["tcp"]
        self.relayWsPort = self.relay.boundPorts["ws"]
        self.connections: list[Any] = []

    def tearDown(self) -> defer.Deferred[Any]:
        waits = []
        for c in self.connections:
            if c.closed.called:
                continue
            if isinstance(c, MessageWebSocket):
                closeClientWebSocket(c.transport)
            else:
                c.transport.loseConnection()
            waits.append(c.closed)
        return defer.DeferredList(waits)

    def peer(self, peerId: str = "123456789", **kw: Any) -> ControlledPeer:
        p = ControlledPeer(reactor, "127.0.0.1", self.udpPort, self.tcpPort, peerId,
                           relayPort=self.relayPort, licenceKey=PUBLIC, **kw)
        return p

    def controller(self, bindAddress: str | None = "127.0.0.2", key: str = PUBLIC) -> Controller:
        return Controller(reactor, "127.0.0.1", self.tcpPort, natPort=self.natPort,
                          relayPort=self.relayPort, licenceKey=key, serverPk=SERVER_PK,
                          bindAddress=bindAddress)

    def track(self, c: Any) -> Any:
        self.connections.append(c)
        return c

    def stopUDP(self, peer: ControlledPeer) -> None:
        if peer.udp is not None and peer.udp.transport is not None:
            peer.udp.transport.stopListening()

    @defer.inlineCallbacks
    def registered(self, peerId: str = "123456789") -> Any:
        peer = self.peer(peerId)
        pkReply, peerReply = yield withTimeout(peer.registerUDP())
        self.addCleanup(self.stopUDP, peer)
        self.assertEqual(pkReply.register_pk_response.result, RegisterPkResponse.OK)
        self.assertFalse(peerReply.register_peer_response.request_pk)
        return peer

    @defer.inlineCallbacks
    def test_registerUnknownPeerAsksForKey(self) -> Any:
        from p2pnet.codecs.proto.rendezvous_pb2 import RegisterPeer

        peer = self.peer("987654321")
        udp = peer.openUDP()
        self.addCleanup(self.stopUDP, peer)
        udp.send(RendezvousMessage(register_peer=RegisterPeer(id="987654321")))
        reply = yield withTimeout(udp.receive())
        self.assertTrue(reply.register_peer_response.request_pk)

    @defer.inlineCallbacks
    def test_punchHole(self) -> Any:
        """PunchHole to B's UDP address, PunchHoleSent back, signed pk to A (rustdesk.md §10.2)."""
        b = yield self.registered()
        a = self.controller()
        served = b.serveOnce(b.udp)
        stream, reply = yield withTimeout(a.punchHole("123456789"))
        self.track(stream)
        kind, message = yield withTimeout(served)
        self.assertEqual(kind, "punch_hole")
        self.assertEqual(addrmangle.decode(message.punch_hole.socket_addr),
                         ("127.0.0.2", stream.localAddress[1]))
        phr = reply.punch_hole_response
        self.assertEqual(addrmangle.decode(phr.socket_addr), b.answeredFrom)
        self.assertEqual(a.verifyPk("123456789", phr.pk), b.pk)
        self.assertRaises(ValueError, a.verifyPk, "other-id", phr.pk)

    @defer.inlineCallbacks
    def test_sameIntranetLocalAddr(self) -> Any:
        b = yield self.registered()
        a = self.controller(bindAddress="127.0.0.1")
        served = b.serveOnce(b.udp)
        stream, reply = yield withTimeout(a.punchHole("123456789"))
        self.track(stream)
        kind, _ = yield withTimeout(served)
        self.assertEqual(kind, "fetch_local_addr")
        phr = reply.punch_hole_response
        self.assertTrue(phr.is_local)
        self.assertEqual(addrmangle.decode(phr.socket_addr), b.answeredFrom)
        self.assertEqual(a.verifyPk("123456789", phr.pk), b.pk)

    @defer.inlineCallbacks
    def test_relayThroughBothServers(self) -> Any:
        """RequestRelay via hbbs, both legs paired in the relay, bytes both ways."""
        b = yield self.registered()
        a = self.controller()
        served = b.serveOnce(b.udp)
        requested = a.requestRelay("123456789")
        kind, message = yield withTimeout(served)
        self.assertEqual(kind, "request_relay")
        uuid, reply = yield withTimeout(requested)
        self.assertEqual(reply.relay_response.socket_addr, b"")
        self.assertEqual(message.request_relay.uuid, uuid)
        legA = self.track((yield a.connectRelay(reply.relay_response.relay_server, uuid,
                                                "123456789")))
        legB = self.track(b.relayLegs[0])
        legA.transport.write(b"hello from A" * 1000)
        legB.transport.write(b"hello from B")
        gotB = yield withTimeout(legB.waitFor(12000))
        gotA = yield withTimeout(legA.waitFor(12))
        self.assertEqual(gotB, b"hello from A" * 1000)
        self.assertEqual(gotA, b"hello from B")
        self.assertEqual(self.relay.stats.snapshot()["pairs"], 1)

    @defer.inlineCallbacks
    def test_relayWrongKeyClosed(self) -> Any:
        a = self.controller(key="wrong")
        leg = yield a.connectRelay("", "some-uuid", "x")
        yield withTimeout(leg.closed)
        self.assertEqual(self.relay.stats.counters["refused_key"], 1)

    @defer.inlineCallbacks
    def test_onlineBitmap(self) -> Any:
        yield self.registered("111111111")
        yield self.registered("333333333")
        flags = yield withTimeout(self.controller().online(
            ["111111111", "222222222", "333333333", "444444444"] + ["x"] * 5))
        self.assertEqual(flags, [True, False, True] + [False] * 6)

    @defer.inlineCallbacks
    def test_natTestBothPorts(self) -> Any:
        local, a, b = yield withTimeout(self.controller(bindAddress=None).testNat())
        self.assertEqual((a, b), (local[1], local[1]))

    @defer.inlineCallbacks
    def test_keyMismatch(self) -> Any:
        yield self.registered()
        stream, reply = yield withTimeout(self.controller(key="nope").punchHole("123456789"))
        self.track(stream)
        self.assertEqual(reply.punch_hole_response.failure, Failure.LICENSE_MISMATCH)

    @defer.inlineCallbacks
    def test_unknownAndOffline(self) -> Any:
        a = self.controller()
        stream, reply = yield withTimeout(a.punchHole("000000000"))
        self.track(stream)
        self.assertEqual(reply.punch_hole_response, PunchHoleResponse())
        self.assertEqual(reply.SerializeToString().hex(), "5a00")
        yield self.registered()
        self.rendezvous.peers["123456789"].lastRegTime -= 31
        stream, reply = yield withTimeout(a.punchHole("123456789"))
        self.track(stream)
        self.assertEqual(reply.punch_hole_response.failure, Failure.OFFLINE)

    @defer.inlineCallbacks
    def test_tcpRegisteredPeerReached(self) -> Any:
        """rustdesk.md §4.17: B registers over an encrypted TCP link and is punched through it."""
        link = self.track((yield connectStream(reactor, "127.0.0.1", self.tcpPort,
                                               serverPk=SERVER_PK)))
        self.assertTrue((yield withTimeout(link.secured)))
        b = self.peer("tcppeer1")
        reply = yield withTimeout(b.registerStream(link))
        self.assertEqual(reply.register_pk_response.result, RegisterPkResponse.OK)
        self.assertEqual(reply.register_pk_response.keep_alive, 30)
        a = self.controller()
        served = b.serveOnce(link)
        stream, response = yield withTimeout(a.punchHole("tcppeer1"))
        self.track(stream)
        kind, _ = yield withTimeout(served)
        self.assertEqual(kind, "punch_hole")
        self.assertEqual(a.verifyPk("tcppeer1", response.punch_hole_response.pk), b.pk)
        flags = yield withTimeout(a.online(["tcppeer1"]))
        self.assertEqual(flags, [True])

    @defer.inlineCallbacks
    def test_webSocketRegistrationAndPunch(self) -> Any:
        """A WS-registered peer is reached by a WS controller; no LAN path over WS."""
        url = f"ws://127.0.0.1:{self.wsPort}/"
        link = self.track((yield withTimeout(connectWebSocket(reactor, url))))
        b = self.peer("wspeer01")
        reply = yield withTimeout(b.registerStream(link))
        self.assertEqual(reply.register_pk_response.keep_alive, 30)
        ws: MessageWebSocket = self.track((yield withTimeout(connectWebSocket(reactor, url))))
        from p2pnet.codecs.proto.rendezvous_pb2 import PunchHoleRequest

        served = b.serveOnce(link)
        ws.send(RendezvousMessage(punch_hole_request=PunchHoleRequest(
            id="wspeer01", licence_key=PUBLIC, version="1.4.5")))
        kind, _ = yield withTimeout(served)
        self.assertEqual(kind, "punch_hole")
        response = yield withTimeout(ws.receive())
        self.assertEqual(self.controller().verifyPk(
            "wspeer01", response.punch_hole_response.pk), b.pk)

    @defer.inlineCallbacks
    def test_webSocketRelayLeg(self) -> Any:
        """A WS leg and a TCP leg: messages re-framed both ways."""
        from p2pnet.codecs.proto.rendezvous_pb2 import RequestRelay
        from p2pnet.codecs.rustdesk_frame import FrameDecoder, encodeFrame

        class Leg(MessageWebSocket):
            def __init__(self) -> None:
                super().__init__()
                self.raw: defer.DeferredQueue[bytes] = defer.DeferredQueue()

            def bytesMessageReceived(self, data: bytes | bytearray) -> None:
                self.raw.put(bytes(data))

        ws = self.track((yield withTimeout(connectWebSocket(
            reactor, f"ws://127.0.0.1:{self.relayWsPort}/", Leg))))
        ws.send(RendezvousMessage(request_relay=RequestRelay(uuid="u1", licence_key=PUBLIC)))
        tcp = self.track((yield self.controller().connectRelay("", "u1", "")))
        tcp.transport.write(encodeFrame(b"frame one") + encodeFrame(b"") +
                            encodeFrame(b"frame two"))
        self.assertEqual((yield withTimeout(ws.raw.get())), b"frame one")
        self.assertEqual((yield withTimeout(ws.raw.get())), b"frame two")
        ws.sendRaw(b"from ws")
        got = yield withTimeout(tcp.waitFor(8))
        self.assertEqual(FrameDecoder().feed(got), [b"from ws"])

    @defer.inlineCallbacks
    def test_registrationLoop(self) -> Any:
        """RustDesk's UDP loop (rustdesk.md §6.1): key first, RegisterPeer every 15 s, a new id after
        UUID_MISMATCH, and punch requests handed on."""
        yield self.registered("takenid1")
        clock = Clock()
        b = self.peer("takenid1")
        loop = UDPRegistration(b, clock)
        self.addCleanup(self.stopUDP, b)
        self.addCleanup(loop.stop)
        confirmed = loop.whenConfirmed()
        loop.start()
        newId = yield withTimeout(confirmed)
        self.assertNotEqual(newId, "takenid1")
        self.assertEqual(len(newId), 10)
        self.assertEqual(loop.sent, ["register_pk", "register_pk"])
        clock.advance(14)
        self.assertEqual(len(loop.sent), 2)
        clock.advance(1)
        self.assertEqual(loop.sent[-1], "register_peer")
        for _ in range(100):  # the reply arrives over real UDP
            if loop.state.outstandingSince is None:
                break
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertIsNone(loop.state.outstandingSince)
        self.assertTrue(self.rendezvous.peers[newId].online(reactor.seconds()))
        served = b.serveOnce(loop)
        stream, reply = yield withTimeout(self.controller().punchHole(newId))
        self.track(stream)
        kind, _ = yield withTimeout(served)
        self.assertEqual(kind, "punch_hole")
        self.assertEqual(self.controller().verifyPk(newId, reply.punch_hole_response.pk), b.pk)

    @defer.inlineCallbacks
    def test_oversizedWebSocketMessage(self) -> Any:
        """A WS message above the bound aborts that connection; nothing is kept."""
        ws = self.track((yield withTimeout(connectWebSocket(
            reactor, f"ws://127.0.0.1:{self.wsPort}/"))))
        ws.sendRaw(b"\x00" * (65 * 1024))
        yield withTimeout(ws.closed)
        self.assertEqual(self.rendezvous.stats.counters["bad_message"], 1)
        yield self.registered()

    @defer.inlineCallbacks
    def test_garbageClosesOnlyThatConnection(self) -> Any:
        bad = self.track((yield connectStream(reactor, "127.0.0.1", self.tcpPort)))
        bad.transport.write(b"\xff\xff\xff\xff")
        yield withTimeout(bad.closed)
        yield self.registered()
        self.assertEqual(self.rendezvous.stats.counters["bad_frame"], 1)


class IPv6Tests(TestCase):
    """The same flows over IPv6 loopback: 18-byte AddrMangle, v6 UDP and relay."""

    timeout = 30

    def setUp(self) -> None:
        from p2pnet.listen import ipv6Available

        if not ipv6Available():
            raise SkipTest("no IPv6 on this host")
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.rendezvous = RendezvousService(
            reactor, PeerStore(os.path.join(self.dir, "peers.sqlite3")),
            loadServerKey(SECRET, self.dir), listen=("::1",), port=0)
        self.relay = RelayService(reactor, listen=("::1",), port=0)
        self.rendezvous.startService()
        self.relay.startService()
        self.addCleanup(self.relay.stopService)
        self.addCleanup(self.rendezvous.stopService)

    @defer.inlineCallbacks
    def test_localAddrAndRelay(self) -> Any:
        b = ControlledPeer(reactor, "::1", self.rendezvous.boundPorts["udp"],
                           self.rendezvous.boundPorts["tcp"], "v6peer01",
                           relayPort=self.relay.boundPorts["tcp"])
        pkReply, _ = yield withTimeout(b.registerUDP())
        self.addCleanup(b.udp.transport.stopListening)
        self.assertEqual(pkReply.register_pk_response.result, RegisterPkResponse.OK)
        a = Controller(reactor, "::1", self.rendezvous.boundPorts["tcp"],
                       relayPort=self.relay.boundPorts["tcp"], serverPk=SERVER_PK,
                       licenceKey=PUBLIC)
        served = b.serveOnce(b.udp)
        stream, reply = yield withTimeout(a.punchHole("v6peer01"))
        kind, message = yield withTimeout(served)
        self.assertEqual(kind, "fetch_local_addr")
        self.assertEqual(len(message.fetch_local_addr.socket_addr), 18)
        self.assertEqual(addrmangle.decode(message.fetch_local_addr.socket_addr),
                         stream.localAddress)
        phr = reply.punch_hole_response
        self.assertTrue(phr.is_local)
        self.assertEqual(addrmangle.decode(phr.socket_addr), b.answeredFrom)
        stream.transport.loseConnection()
        yield stream.closed
        served = b.serveOnce(b.udp)
        uuid, _ = yield withTimeout(a.requestRelay("v6peer01"))
        yield withTimeout(served)
        legA = yield a.connectRelay("", uuid, "v6peer01")
        legB = b.relayLegs[0]
        legA.transport.write(b"over six")
        self.assertEqual((yield withTimeout(legB.waitFor(8))), b"over six")
        for leg in (legA, legB):
            leg.transport.loseConnection()
        yield defer.DeferredList([legA.closed, legB.closed])
