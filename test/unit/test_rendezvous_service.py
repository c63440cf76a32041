"""Tests for L{p2pnet.services.rendezvous}: every hbbs rule, driven with a Clock."""

from __future__ import annotations

import ipaddress
from typing import Any

from nacl.signing import SigningKey
from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs import addrmangle
from p2pnet.codecs.proto.rendezvous_pb2 import (
    ConfigUpdate,
    LocalAddr,
    NatType,
    OnlineRequest,
    PunchHoleRequest,
    PunchHoleResponse,
    PunchHoleSent,
    RegisterPeer,
    RegisterPk,
    RegisterPkResponse,
    RelayResponse,
    RendezvousMessage,
    RequestRelay,
    TestNatRequest,
)
from p2pnet.codecs.rustdesk_crypto import verifySignedIdPk
from p2pnet.services.rendezvous import (
    OnlinePeer,
    RelaySelector,
    RendezvousService,
)
from p2pnet.services.rendezvous_keys import ServerKey
from p2pnet.services.rendezvous_registry import PRESENCE_INTERVAL
from p2pnet.store.peers import PeerRecord

R = RegisterPkResponse
F = PunchHoleResponse
SERVER = SigningKey(b"\x01" * 32)
PUBLIC = "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w="
PK = bytes(SigningKey(b"\x02" * 32).verify_key)
PK2 = bytes(SigningKey(b"\x03" * 32).verify_key)


class FakeStore:
    """Records what is put; optionally fails writes."""

    def __init__(self) -> None:
        self.records: dict[str, PeerRecord] = {}
        self.fail = False
        self.closed = False

    def get(self, peerId: str) -> defer.Deferred[PeerRecord | None]:
        return defer.succeed(self.records.get(peerId))

    def put(self, record: PeerRecord) -> defer.Deferred[None]:
        if self.fail:
            return defer.fail(OSError("disk full"))
        self.records[record.id] = record
        return defer.succeed(None)

    def close(self) -> None:
        self.closed = True


class FakeUDP:
    def __init__(self) -> None:
        self.sent: list[tuple[RendezvousMessage, tuple[str, int]]] = []

    def sendMessage(self, message: RendezvousMessage, addr: tuple[str, int]) -> None:
        self.sent.append((message, addr))

    def pop(self) -> list[tuple[RendezvousMessage, tuple[str, int]]]:
        out, self.sent = self.sent, []
        return out


class FakeLink:
    def __init__(self, host: str = "198.51.100.1", port: int = 40000, ws: bool = False,
                 natPort: bool = False) -> None:
        self.peer = (host, port)
        self.ws = ws
        self.natPort = natPort
        self.registeredId: str | None = None
        self.sent: list[RendezvousMessage] = []
        self.closed = False
        self.keepAlive: float | None = None

    def send(self, message: RendezvousMessage) -> None:
        self.sent.append(message)

    def close(self) -> None:
        self.closed = True

    def becomeRegistered(self, keepAlive: float) -> None:
        self.keepAlive = keepAlive


def msg(**kw: Any) -> RendezvousMessage:
    return RendezvousMessage(**kw)


class ServiceTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.store = FakeStore()
        self.service = self.make()
        self.udp = FakeUDP()
        self.service.registerUDP(4, self.udp)
        self.service.registerUDP(6, self.udp)

    def make(self, key: ServerKey | None = None, **kw: Any) -> RendezvousService:
        return RendezvousService(self.clock, self.store,  # type: ignore[arg-type]
                                 key or ServerKey(SERVER, PUBLIC), **kw)

    def udpIn(self, message: RendezvousMessage, addr: tuple[str, int] = ("203.0.113.5", 5000),
              ) -> list[RendezvousMessage]:
        self.service.datagramReceived(message, addr, self.udp)
        return [m for m, _ in self.udp.pop()]

    def registerPk(self, peerId: str = "123456789", uuid: bytes = b"uuid-1", pk: bytes = PK,
                   addr: tuple[str, int] = ("203.0.113.5", 5000)) -> int | None:
        replies = self.udpIn(msg(register_pk=RegisterPk(id=peerId, uuid=uuid, pk=pk)), addr)
        if not replies:
            return None
        return int(replies[0].register_pk_response.result)

    def registerPeer(self, peerId: str = "123456789", addr: tuple[str, int] = (
            "203.0.113.5", 5000), serial: int = 0) -> list[RendezvousMessage]:
        return self.udpIn(msg(register_peer=RegisterPeer(id=peerId, serial=serial)), addr)


