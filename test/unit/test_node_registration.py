"""The node's registration loops (L{p2pnet.node.registration}) on a memory reactor:
every timer of rustdesk.md §6.1 and §4.17 on its clock."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.trial.unittest import TestCase

from p2pnet.codecs.proto.rendezvous_pb2 import (
    PunchHole,
    RegisterPeerResponse,
    RegisterPkResponse,
    RendezvousMessage,
)
from p2pnet.codecs.rustdesk_register import RegistrationState
from p2pnet.node.registration import StreamRegistration, UdpRegistration
from p2pnet.testing import UDPMemoryReactor

SERVER = ("192.0.2.10", 21116)
OK = RendezvousMessage(register_pk_response=RegisterPkResponse(result=0, keep_alive=20))


class UdpRegistrationTests(TestCase):
    def setUp(self) -> None:
        self.reactor = UDPMemoryReactor()
        self.requests: list[RendezvousMessage] = []
        self.ids: list[str] = []
        self.state = RegistrationState("123456789", b"u", b"k" * 32, newId=lambda: "1999999999")
        self.loop = UdpRegistration(self.reactor, SERVER, self.state, self.requests.append,
                                    self.ids.append)
        self.loop.start()
        self.addCleanup(self.loop.stop)

    @property
    def transport(self) -> Any:
        return self.loop._port

    def sent(self) -> list[str]:
        return [RendezvousMessage.FromString(d).WhichOneof("union")
                for d, _ in self.transport.written]

    def reply(self, message: RendezvousMessage, addr: tuple[str, int] = SERVER) -> None:
        self.loop.datagramReceived(message.SerializeToString(), addr)

    def test_registersAtOnceThenEvery15s(self) -> None:
        self.assertEqual(self.sent(), ["register_pk"])
        self.assertEqual(self.transport.written[0][1], SERVER)
        self.reply(OK)
        self.assertEqual(self.loop.status, "registered")
        self.reactor.advance(14)
        self.assertEqual(self.sent(), ["register_pk"])
        self.reactor.advance(1)
        self.assertEqual(self.sent(), ["register_pk", "register_peer"])

    def test_timeoutsResendAndRebind(self) -> None:
        first = self.transport
        for _ in range(3 * 4):
            self.reactor.advance(1)
        self.assertEqual(len(first.written), 5)
        self.assertEqual(self.loop.status, "offline")
        self.reactor.advance(3)
        self.assertTrue(first.stopped)  # four timeouts: a new socket
        self.assertIsNot(self.transport, first)
        self.assertEqual(self.loop.stats.counters["rebind"], 1)

    def test_strayAndGarbageDatagramsIgnored(self) -> None:
        self.reply(OK, ("203.0.113.9", 21116))
        self.loop.datagramReceived(b"\xff\xff\xff", SERVER)
        self.assertFalse(self.state.keyConfirmed)
        self.assertEqual(self.loop.stats.counters["stray_datagram"], 1)
        self.assertEqual(self.loop.stats.counters["bad_datagram"], 1)

    def test_requestPk(self) -> None:
        self.reply(OK)
        self.reply(RendezvousMessage(register_peer_response=RegisterPeerResponse(
            request_pk=True)))
        self.assertEqual(self.sent(), ["register_pk", "register_pk"])

    def test_uuidMismatchReportsNewId(self) -> None:
        self.reply(RendezvousMessage(register_pk_response=RegisterPkResponse(result=2)))
        self.assertEqual(self.ids, ["1999999999"])
        last = RendezvousMessage.FromString(self.transport.written[-1][0])
        self.assertEqual(last.register_pk.id, "1999999999")

    def test_requestsHandedOn(self) -> None:
        ph = RendezvousMessage(punch_hole=PunchHole(relay_server="r"))
        self.reply(ph)
        self.assertEqual(self.requests, [ph])


class FakeLink:
    def __init__(self) -> None:
        self.sent: list[RendezvousMessage] = []
        self.queue: DeferredQueue[RendezvousMessage] = DeferredQueue()
        self.heartbeats = 0
        self.closed: Deferred[None] = Deferred()
        self.transport = self
        self.lost = False

    def send(self, message: RendezvousMessage) -> None:
        self.sent.append(message)

    def receive(self) -> Deferred[RendezvousMessage]:
        return self.queue.get()

    def loseConnection(self) -> None:
        self.lost = True
        if not self.closed.called:
            self.closed.callback(None)


class StreamRegistrationTests(TestCase):
    def setUp(self) -> None:
        self.reactor = UDPMemoryReactor()
        self.links: list[FakeLink] = []
        self.attempts: list[Deferred[Any]] = []
        self.requests: list[RendezvousMessage] = []
        self.state = RegistrationState("123456789", b"u", b"k" * 32)
        self.loop = StreamRegistration(self.reactor, self.connect, self.state,
                                       self.requests.append, lambda _: None)

    def connect(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.attempts.append(d)
        return d

    def up(self) -> FakeLink:
        link = FakeLink()
        self.links.append(link)
        self.attempts[-1].callback(link)
        return link

    def test_registerPkOnConnectAndEvery15sUntilConfirmed(self) -> None:
        self.loop.start()
        link = self.up()
        self.assertEqual([m.WhichOneof("union") for m in link.sent], ["register_pk"])
        self.reactor.advance(15)
        self.assertEqual(len(link.sent), 2)
        link.queue.put(OK)
        self.assertEqual(self.loop.status, "registered")
        self.assertEqual(self.loop.keepAlive, 20)
        link.heartbeats += 1
        self.reactor.advance(15)
        self.assertEqual(len(link.sent), 2)  # confirmed: nothing periodic

    def test_silentLinkDroppedAfter1_5KeepAlive(self) -> None:
        self.loop.start()
        link = self.up()
        link.queue.put(OK)  # keep-alive 20 s: dropped after 30 s of silence
        for _ in range(20):
            self.reactor.advance(1)
        link.heartbeats += 1
        self.reactor.advance(1)  # the tick sees the heartbeat: silence starts here
        for _ in range(29):
            self.reactor.advance(1)
        self.assertFalse(link.lost)
        self.reactor.advance(1)
        self.assertTrue(link.lost)
        self.assertEqual(self.loop.status, "offline")

    def test_reconnectBackoff(self) -> None:
        self.loop.start()
        self.attempts[-1].errback(ConnectionRefusedError())
        delays = []
        for _ in range(7):
            before = len(self.attempts)
            waited = 0
            while len(self.attempts) == before:
                self.reactor.advance(1)
                waited += 1
            delays.append(waited)
            self.attempts[-1].errback(ConnectionRefusedError())
        self.assertEqual(delays, [1, 2, 4, 8, 16, 30, 30])

    def test_lostLinkReconnectsAndRegistersAgain(self) -> None:
        self.loop.start()
        link = self.up()
        link.queue.put(OK)
        link.loseConnection()
        self.reactor.advance(1)
        second = self.up()
        self.assertEqual(second.sent[0].WhichOneof("union"), "register_pk")

    def test_requestsHandedOn(self) -> None:
        self.loop.start()
        link = self.up()
        ph = RendezvousMessage(punch_hole=PunchHole())
        link.queue.put(ph)
        self.assertEqual(self.requests, [ph])

    @defer.inlineCallbacks
    def test_stop(self) -> Any:
        self.loop.start()
        link = self.up()
        self.loop.stop()
        self.assertTrue(link.lost)
        self.reactor.advance(60)
        self.assertEqual(len(self.attempts), 1)
        yield None


class ConfigUpdateMoveTests(TestCase):
    """rustdesk.md §6.1 step 5: a ConfigUpdate whose list leaves out our server moves the node."""

    def test_udpNodeMovesToFirstListedServer(self) -> None:
        import os

        from p2pnet.codecs.proto.rendezvous_pb2 import ConfigUpdate
        from p2pnet.node.identity import loadIdentity
        from p2pnet.node.service import NodeService
        from test.unit.nodefakes import FakeFeed, FakeInputs

        reactor = UDPMemoryReactor()
        directory = self.mktemp()
        os.makedirs(directory)
        node = NodeService(reactor, loadIdentity(directory, "123456789", "pw"), FakeFeed(),
                           FakeInputs(), server=SERVER)
        node.startService()
        self.addCleanup(node.stopService)
        loop = node.registration
        first = loop._port
        loop.datagramReceived(OK.SerializeToString(), SERVER)
        same = RendezvousMessage(configure_update=ConfigUpdate(
            serial=1, rendezvous_servers=["192.0.2.10:21116", "192.0.2.11"]))
        loop.datagramReceived(same.SerializeToString(), SERVER)
        reactor.advance(0)
        self.assertIs(loop._port, first)  # ours is listed: stay
        moved = RendezvousMessage(configure_update=ConfigUpdate(
            serial=2, rendezvous_servers=["192.0.2.20:21200"]))
        loop.datagramReceived(moved.SerializeToString(), SERVER)
        reactor.advance(0)
        self.assertTrue(first.stopped)
        self.assertEqual(node.server, ("192.0.2.20", 21200))
        self.assertEqual(node.mediator.server, ("192.0.2.20", 21200))
        self.assertFalse(loop.state.keyConfirmed)
        reactor.advance(1)
        (data, addr), = loop._port.written
        self.assertEqual(addr, ("192.0.2.20", 21200))
        self.assertEqual(RendezvousMessage.FromString(data).WhichOneof("union"),
                         "register_pk")

    def test_streamLinkReconnects(self) -> None:
        state = RegistrationState("123456789", b"u", b"k" * 32)
        reactor = UDPMemoryReactor()
        opened: list[str] = []

        def connect(name: str) -> Any:
            def open_() -> Deferred[Any]:
                opened.append(name)
                return Deferred()
            return open_

        loop = StreamRegistration(reactor, connect("a"), state, lambda m: None,
                                  lambda i: None)
        loop.start()
        self.addCleanup(loop.stop)
        loop.moveTo(connect("b"))
        self.assertEqual(opened, ["a", "b"])


class MessageStreamGarbageTests(TestCase):
    """A rendezvous link that sends garbage is dropped, not a traceback."""

    def test_garbageAbortsLink(self) -> None:
        from twisted.internet.testing import StringTransport

        from p2pnet.codecs.rustdesk_frame import encodeFrame
        from p2pnet.protocols.rustdesk_client import MessageStream

        for data in (encodeFrame(b"\xff\xff\xff"), b"\xff\xff\xff\xff"):
            stream = MessageStream()
            transport = StringTransport()
            stream.makeConnection(transport)
            stream.dataReceived(data)
            self.assertTrue(transport.disconnecting)
            self.assertEqual(stream.badInput, 1)