class RegistrationTests(ServiceTestCase):
    def test_unknownPeerAsksForKey(self) -> None:
        [reply] = self.registerPeer("(:test_hbbs:)")
        self.assertTrue(reply.register_peer_response.request_pk)
        self.assertEqual(self.service.peers, {})
        self.assertEqual(self.registerPeer(""), [])

    def test_registerPkThenPeer(self) -> None:
        self.assertEqual(self.registerPk(), R.OK)
        self.assertEqual(self.store.records["123456789"],
                         PeerRecord("123456789", b"uuid-1", PK, "203.0.113.5"))
        [reply] = self.registerPeer(addr=("203.0.113.5", 6000))
        self.assertFalse(reply.register_peer_response.request_pk)
        self.assertEqual(self.service.peers["123456789"].addr, ("203.0.113.5", 6000))

    def test_ipChangeAsksForKeyAndDoesNotRefresh(self) -> None:
        self.registerPk()
        self.clock.advance(20)
        [reply] = self.registerPeer(addr=("192.0.2.9", 5000))
        self.assertTrue(reply.register_peer_response.request_pk)
        self.clock.advance(11)
        self.assertFalse(self.service.peers["123456789"].online(self.clock.seconds()))

    def test_loopbackIsNotAnIpChange(self) -> None:
        self.registerPk()
        [reply] = self.registerPeer(addr=("127.0.0.1", 5000))
        self.assertFalse(reply.register_peer_response.request_pk)

    def test_onlineWindow(self) -> None:
        self.registerPk()
        peer = self.service.peers["123456789"]
        self.clock.advance(29.9)
        self.assertTrue(peer.online(self.clock.seconds()))
        self.clock.advance(0.1)
        self.assertFalse(peer.online(self.clock.seconds()))
        self.registerPeer()
        self.assertTrue(peer.online(self.clock.seconds()))

    def test_configUpdateFromLoopbackOnly(self) -> None:
        cu = msg(configure_update=ConfigUpdate(serial=3, rendezvous_servers=["a:21116"]))
        self.udpIn(cu, ("192.0.2.1", 1))
        self.assertEqual(self.service.serial, 0)
        self.udpIn(cu, ("::ffff:127.0.0.1", 1))
        self.udpIn(cu, ("127.0.0.1", 1))
        self.assertEqual((self.service.serial, self.service.rendezvousServers), (3, ("a:21116",)))
        replies = self.registerPeer(serial=1)
        self.assertEqual(replies[1].configure_update.rendezvous_servers, ["a:21116"])
        self.assertEqual(len(self.registerPeer(serial=3)), 1)

    def test_softwareUpdate(self) -> None:
        from p2pnet.codecs.proto.rendezvous_pb2 import SoftwareUpdate

        ask = msg(software_update=SoftwareUpdate(url="1.2.2"))
        self.assertEqual(self.udpIn(ask), [])  # no software-url configured
        url = "https://example.com/rustdesk-1.2.3.exe"
        service = self.make(softwareUrl=url)
        service.datagramReceived(ask, ("192.0.2.1", 1), self.udp)
        [(reply, _)] = self.udp.pop()
        self.assertEqual(reply.software_update.url, url)
        service.datagramReceived(msg(software_update=SoftwareUpdate(url="1.2.3")),
                                 ("192.0.2.1", 1), self.udp)
        self.assertEqual(self.udp.pop(), [])

    def test_versionFromUrl(self) -> None:
        from p2pnet.services.rendezvous import versionFromUrl

        for url, version in [
            ("https://h/rustdesk-1.2.3.exe", "1.2.3"),
            ("https://h/rustdesk-1.2.3", "1.2.3"),
            ("https://h/x.y/rustdesk-nightly", "nightly"),
            ("https://h/rustdesk.exe", ""),
            ("rustdesk-1", ""),
            ("", ""),
        ]:
            self.assertEqual(versionFromUrl(url), version, url)

    def test_ignoredOverUdp(self) -> None:
        self.assertEqual(self.udpIn(msg(punch_hole_request=PunchHoleRequest(id="x"))), [])
        self.assertEqual(self.udpIn(msg(local_addr=LocalAddr())), [])
        self.assertEqual(self.udpIn(RendezvousMessage()), [])
        self.assertEqual(self.service.stats.counters["udp_ignored"], 2)


class RegisterPkRuleTests(ServiceTestCase):
    def test_emptyUuidOrPkIgnored(self) -> None:
        self.assertIsNone(self.registerPk(uuid=b""))
        self.assertIsNone(self.registerPk(pk=b""))

    def test_shortIdIsUuidMismatch(self) -> None:
        self.assertEqual(self.registerPk("12345"), R.UUID_MISMATCH)
        self.assertEqual(self.registerPk("123456"), R.OK)

    def test_otherUuidIsMismatch(self) -> None:
        self.registerPk()
        self.assertEqual(self.registerPk(uuid=b"uuid-2"), R.UUID_MISMATCH)

    def test_sameUuidBothIpAndPkChangedIsMismatch(self) -> None:
        self.registerPk()
        self.clock.advance(7)
        self.assertEqual(self.registerPk(pk=PK2, addr=("192.0.2.9", 1)), R.UUID_MISMATCH)
        self.assertEqual(self.registerPk(pk=PK2), R.OK)
        self.clock.advance(7)
        self.assertEqual(self.registerPk(pk=PK2, addr=("192.0.2.9", 1)), R.OK)
        self.assertEqual(self.store.records["123456789"].ip, "192.0.2.9")

    def test_storedPeerComparedAfterRestart(self) -> None:
        self.store.records["123456789"] = PeerRecord("123456789", b"uuid-1", PK, "203.0.113.5")
        self.assertEqual(self.registerPk(uuid=b"uuid-x"), R.UUID_MISMATCH)
        self.assertEqual(self.registerPk(), R.OK)
        [reply] = self.registerPeer()
        self.assertFalse(reply.register_peer_response.request_pk)

    def test_tooFrequentPerId(self) -> None:
        for _ in range(3):
            self.assertEqual(self.registerPk(), R.OK)
            self.clock.advance(6)
        self.assertEqual(self.registerPk(), R.TOO_FREQUENT)
        self.clock.advance(6.1)
        self.assertEqual(self.registerPk(), R.OK)

    def test_tooFrequentPerSource(self) -> None:
        """RegisterPk per source is a token bucket (rustdesk.md §4.7.1); an IPv6 /64 is
        one source."""
        service = self.service = self.make(registerRate=1, registerBurst=5)
        service.registerUDP(4, self.udp)
        service.registerUDP(6, self.udp)
        for i in range(5):
            self.assertEqual(self.registerPk(f"peer{i:05d}"), R.OK, i)
        self.assertEqual(self.registerPk("peer99999"), R.TOO_FREQUENT)
        self.assertEqual(self.registerPk("other-peer", addr=("192.0.2.77", 1)), R.OK)
        self.clock.advance(1)
        self.assertEqual(self.registerPk("peer99999"), R.OK)
        for i in range(5):
            self.assertEqual(self.registerPk(f"v6peer{i:03d}", addr=(f"2001:db8::{i}", 1)),
                             R.OK, i)
        self.assertEqual(self.registerPk("v6peer999", addr=("2001:db8::ff", 1)),
                         R.TOO_FREQUENT)
        self.assertEqual(self.registerPk("v6peer999", addr=("2001:db8:1::1", 1)), R.OK)
        self.assertEqual(service.stats.counters["register_pk_too_frequent_ip"], 2)

    def test_natCrowdRegistersOnDefaults(self) -> None:
        """500 clients behind one address, all registering at once after a restart (and
        retrying every 15 s, as RustDesk does), are all registered within a minute."""
        pending = {f"{1_000_000_000 + i}" for i in range(500)}
        for _ in range(4):
            for peerId in sorted(pending):
                if self.registerPk(peerId, uuid=peerId.encode()) == R.OK:
                    pending.discard(peerId)
            self.clock.advance(15)
        self.assertEqual(pending, set())
        self.assertEqual(len(self.store.records), 500)

    def test_newIdsPerSource(self) -> None:
        service = self.service = self.make(newIdsPerSource=3)
        service.registerUDP(4, self.udp)
        for i in range(3):
            self.assertEqual(self.registerPk(f"peer{i:05d}"), R.OK, i)
        self.assertEqual(self.registerPk("peer99999"), R.TOO_FREQUENT)
        self.clock.advance(7)
        self.assertEqual(self.registerPk("peer00001"), R.OK)  # known ids still register
        self.assertEqual(self.registerPk("peer99999", addr=("192.0.2.77", 1)), R.OK)
        self.clock.advance(86400)
        self.assertEqual(self.registerPk("peer88888"), R.OK)

    def test_sourceTablesBounded(self) -> None:
        from p2pnet.services import rendezvous_registry

        self.patch(rendezvous_registry, "MAX_SOURCES", 10)
        service = self.service = self.make()
        service.registerUDP(4, self.udp)
        for i in range(50):
            self.registerPk(f"peer{i:05d}", addr=(f"10.0.0.{i}", 1))
        self.assertEqual(len(service.registry._registerBudgets), 10)
        self.assertEqual(len(service.registry._newIds), 10)

    def test_storeFailureIsServerError(self) -> None:
        self.store.fail = True
        self.assertEqual(self.registerPk(), R.SERVER_ERROR)
        self.assertEqual(self.service.stats.counters["store_errors"], 1)  # logged, bounded
        self.store.fail = False
        self.assertEqual(self.registerPk(), R.OK)  # the retry is written
        self.assertIn("123456789", self.store.records)


class PunchTests(ServiceTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.registerPk()  # B at 203.0.113.5:5000

    def punch(self, link: FakeLink, peerId: str = "123456789", key: str = PUBLIC,
              natType: int = NatType.ASYMMETRIC) -> bool:
        return self.service.streamMessage(msg(punch_hole_request=PunchHoleRequest(
            id=peerId, licence_key=key, nat_type=natType, version="1")), link)

    def test_punchHoleToPeer(self) -> None:
        a = FakeLink()
        self.assertTrue(self.punch(a))
        [(m, addr)] = self.udp.pop()
        self.assertEqual(addr, ("203.0.113.5", 5000))
        self.assertEqual(addrmangle.decode(m.punch_hole.socket_addr), a.peer)
        self.assertEqual(m.punch_hole.nat_type, NatType.ASYMMETRIC)
        b = FakeLink("203.0.113.5", 7000)
        keep = self.service.streamMessage(msg(punch_hole_sent=PunchHoleSent(
            socket_addr=m.punch_hole.socket_addr, id="123456789", relay_server="r:1",
            nat_type=NatType.SYMMETRIC, version="1")), b)
        self.assertFalse(keep)
        [reply] = a.sent
        phr = reply.punch_hole_response
        self.assertEqual(addrmangle.decode(phr.socket_addr), ("203.0.113.5", 7000))
        self.assertEqual(verifySignedIdPk(bytes(SERVER.verify_key), phr.pk), ("123456789", PK))
        self.assertEqual((phr.relay_server, phr.nat_type), ("r:1", NatType.SYMMETRIC))
        # The stored reply path is used once.
        self.service.streamMessage(msg(punch_hole_sent=PunchHoleSent(
            socket_addr=m.punch_hole.socket_addr, id="123456789")), b)
        self.assertEqual(len(a.sent), 1)

    def test_ipv6Controller(self) -> None:
        """An IPv6 controller's address goes out in the 18-byte form (rustdesk.md §3)."""
        a = FakeLink("2001:db8::7", 21116)
        self.punch(a)
        [(m, _)] = self.udp.pop()
        self.assertEqual(len(m.punch_hole.socket_addr), 18)
        self.assertEqual(addrmangle.decode(m.punch_hole.socket_addr), a.peer)

    def test_ipv6PeerGetsDatagramsOnTheV6Socket(self) -> None:
        v6 = FakeUDP()
        self.service.registerUDP(6, v6)
        self.service.registerUDP(4, FakeUDP())
        self.assertEqual(self.registerPk("v6peer01", addr=("2001:db8::9", 7)), R.OK)
        self.punch(FakeLink(), "v6peer01")
        [(m, addr)] = v6.pop()
        self.assertEqual((m.WhichOneof("union"), addr), ("punch_hole", ("2001:db8::9", 7)))

    def test_noVersionNoPk(self) -> None:
        a = FakeLink()
        self.punch(a)
        [(m, _)] = self.udp.pop()
        self.service.streamMessage(msg(punch_hole_sent=PunchHoleSent(
            socket_addr=m.punch_hole.socket_addr, id="123456789")), FakeLink("203.0.113.5"))
        self.assertEqual(a.sent[0].punch_hole_response.pk, b"")

    def test_licenceMismatch(self) -> None:
        a = FakeLink()
        self.punch(a, key="wrong")
        self.assertEqual(a.sent[0].punch_hole_response.failure, F.LICENSE_MISMATCH)
        self.assertEqual(self.udp.pop(), [])

    def test_noLicenceCheckWithoutEnforcedKey(self) -> None:
        self.service.key = ServerKey(SERVER, "")
        a = FakeLink()
        self.punch(a, key="")
        self.assertEqual(len(self.udp.pop()), 1)

    def test_unknownAndOffline(self) -> None:
        a = FakeLink()
        self.punch(a, "000000000")
        self.assertEqual(a.sent[-1].SerializeToString().hex(), "5a00")
        self.clock.advance(30)
        self.punch(a)
        self.assertEqual(a.sent[-1].punch_hole_response.failure, F.OFFLINE)

    def test_storedButNotRegisteredIsOffline(self) -> None:
        self.store.records["555555555"] = PeerRecord("555555555", b"u", PK, "192.0.2.1")
        a = FakeLink()
        self.punch(a, "555555555")
        self.assertEqual(a.sent[-1].punch_hole_response.failure, F.OFFLINE)

    def test_sameIpGetsFetchLocalAddr(self) -> None:
        a = FakeLink("203.0.113.5", 4444)
        self.punch(a)
        [(m, _)] = self.udp.pop()
        fla = m.fetch_local_addr
        self.assertEqual(addrmangle.decode(fla.socket_addr), a.peer)
        local = addrmangle.encode("192.168.1.20", 5555, 1)
        self.service.streamMessage(msg(local_addr=LocalAddr(
            socket_addr=fla.socket_addr, local_addr=local, id="123456789", version="1")),
            FakeLink("203.0.113.5", 1))
        phr = a.sent[0].punch_hole_response
        self.assertTrue(phr.is_local)
        self.assertEqual(phr.socket_addr, local)
        self.assertTrue(phr.pk)

    def test_webSocketNeverSameIntranet(self) -> None:
        self.punch(FakeLink("203.0.113.5", 4444, ws=True))
        [(m, _)] = self.udp.pop()
        self.assertEqual(m.WhichOneof("union"), "punch_hole")

    def test_alwaysUseRelay(self) -> None:
        self.service.alwaysUseRelay = True
        self.punch(FakeLink())
        [(m, _)] = self.udp.pop()
        self.assertEqual(m.punch_hole.nat_type, NatType.SYMMETRIC)
        # Also for peers behind the same address (hbbs would send FetchLocalAddr).
        self.punch(FakeLink("203.0.113.5", 4444))
        [(m, _)] = self.udp.pop()
        self.assertEqual(m.punch_hole.nat_type, NatType.SYMMETRIC)

    def test_maskLanRules(self) -> None:
        self.service.mask = ipaddress.IPv4Network("203.0.113.0/24")
        self.service.localIp = "10.1.1.1"
        self.service.relayPort = 30000
        self.punch(FakeLink("198.51.100.1"))  # A outside, B inside: relay via local IP
        [(m, _)] = self.udp.pop()
        self.assertEqual((m.punch_hole.nat_type, m.punch_hole.relay_server),
                         (NatType.SYMMETRIC, "10.1.1.1:30000"))
        self.punch(FakeLink("203.0.113.99"))  # both inside: same intranet
        [(m, _)] = self.udp.pop()
        self.assertEqual(m.WhichOneof("union"), "fetch_local_addr")

    def test_relayRoundRobin(self) -> None:
        self.service.relays = RelaySelector(self.clock, ["r1", "r2:1"])
        seen = []
        for _ in range(3):
            self.punch(FakeLink())
            seen.append(self.udp.pop()[0][0].punch_hole.relay_server)
        self.assertEqual(seen, ["r1", "r2:1", "r1"])

    def test_requestRelayAndRelayResponse(self) -> None:
        a = FakeLink()
        rr = RequestRelay(id="123456789", uuid="u-1", relay_server="relay:21117")
        self.assertTrue(self.service.streamMessage(msg(request_relay=rr), a))
        [(m, addr)] = self.udp.pop()
        self.assertEqual(addrmangle.decode(m.request_relay.socket_addr), a.peer)
        self.assertEqual(m.request_relay.uuid, "u-1")
        b = FakeLink("203.0.113.5")
        self.service.streamMessage(msg(relay_response=RelayResponse(
            socket_addr=m.request_relay.socket_addr, uuid="u-1", relay_server="relay:21117",
            id="123456789", version="1")), b)
        out = a.sent[0].relay_response
        self.assertEqual(out.socket_addr, b"")
        self.assertEqual(out.uuid, "u-1")
        self.assertEqual(verifySignedIdPk(bytes(SERVER.verify_key), out.pk)[0], "123456789")

    def test_requestRelayUnknownPeer(self) -> None:
        self.service.streamMessage(msg(request_relay=RequestRelay(id="nobody")), FakeLink())
        self.assertEqual(self.udp.pop(), [])

    def test_replyPathForgottenOnClose(self) -> None:
        a = FakeLink()
        self.punch(a)
        self.assertIn(a.peer, self.service.tcpPunch)
        self.service.connectionClosed(a, counted=False)
        self.assertEqual(self.service.tcpPunch, {})


class StreamTests(ServiceTestCase):
    def test_natPort(self) -> None:
        link = FakeLink(natPort=True)
        self.assertFalse(self.service.streamMessage(
            msg(test_nat_request=TestNatRequest(serial=0)), link))
        self.assertEqual(link.sent[0].test_nat_response.port, 40000)
        self.assertFalse(link.sent[0].test_nat_response.HasField("cu"))

    def test_natTestOnMainPortCarriesConfig(self) -> None:
        self.service.serial = 2
        link = FakeLink()
        self.assertFalse(self.service.streamMessage(
            msg(test_nat_request=TestNatRequest(serial=1)), link))
        self.assertEqual(link.sent[0].test_nat_response.cu.serial, 2)

    def test_onlineBitmap(self) -> None:
        self.registerPk("111111111")
        self.registerPk("999999999", uuid=b"other")
        ids = ["111111111", "x", "y", "z", "w", "v", "u", "t", "999999999"]
        link = FakeLink(natPort=True)
        self.service.streamMessage(msg(online_request=OnlineRequest(peers=ids)), link)
        self.assertEqual(link.sent[0].online_response.states, b"\x80\x80")
        self.assertTrue(link.closed)  # the NAT port answers once


class FakePresence:
    """The cluster's presence table in memory (what the Redis store does)."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, str, tuple[str, int]]] = []
        self.elsewhere: set[str] = set()
        self.answer: Deferred[set[str]] | None = None

    def markOnline(self, peerId: str, node: str, addr: tuple[str, int],
                   ttl: float) -> Deferred[None]:
        self.marks.append((peerId, node, addr))
        return succeed(None)

    def online(self, peerIds: Any) -> Deferred[set[str]]:
        if self.answer is not None:
            return self.answer
        return succeed({i for i in peerIds if i in self.elsewhere})


class PresenceTests(ServiceTestCase):
    """In a cluster (a shared store), registrations are announced and OnlineRequest also
    counts peers other nodes hold."""

    def setUp(self) -> None:
        super().setUp()
        self.presence = FakePresence()
        self.service.registry.presence = self.presence
        self.service.registry.nodeName = "node-a"

    def test_marksAtMostEveryInterval(self) -> None:
        self.registerPk()
        self.registerPeer()
        self.assertEqual(self.presence.marks,
                         [("123456789", "node-a", ("203.0.113.5", 5000))])
        self.clock.advance(PRESENCE_INTERVAL)
        self.registerPeer()
        self.assertEqual(len(self.presence.marks), 2)
        self.registerPeer(addr=("203.0.113.5", 5001))  # moved: at once
        self.assertEqual(self.presence.marks[-1][2], ("203.0.113.5", 5001))

    def test_onlineElsewhere(self) -> None:
        self.registerPk("111111111")
        self.presence.elsewhere = {"222222222"}
        link = FakeLink(natPort=True)
        self.assertTrue(self.service.streamMessage(
            msg(online_request=OnlineRequest(peers=["111111111", "222222222", "x"])), link))
        self.assertEqual((link.sent[0].online_response.states, link.closed), (b"\xc0", True))

    def test_storeDownAnswersLocally(self) -> None:
        self.registerPk("111111111")
        self.presence.answer = Deferred()
        link = FakeLink(natPort=True)
        self.service.streamMessage(
            msg(online_request=OnlineRequest(peers=["111111111", "222222222"])), link)
        self.assertEqual(link.sent, [])  # waiting for the store
        self.presence.answer.errback(ConnectionError("down"))
        self.assertEqual(link.sent[0].online_response.states, b"\x80")
        self.assertEqual(self.service.stats.counters["presence_errors"], 1)

    def test_unknownMessageCloses(self) -> None:
        link = FakeLink()
        self.assertFalse(self.service.streamMessage(
            msg(register_peer=RegisterPeer(id="123456789")), link))
        self.assertEqual(link.sent, [])

    def test_registrationOverStream(self) -> None:
        link = FakeLink("198.51.100.7", 1234)
        rk = RegisterPk(id="tcppeer1", uuid=b"u", pk=PK)
        self.assertTrue(self.service.streamMessage(msg(register_pk=rk), link))
        reply = link.sent[0].register_pk_response
        self.assertEqual((reply.result, reply.keep_alive), (R.OK, 30))
        self.assertEqual((link.registeredId, link.keepAlive), ("tcppeer1", 30))
        peer = self.service.peers["tcppeer1"]
        self.clock.advance(3600)
        self.assertTrue(peer.online(self.clock.seconds()))
        a = FakeLink()
        self.service.streamMessage(msg(punch_hole_request=PunchHoleRequest(
            id="tcppeer1", licence_key=PUBLIC)), a)
        self.assertEqual(link.sent[1].WhichOneof("union"), "punch_hole")
        self.assertEqual(self.udp.pop(), [])
        self.assertTrue(self.service.streamMessage(msg(punch_hole_sent=PunchHoleSent(
            socket_addr=link.sent[1].punch_hole.socket_addr, id="tcppeer1")), link))
        self.service.streamMessage(msg(request_relay=RequestRelay(id="tcppeer1", uuid="u")),
                                   FakeLink("198.51.100.2"))
        self.assertEqual(link.sent[2].request_relay.uuid, "u")
        self.assertEqual(self.udp.pop(), [])
        self.service.connectionClosed(link, counted=False)
        self.assertFalse(peer.online(self.clock.seconds()))

    def test_changeIdNotSupported(self) -> None:
        link = FakeLink()
        self.service.streamMessage(msg(register_pk=RegisterPk(id="new-id", old_id="old")), link)
        self.assertEqual(link.sent[0].register_pk_response.result, R.NOT_SUPPORT)
        self.assertTrue(link.closed)

    def test_connectionLimits(self) -> None:
        service = self.make(maxConnections=3, maxConnectionsPerIp=2)
        links = [FakeLink("192.0.2.1"), FakeLink("192.0.2.1"), FakeLink("192.0.2.1")]
        self.assertEqual([service.connectionOpened(x) for x in links], [True, True, False])
        self.assertTrue(service.connectionOpened(FakeLink("192.0.2.2")))
        self.assertFalse(service.connectionOpened(FakeLink("192.0.2.3")))
        service.connectionClosed(links[0])
        self.assertTrue(service.connectionOpened(FakeLink("192.0.2.3")))


class OnlinePeerTests(SynchronousTestCase):
    def test_small(self) -> None:
        """The per-peer object stays small (issue: <1 KiB per online peer)."""
        import sys

        peer = OnlinePeer("123456789", b"u" * 36, PK, "203.0.113.5")
        self.assertLess(sys.getsizeof(peer), 200)
        self.assertFalse(hasattr(peer, "__dict__"))


class UdpFloodTests(ServiceTestCase):
    def test_perIpBudget(self) -> None:
        service = self.make(udpRatePerIp=10)
        service.registerUDP(4, self.udp)
        hello = msg(register_peer=RegisterPeer(id="123456789"))
        for _ in range(25):
            service.datagramReceived(hello, ("192.0.2.1", 1), self.udp)
        self.assertEqual(len(self.udp.pop()), 20)
        service.datagramReceived(hello, ("192.0.2.2", 1), self.udp)
        self.assertEqual(len(self.udp.pop()), 1)
        self.clock.advance(0.5)
        for _ in range(10):
            service.datagramReceived(hello, ("192.0.2.1", 1), self.udp)
        self.assertEqual(len(self.udp.pop()), 5)
        self.assertEqual(service.stats.counters["udp_flood_dropped"], 10)

    def test_tableBounded(self) -> None:
        from p2pnet.services import rendezvous

        self.patch(rendezvous, "MAX_SOURCES", 5)
        service = self.make(udpRatePerIp=10)
        for i in range(20):
            service.admitDatagram(f"10.0.0.{i}")
        assert service._udpBudgets is not None
        self.assertEqual(len(service._udpBudgets), 5)


class LookupTests(ServiceTestCase):
    def test_unknownLookupsLeaveNothingBehind(self) -> None:
        for i in range(10):
            self.service.streamMessage(msg(punch_hole_request=PunchHoleRequest(
                id=f"nobody{i}", licence_key=PUBLIC)), FakeLink())
        self.assertEqual((self.service.registry._loading, self.service.peers), ({}, {}))

    def test_lookupsBounded(self) -> None:
        from p2pnet.services import rendezvous_routing

        class SlowStore(FakeStore):
            def get(self, peerId: str) -> defer.Deferred[PeerRecord | None]:
                return defer.Deferred()

        self.patch(rendezvous_routing, "MAX_PENDING_LOOKUPS", 3)
        self.store = SlowStore()
        service = self.make()
        links = [FakeLink() for _ in range(4)]
        for i, link in enumerate(links):
            service.streamMessage(msg(punch_hole_request=PunchHoleRequest(
                id=f"unknown{i}", licence_key=PUBLIC)), link)
        self.assertEqual([link.closed for link in links], [False, False, False, True])
        self.assertEqual(service.stats.counters["lookups_refused"], 1)

    def test_concurrentLookupsShareOneRead(self) -> None:
        reads: list[defer.Deferred[Any]] = []

        class SlowStore(FakeStore):
            def get(self, peerId: str) -> defer.Deferred[PeerRecord | None]:
                reads.append(defer.Deferred())
                return reads[-1]

        self.store = SlowStore()
        service = self.make()
        first, second = (service.registry.getPeer("555555555"),
                         service.registry.getPeer("555555555"))
        self.assertEqual(len(reads), 1)
        reads[0].callback(PeerRecord("555555555", b"u", PK, "192.0.2.1"))
        self.assertIs(self.successResultOf(first), self.successResultOf(second))
        self.assertEqual(service.registry._loading, {})
