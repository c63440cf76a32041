"""Tests for L{p2pnet.services.stun}: the Binding method, RFC 3489, RFC 5780, auth, limits.

In memory: a L{UDPMemoryReactor}, C{StringTransport}s and its clock; binding real sockets
is in C{test/interop/test_stun_listen.py}."""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.addresses import ExternalAddresses
from p2pnet.codecs import stun
from p2pnet.codecs.stun import Attr, Message, Method, StunClass, decode, userhash
from p2pnet.services.auth import PASSWORD_ALGORITHMS, StaticUsers
from p2pnet.services.stun import StunService
from p2pnet.testing import FakeListeningPort, UDPMemoryReactor, address

CLIENT = ("127.0.0.1", 40000)


def binding(*attributes: tuple[int, bytes]) -> Message:
    """A Binding request with C{attributes}."""
    return Message(Method.BINDING, StunClass.REQUEST, attributes=list(attributes))


class MemorySockets:
    """L{p2pnet.services.stun.Sockets} that bind nothing: UDP sockets are the reactor's
    fake transports, TCP listeners are recorded in C{reactor.streamPorts}; port 0 is
    the next number from 40000 up."""

    def __init__(self, reactor: UDPMemoryReactor) -> None:
        self.reactor = reactor
        self.next = 40000

    def _port(self, port: int) -> int:
        if port:
            return port
        self.next += 1
        return self.next

    def udp(self, protocol: Any, host: str, port: int, key: str) -> Any:
        return self.reactor.listenUDP(self._port(port), protocol, host)

    def tcp(self, factory: Any, host: str, port: int, key: str, proto: str) -> Any:
        port = self._port(port)
        self.reactor.streamPorts[(host, port)] = factory
        return FakeListeningPort(address("TCP", host, port))


class ServiceMixin:
    """Starts a service on a L{UDPMemoryReactor} and talks to its sockets."""

    def startStun(self, **kwargs: object) -> StunService:
        self.reactor = UDPMemoryReactor()
        kwargs.setdefault("listen", ("127.0.0.1",))
        kwargs.setdefault("port", 0)
        kwargs.setdefault("altPort", 0)
        kwargs.setdefault("sockets", MemorySockets(self.reactor))
        self.service = StunService(self.reactor, **kwargs)  # type: ignore[arg-type]
        self.service.startService()
        self.addCleanup(self.service.stopService)  # type: ignore[attr-defined]
        return self.service

    def socketAt(self, a: int = 0, p: int = 0, family: int = 4):  # noqa: ANN201
        return self.service.matrix[family][(a, p)]

    def sendUDP(self, data: bytes, a: int = 0, p: int = 0, source=CLIENT) -> None:  # noqa: ANN001
        self.socketAt(a, p, 6 if ":" in source[0] else 4).datagramReceived(data, source)

    def replies(self, a: int = 0, p: int = 0, family: int = 4) -> list[tuple[bytes, tuple]]:
        written = self.socketAt(a, p, family).transport.written
        out = list(written)
        written.clear()
        return out

    def onlyReply(self, a: int = 0, p: int = 0, family: int = 4) -> tuple[Message, tuple]:
        out = self.replies(a, p, family)
        self.assertEqual(len(out), 1)  # type: ignore[attr-defined]
        return decode(out[0][0]), out[0][1]


def errorCode(message: Message) -> int:
    return stun.decodeErrorCode(message.get(Attr.ERROR_CODE))[0]


class BindingTests(ServiceMixin, SynchronousTestCase):
    """RFC 8489 Binding over UDP."""

    def test_binding(self) -> None:
        """The reflexive address comes back XOR'd, with SOFTWARE and FINGERPRINT."""
        self.startStun()
        request = binding()
        self.sendUDP(request.encode())
        reply, destination = self.onlyReply()
        self.assertEqual(destination, CLIENT)
        self.assertEqual((reply.cls, reply.transactionId), (StunClass.SUCCESS,
                                                            request.transactionId))
        self.assertEqual(stun.decodeXorAddress(reply.get(Attr.XOR_MAPPED_ADDRESS),
                                               reply.transactionId), CLIENT)
        self.assertEqual(reply.get(Attr.SOFTWARE), b"p2pnet")
        self.assertEqual(reply.attributes[-1][0], Attr.FINGERPRINT)
        self.assertIsNone(reply.get(Attr.OTHER_ADDRESS))
        self.assertEqual(self.service.stats.counters["stun.binding.success"], 1)

    def test_ipv6(self) -> None:
        """IPv6 clients on an IPv6 socket get their IPv6 address."""
        self.startStun(listen=("::1",))
        source = ("::1", 5555)
        self.socketAt(family=6).datagramReceived(binding().encode(), source)
        reply, _ = self.onlyReply(family=6)
        self.assertEqual(stun.decodeXorAddress(reply.get(Attr.XOR_MAPPED_ADDRESS),
                                               reply.transactionId), source)

    def test_noSoftware(self) -> None:
        """An empty software setting leaves SOFTWARE out."""
        self.startStun(software="")
        self.sendUDP(binding().encode())
        self.assertIsNone(self.onlyReply()[0].get(Attr.SOFTWARE))

    def test_indicationAndResponsesIgnored(self) -> None:
        """Indications and responses are never answered."""
        self.startStun()
        self.sendUDP(Message(Method.BINDING, StunClass.INDICATION).encode())
        self.sendUDP(Message(Method.BINDING, StunClass.SUCCESS).encode())
        self.assertEqual(self.replies(), [])
        self.assertEqual(self.service.stats.counters["stun.indications"], 1)

    def test_unknownComprehensionRequired(self) -> None:
        """420 lists the unknown comprehension-required attributes."""
        self.startStun()
        self.sendUDP(binding((0x0031, b"x"), (0x8031, b"y")).encode())
        reply, _ = self.onlyReply()
        self.assertEqual(errorCode(reply), 420)
        self.assertEqual(stun.decodeUnknownAttributes(reply.get(Attr.UNKNOWN_ATTRIBUTES)),
                         [0x31])
        self.assertEqual(self.service.stats.counters["stun.errors.420"], 1)

    def test_unknownComprehensionOptional(self) -> None:
        """Unknown comprehension-optional attributes are ignored."""
        self.startStun()
        self.sendUDP(binding((0x8031, b"y")).encode())
        self.assertEqual(self.onlyReply()[0].cls, StunClass.SUCCESS)

    def test_malformedRequest(self) -> None:
        """A request with a sound header but broken attributes gets 400."""
        self.startStun()
        data = bytearray(binding((Attr.SOFTWARE, b"abcd")).encode())
        struct.pack_into("!H", data, 22, 99)
        self.sendUDP(bytes(data))
        reply, _ = self.onlyReply()
        self.assertEqual(errorCode(reply), 400)
        self.assertEqual(reply.transactionId, bytes(data[8:20]))
        self.assertEqual(self.service.stats.counters["stun.malformed"], 1)

    def test_malformedNotAnswered(self) -> None:
        """Broken classic headers, responses, bad fingerprints and garbage get nothing."""
        self.startStun()
        classic = struct.pack("!HH", 1, 8) + bytes(16)
        response = bytearray(Message(Method.BINDING, StunClass.SUCCESS).add(
            Attr.SOFTWARE, b"abcd").encode())
        struct.pack_into("!H", response, 22, 99)
        fingerprinted = bytearray(binding().encode(fingerprint=True))
        fingerprinted[-1] ^= 0xFF
        for data in (classic, bytes(response), bytes(fingerprinted), b"\xff" * 40, b"", b"\x01"):
            self.sendUDP(data)
        self.assertEqual(self.replies(), [])
        counters = self.service.stats.counters
        self.assertEqual(counters["stun.garbage"], 2)
        self.assertEqual(counters["stun.malformed"], 4)

    def test_garbageLoggedAtBoundedRate(self) -> None:
        """A flood of garbage produces a bounded number of log lines."""
        self.startStun()
        events: list[dict] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        for _ in range(1000):
            self.sendUDP(b"\xff" * 30)
        warnings = [e for e in events if e.get("category") == "garbage"]
        self.assertLessEqual(len(warnings), 5)
        self.assertEqual(self.service.stats.counters["stun.garbage"], 1000)

    def test_unknownMethod(self) -> None:
        """Requests of methods nobody handles get 400; other classes are dropped."""
        self.startStun()
        self.sendUDP(Message(Method.ALLOCATE, StunClass.REQUEST).encode())
        self.assertEqual(errorCode(self.onlyReply()[0]), 400)
        self.sendUDP(Message(Method.SEND, StunClass.INDICATION).encode())
        self.assertEqual(self.replies(), [])

    def test_registeredMethod(self) -> None:
        """A sibling service's method handler receives its messages and the link."""
        self.startStun()
        seen: list = []
        self.service.registerMethod(Method.ALLOCATE, lambda m, link, src: seen.append(
            (m.method, link, src)))
        self.sendUDP(Message(Method.ALLOCATE, StunClass.REQUEST).encode())
        self.assertEqual(seen, [(Method.ALLOCATE, self.socketAt(), CLIENT)])

    def test_channelData(self) -> None:
        """ChannelData is dropped and counted, or handed to the registered handler."""
        self.startStun()
        frame = stun.ChannelData(0x4000, b"data").encode()
        self.sendUDP(frame)
        self.assertEqual(self.service.stats.counters["stun.dropped.channeldata"], 1)
        seen: list = []
        self.service.channelDataHandler = lambda data, link, src: seen.append(data)
        self.sendUDP(frame)
        self.assertEqual(seen, [frame])

    def test_handlerErrorContained(self) -> None:
        """A handler that raises is counted and logged; the socket keeps serving."""
        self.startStun()

        def broken(message: Message, link: object, source: object) -> None:
            raise RuntimeError("bug")

        self.service.registerMethod(Method.ALLOCATE, broken)
        self.sendUDP(Message(Method.ALLOCATE, StunClass.REQUEST).encode())
        self.assertEqual(self.service.stats.counters["stun.internal_errors"], 1)
        self.flushLoggedErrors(RuntimeError)
        self.sendUDP(binding().encode())
        self.assertEqual(self.onlyReply()[0].cls, StunClass.SUCCESS)

    def test_alternateServer(self) -> None:
        """300 Try Alternate names the configured server of the client's family."""
        self.startStun(alternateServers=[("192.0.2.9", 3478)])
        self.sendUDP(binding().encode())
        reply, _ = self.onlyReply()
        self.assertEqual(errorCode(reply), 300)
        self.assertEqual(stun.decodeAddress(reply.get(Attr.ALTERNATE_SERVER)),
                         ("192.0.2.9", 3478))

    def test_changeWithoutAlternate(self) -> None:
        """Without a second address a requested change is refused with 420."""
        self.startStun()
        self.sendUDP(binding((Attr.CHANGE_REQUEST, stun.encodeChangeRequest(True, False))).encode())
        reply, _ = self.onlyReply()
        self.assertEqual(errorCode(reply), 420)
        self.sendUDP(binding((Attr.CHANGE_REQUEST, stun.encodeChangeRequest(False, False))
                             ).encode())
        self.assertEqual(self.onlyReply()[0].cls, StunClass.SUCCESS)

    def test_badChangeRequest(self) -> None:
        """A CHANGE-REQUEST of the wrong size is a bad request."""
        self.startStun()
        self.sendUDP(binding((Attr.CHANGE_REQUEST, b"\0\0")).encode())
        self.assertEqual(errorCode(self.onlyReply()[0]), 400)

    def test_sendFailureCounted(self) -> None:
        """A datagram the kernel refuses is dropped and counted, not raised."""
        self.startStun()

        def refuse(data: bytes, addr: tuple) -> None:
            raise OSError(11, "Resource temporarily unavailable")

        self.socketAt()._sendto = refuse
        self.sendUDP(binding().encode())
        self.assertEqual(self.service.stats.counters["stun.send_errors"], 1)
        self.assertEqual(self.service.stats.counters["stun.internal_errors"], 0)

    def test_scopedSource(self) -> None:
        """A link-local source with a scope gets its address without the scope."""
        self.startStun(listen=("::1",))
        source = ("fe80::1%lo", 4242)
        self.socketAt(family=6).datagramReceived(binding().encode(), source)
        reply, destination = self.onlyReply(family=6)
        self.assertEqual(destination, source)
        self.assertEqual(stun.decodeXorAddress(reply.get(Attr.XOR_MAPPED_ADDRESS),
                                               reply.transactionId), ("fe80::1", 4242))

    def test_stop(self) -> None:
        """Stopping the service closes every socket."""
        service = self.startStun()
        transports = [p.transport for p in service.matrix[4].values()]
        service.stopService()
        self.assertEqual(service.ports, [])
        self.assertTrue(all(t.stopped for t in transports))


class LimitTests(ServiceMixin, SynchronousTestCase):
    """Per-source budgets on unauthenticated requests and on error answers (issue 14
    items 14 and 15), and small error answers."""

    def test_requestBudgetPerSource(self) -> None:
        """Past its burst (twice the rate) one source's requests are dropped and counted;
        another source is still answered; the budget refills with time."""
        self.startStun(requestRate=10)
        for _ in range(30):
            self.sendUDP(binding().encode())
        self.assertEqual(len(self.replies()), 20)
        self.assertEqual(self.service.stats.counters["stun.dropped.request_rate"], 10)
        self.sendUDP(binding().encode(), source=("127.0.0.2", 40000))
        self.assertEqual(len(self.replies()), 1)
        self.reactor.advance(1)
        for _ in range(15):
            self.sendUDP(binding().encode())
        self.assertEqual(len(self.replies()), 10)

    def test_requestBudgetIPv6Slash64(self) -> None:
        """IPv6 sources of one /64 share a budget; another /64 has its own."""
        self.startStun(listen=("::1",), requestRate=5)
        for i in range(20):
            self.socketAt(family=6).datagramReceived(binding().encode(),
                                                     (f"2001:db8::{i + 1}", 1000))
        self.assertEqual(len(self.replies(family=6)), 10)
        self.socketAt(family=6).datagramReceived(binding().encode(), ("2001:db8:1::1", 1))
        self.assertEqual(len(self.replies(family=6)), 1)

    def test_noLimit(self) -> None:
        """A rate of 0 switches the budget off."""
        self.startStun(requestRate=0, errorRate=0)
        for _ in range(500):
            self.sendUDP(binding((0x0031, b"x")).encode())
        self.assertEqual(len(self.replies()), 500)

    def test_errorBudgetPerSource(self) -> None:
        """Error answers to one source stop at its error budget, and requests of methods
        that can only get an error unauthenticated (TURN's) never reach their handler
        past it."""
        self.startStun(errorRate=5)
        for _ in range(15):
            self.sendUDP(binding((0x0031, b"x")).encode())
        self.assertEqual(len(self.replies()), 10)
        self.assertEqual(self.service.stats.counters["stun.dropped.error_rate"], 5)
        self.sendUDP(binding().encode())
        self.assertEqual(self.onlyReply()[0].cls, StunClass.SUCCESS)
        seen: list = []
        self.service.registerMethod(Method.ALLOCATE, lambda m, link, src: seen.append(m))
        self.sendUDP(Message(Method.ALLOCATE, StunClass.REQUEST).encode())
        self.assertEqual(seen, [])
        other = ("127.0.0.3", 1)
        for _ in range(12):
            self.sendUDP(Message(Method.ALLOCATE, StunClass.REQUEST).encode(), source=other)
        self.assertEqual(len(seen), 10)

    def test_malformedCharged(self) -> None:
        """400 answers salvaged from broken requests spend the error budget too."""
        self.startStun(errorRate=2)
        data = bytearray(binding((Attr.SOFTWARE, b"abcd")).encode())
        struct.pack_into("!H", data, 22, 99)
        for _ in range(10):
            self.sendUDP(bytes(data))
        self.assertEqual(len(self.replies()), 4)

    def test_errorAnswerSmall(self) -> None:
        """An unauthenticated error answer carries ERROR-CODE (and UNKNOWN-ATTRIBUTES for
        420) only: no SOFTWARE, FINGERPRINT only when the request had one."""
        self.startStun()
        self.sendUDP(binding((0x0031, b"x")).encode())
        reply, _ = self.onlyReply()
        self.assertEqual([t for t, _ in reply.attributes],
                         [Attr.ERROR_CODE, Attr.UNKNOWN_ATTRIBUTES])
        self.sendUDP(binding((0x0031, b"x")).encode(fingerprint=True))
        reply, _ = self.onlyReply()
        self.assertEqual([t for t, _ in reply.attributes],
                         [Attr.ERROR_CODE, Attr.UNKNOWN_ATTRIBUTES, Attr.FINGERPRINT])

    def test_challengeNoLargerThanNeeded(self) -> None:
        """secure-stun's 401 carries what RFC 8489 §9.2.4 requires and no SOFTWARE."""
        self.startStun(credentials=StaticUsers({"alice": "secret"}), secureStun=True)
        self.sendUDP(binding().encode())
        reply, _ = self.onlyReply()
        self.assertEqual([t for t, _ in reply.attributes],
                         [Attr.ERROR_CODE, Attr.REALM, Attr.NONCE, Attr.PASSWORD_ALGORITHMS])

    def test_turnChallengesWithinBudget(self) -> None:
        """TURN's 401/438 answers go through the same responder and error budget: a
        spoofed source sending signed requests with a forged nonce gets at most the
        budget's burst of small 438 answers."""
        from p2pnet.services.turn import TurnService

        self.startStun(errorRate=5, realm="example.org")
        turn = TurnService(self.reactor, self.service,
                           credentials=StaticUsers({"alice": "secret"}))
        turn.startService()
        self.addCleanup(turn.stopService)
        key = stun.longTermKey("alice", "example.org", "secret")
        for _ in range(30):
            forged = Message(Method.ALLOCATE, StunClass.REQUEST, attributes=[
                (Attr.REQUESTED_TRANSPORT, b"\x11\0\0\0"), (Attr.USERNAME, b"alice"),
                (Attr.REALM, b"example.org"), (Attr.NONCE, b"obMatJos2wAAAffffffff.AAAA")])
            self.sendUDP(forged.encode(key))
        answers = self.replies()
        self.assertEqual(len(answers), 10)
        reply = decode(answers[0][0])
        self.assertEqual(errorCode(reply), 438)
        self.assertIsNone(reply.get(Attr.SOFTWARE))
        self.assertEqual(self.service.stats.counters["stun.dropped.error_rate"], 20)

    def test_refusedTlsConnectionNotWrapped(self) -> None:
        """Over the per-address cap the TLS listener's factory returns C{None}, so the
        port closes the connection, instead of wrapping TLS around no protocol."""
        from twisted.internet.ssl import CertificateOptions

        from p2pnet.protocols.stun import AdmittingTLSFactory

        self.startStun(tlsPort=0, tlsOptions=CertificateOptions, maxConnectionsPerIp=1)
        factory = self.reactor.streamPorts[("127.0.0.1", self.service.boundPorts["tls"])]
        self.assertIsInstance(factory, AdmittingTLSFactory)
        first = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        self.assertIsNotNone(first)
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2)))
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "127.0.0.2", 2)))


class RFC5780Tests(ServiceMixin, SynchronousTestCase):
    """NAT behaviour discovery with two addresses and two ports."""

    def setUp(self) -> None:
        self.startStun(altListen=("127.0.0.2",))
        (self.a1, self.a2), (self.p1, self.p2) = self.service.rfc5780[4]

    def test_matrix(self) -> None:
        """Four UDP sockets: both addresses on both ports."""
        self.assertEqual((self.a1, self.a2), ("127.0.0.1", "127.0.0.2"))
        self.assertNotEqual(self.p1, self.p2)
        for (a, p), protocol in self.service.matrix[4].items():
            host = protocol.transport.getHost()
            self.assertEqual((host.host, host.port), ((self.a1, self.a2)[a], (self.p1, self.p2)[p]))

    def test_otherAddress(self) -> None:
        """Responses name where they come from and the address that differs in both."""
        for a, p in ((0, 0), (1, 0), (0, 1), (1, 1)):
            self.sendUDP(binding().encode(), a, p)
            reply, _ = self.onlyReply(a, p)
            self.assertEqual(stun.decodeAddress(reply.get(Attr.RESPONSE_ORIGIN)),
                             ((self.a1, self.a2)[a], (self.p1, self.p2)[p]))
            self.assertEqual(stun.decodeAddress(reply.get(Attr.OTHER_ADDRESS)),
                             ((self.a1, self.a2)[1 - a], (self.p1, self.p2)[1 - p]))
            self.assertEqual(stun.decodeAddress(reply.get(Attr.MAPPED_ADDRESS)), CLIENT)

    def test_changeRequest(self) -> None:
        """CHANGE-REQUEST picks the socket the response leaves from."""
        for changeIp, changePort, a, p in ((True, True, 1, 1), (True, False, 1, 0),
                                           (False, True, 0, 1)):
            request = binding((Attr.CHANGE_REQUEST,
                               stun.encodeChangeRequest(changeIp, changePort)))
            self.sendUDP(request.encode())
            self.assertEqual(self.replies(0, 0), [])
            reply, destination = self.onlyReply(a, p)
            self.assertEqual(destination, CLIENT)
            self.assertEqual(stun.decodeAddress(reply.get(Attr.RESPONSE_ORIGIN)),
                             ((self.a1, self.a2)[a], (self.p1, self.p2)[p]))

    def test_responsePort(self) -> None:
        """RESPONSE-PORT sends the response to the client's address at that port."""
        self.sendUDP(binding((Attr.RESPONSE_PORT, b"\x12\x34\0\0")).encode())
        _, destination = self.onlyReply()
        self.assertEqual(destination, (CLIENT[0], 0x1234))

    def test_padding(self) -> None:
        """PADDING in the request gives PADDING of the same size in the response."""
        self.sendUDP(binding((Attr.PADDING, bytes(100))).encode())
        reply, _ = self.onlyReply()
        self.assertEqual(reply.get(Attr.PADDING), bytes(100))

    def test_classic(self) -> None:
        """RFC 3489 clients get MAPPED-, SOURCE- and CHANGED-ADDRESS in their own form."""
        request = struct.pack("!HHI", 0x0001, 8, 0x12345678) + b"classic-tid!" + struct.pack(
            "!HHI", Attr.CHANGE_REQUEST, 4, 6)
        self.sendUDP(request)
        reply, destination = self.onlyReply(1, 1)
        self.assertTrue(reply.classic)
        self.assertEqual(reply.cookie + reply.transactionId, request[4:20])
        self.assertEqual(stun.decodeAddress(reply.get(Attr.MAPPED_ADDRESS)), CLIENT)
        self.assertEqual(stun.decodeAddress(reply.get(Attr.SOURCE_ADDRESS)), (self.a2, self.p2))
        self.assertEqual(stun.decodeAddress(reply.get(Attr.CHANGED_ADDRESS)), (self.a2, self.p2))
        self.assertIsNone(reply.get(Attr.FINGERPRINT))
        self.assertIsNone(reply.get(Attr.XOR_MAPPED_ADDRESS))


class ExternalAddressTests(ServiceMixin, SynchronousTestCase):
    """Behind 1:1 NAT (external-ip) the attributes naming the server's own addresses
    give the public ones; ports and the client's mapped address are unchanged."""

    def setUp(self) -> None:
        self.startStun(altListen=("127.0.0.2",), external=ExternalAddresses(
            ["203.0.113.1/127.0.0.1", "203.0.113.2/127.0.0.2"]))
        (_, _), (self.p1, self.p2) = self.service.rfc5780[4]

    def test_rfc5780(self) -> None:
        for a, p in ((0, 0), (1, 1)):
            self.sendUDP(binding().encode(), a, p)
            reply, _ = self.onlyReply(a, p)
            self.assertEqual(stun.decodeAddress(reply.get(Attr.RESPONSE_ORIGIN)),
                             (("203.0.113.1", "203.0.113.2")[a], (self.p1, self.p2)[p]))
            self.assertEqual(stun.decodeAddress(reply.get(Attr.OTHER_ADDRESS)),
                             (("203.0.113.1", "203.0.113.2")[1 - a], (self.p1, self.p2)[1 - p]))
            self.assertEqual(stun.decodeAddress(reply.get(Attr.MAPPED_ADDRESS)), CLIENT)

    def test_classic(self) -> None:
        request = struct.pack("!HHI", 0x0001, 8, 0x12345678) + b"classic-tid!" + struct.pack(
            "!HHI", Attr.CHANGE_REQUEST, 4, 0)
        self.sendUDP(request)
        reply, _ = self.onlyReply()
        self.assertEqual(stun.decodeAddress(reply.get(Attr.SOURCE_ADDRESS)),
                         ("203.0.113.1", self.p1))
        self.assertEqual(stun.decodeAddress(reply.get(Attr.CHANGED_ADDRESS)),
                         ("203.0.113.2", self.p2))


class AuthTests(ServiceMixin, SynchronousTestCase):
    """Long-term credentials on Binding (RFC 8489 §9.2)."""

    def setUp(self) -> None:
        self.startStun(credentials=StaticUsers({"alice": "secret"}), realm="example.org")

    def challenge(self) -> bytes:
        self.service.secureStun = True
        self.sendUDP(binding().encode())
        reply, _ = self.onlyReply()
        self.assertEqual(errorCode(reply), 401)
        self.assertEqual(reply.get(Attr.REALM), b"example.org")
        self.assertEqual(reply.get(Attr.PASSWORD_ALGORITHMS), PASSWORD_ALGORITHMS)
        return reply.get(Attr.NONCE)

    def signed(self, nonce: bytes, password: str = "secret", sha256: bool = False,
               user: tuple[int, bytes] = (Attr.USERNAME, b"alice"),
               *extra: tuple[int, bytes]) -> bytes:
        request = binding(user, (Attr.REALM, b"example.org"), (Attr.NONCE, nonce), *extra)
        return request.encode(stun.longTermKey("alice", "example.org", password), sha256=sha256)

    def test_plainWhenNotSecure(self) -> None:
        """Without secure-stun an unauthenticated request is answered without integrity."""
        self.sendUDP(binding().encode())
        reply, _ = self.onlyReply()
        self.assertEqual(reply.cls, StunClass.SUCCESS)
        self.assertIsNone(reply.get(Attr.MESSAGE_INTEGRITY))

    def test_authenticated(self) -> None:
        """A signed request gets a signed response."""
        self.sendUDP(self.signed(self.challenge()))
        reply, _ = self.onlyReply()
        self.assertEqual(reply.cls, StunClass.SUCCESS)
        self.assertTrue(reply.checkIntegrity(stun.longTermKey("alice", "example.org", "secret")))

    def test_sha256(self) -> None:
        """MESSAGE-INTEGRITY-SHA256 in the request gets MESSAGE-INTEGRITY-SHA256 back."""
        self.sendUDP(self.signed(self.challenge(), sha256=True))
        reply, _ = self.onlyReply()
        self.assertIsNotNone(reply.get(Attr.MESSAGE_INTEGRITY_SHA256))
        self.assertTrue(reply.checkIntegrity(stun.longTermKey("alice", "example.org", "secret")))

    def test_passwordAlgorithmSha256(self) -> None:
        """PASSWORD-ALGORITHM SHA-256 selects the SHA-256 long-term key."""
        nonce = self.challenge()
        key = stun.longTermKey("alice", "example.org", "secret", 2)
        request = binding((Attr.USERNAME, b"alice"), (Attr.REALM, b"example.org"),
                          (Attr.NONCE, nonce), (Attr.PASSWORD_ALGORITHMS, PASSWORD_ALGORITHMS),
                          (Attr.PASSWORD_ALGORITHM, b"\0\x02\0\0"))
        self.sendUDP(request.encode(key, sha256=True))
        reply, _ = self.onlyReply()
        self.assertEqual(reply.cls, StunClass.SUCCESS)
        self.assertTrue(reply.checkIntegrity(key))

    def test_passwordAlgorithmsMismatch(self) -> None:
        """PASSWORD-ALGORITHMS different from what was offered is a bad request."""
        nonce = self.challenge()
        self.sendUDP(self.signed(nonce, "secret", False, (Attr.USERNAME, b"alice"),
                                 (Attr.PASSWORD_ALGORITHMS, b"\0\x01\0\0"),
                                 (Attr.PASSWORD_ALGORITHM, b"\0\x01\0\0")))
        self.assertEqual(errorCode(self.onlyReply()[0]), 400)

    def test_userhash(self) -> None:
        """USERHASH stands in for USERNAME."""
        nonce = self.challenge()
        self.sendUDP(self.signed(nonce, "secret", False,
                                 (Attr.USERHASH, userhash("alice", "example.org"))))
        self.assertEqual(self.onlyReply()[0].cls, StunClass.SUCCESS)

    def test_wrongPassword(self) -> None:
        self.sendUDP(self.signed(self.challenge(), "wrong"))
        self.assertEqual(errorCode(self.onlyReply()[0]), 401)
        self.assertEqual(self.service.stats.snapshot()["stun.auth.failures"], 1)

    def test_unknownUser(self) -> None:
        self.sendUDP(self.signed(self.challenge(), "secret", False, (Attr.USERNAME, b"bob")))
        self.assertEqual(errorCode(self.onlyReply()[0]), 401)

    def test_staleNonce(self) -> None:
        """After the nonce lifetime the same request gets 438 and a new nonce."""
        nonce = self.challenge()
        self.reactor.advance(3601)
        self.sendUDP(self.signed(nonce))
        reply, _ = self.onlyReply()
        self.assertEqual(errorCode(reply), 438)
        self.assertNotEqual(reply.get(Attr.NONCE), nonce)

    def test_forgedNonce(self) -> None:
        """A nonce not made here is stale."""
        self.challenge()
        self.sendUDP(self.signed(b"obMatJos2wAAAffffffff.AAAAAAAAAAAAAAAA"))
        self.assertEqual(errorCode(self.onlyReply()[0]), 438)

    def test_nonceBoundToClient(self) -> None:
        """A nonce made for one client address is stale from another."""
        nonce = self.challenge()
        self.sendUDP(self.signed(nonce), source=("127.0.0.9", 1))
        self.assertEqual(errorCode(self.onlyReply()[0]), 438)

    def test_missingRealm(self) -> None:
        """Integrity without REALM/NONCE is a bad request."""
        request = binding((Attr.USERNAME, b"alice"))
        self.sendUDP(request.encode(b"k"))
        self.assertEqual(errorCode(self.onlyReply()[0]), 400)


class StreamTests(ServiceMixin, SynchronousTestCase):
    """Binding over TCP: framing, UDP-only attributes, limits and idle timeout."""

    def connect(self, host: str = "127.0.0.1", port: int = 50000,  # noqa: ANN201
                listener: tuple[str, int] | None = None):
        factory = self.reactor.streamPorts[
            listener or ("127.0.0.1", self.service.boundPorts["tcp"])]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        if protocol is None:
            return None, None
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        protocol.makeConnection(transport)
        return protocol, transport

    def frames(self, transport: StringTransport) -> list[Message]:
        data = transport.value()
        transport.clear()
        return [decode(f) for f in stun.StreamDecoder().feed(data)]

    def test_pipelinedAndPartial(self) -> None:
        """Several requests in one read, and one split across reads, are all answered."""
        self.startStun()
        protocol, transport = self.connect()
        requests = [binding().encode() for _ in range(3)]
        protocol.dataReceived(requests[0] + requests[1] + requests[2][:5])
        self.assertEqual(len(self.frames(transport)), 2)
        protocol.dataReceived(requests[2][5:])
        (reply,) = self.frames(transport)
        self.assertEqual(stun.decodeXorAddress(reply.get(Attr.XOR_MAPPED_ADDRESS),
                                               reply.transactionId), ("127.0.0.1", 50000))

    def test_noErrorBudgetOverTcp(self) -> None:
        """The error budget bounds reflection to forged UDP sources; a TCP client (its
        source is its connection) gets every answer, or it would wait with nothing to
        retransmit."""
        self.startStun(errorRate=2)
        protocol, transport = self.connect()
        protocol.dataReceived(binding((0x0031, b"x")).encode() * 20)
        self.assertEqual(len(self.frames(transport)), 20)
        self.assertNotIn("stun.dropped.error_rate", self.service.stats.counters)

    def test_responseOriginIsTheConnection(self) -> None:
        """Over TCP, RESPONSE-ORIGIN is the connection's own local address."""
        self.startStun(altListen=("127.0.0.2",))
        protocol, transport = self.connect()
        protocol.dataReceived(binding().encode())
        (reply,) = self.frames(transport)
        local = transport.getHost()
        self.assertEqual(stun.decodeAddress(reply.get(Attr.RESPONSE_ORIGIN)),
                         (local.host, local.port))

    def test_otherAddressIsATcpListener(self) -> None:
        """Over TCP, OTHER-ADDRESS names the TCP listener that differs in both, and that
        listener answers naming the first one back."""
        self.startStun(altListen=("127.0.0.2",))
        protocol, transport = self.connect()
        protocol.dataReceived(binding().encode())
        (reply,) = self.frames(transport)
        other = stun.decodeAddress(reply.get(Attr.OTHER_ADDRESS))
        self.assertEqual(other, ("127.0.0.2", self.service.boundPorts["tcp-alt"]))
        self.assertIn(other, self.reactor.streamPorts)
        protocol, transport = self.connect(listener=other)
        protocol.dataReceived(binding().encode())
        (reply,) = self.frames(transport)
        self.assertEqual(stun.decodeAddress(reply.get(Attr.OTHER_ADDRESS)),
                         ("127.0.0.1", self.service.boundPorts["tcp"]))

    def test_udpOnlyAttributes(self) -> None:
        """CHANGE-REQUEST with a change, RESPONSE-PORT and PADDING are refused on TCP."""
        self.startStun()
        protocol, transport = self.connect()
        for attribute in ((Attr.CHANGE_REQUEST, stun.encodeChangeRequest(True, True)),
                          (Attr.RESPONSE_PORT, b"\0\x10\0\0"), (Attr.PADDING, bytes(8))):
            protocol.dataReceived(binding(attribute).encode())
            (reply,) = self.frames(transport)
            self.assertEqual(errorCode(reply), 400)

    def test_garbageClosesConnection(self) -> None:
        """Bytes that are neither STUN nor ChannelData abort the connection."""
        self.startStun()
        protocol, transport = self.connect()
        protocol.dataReceived(b"\xff" * 20)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.service.stats.counters["stun.garbage"], 1)

    def test_idleTimeout(self) -> None:
        """A connection silent for idle-timeout seconds is closed; traffic resets it."""
        self.startStun(idleTimeout=10)
        protocol, transport = self.connect()
        self.reactor.advance(9)
        protocol.dataReceived(binding().encode())
        self.reactor.advance(9)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_authenticatedConnectionsLeaveThePerAddressCap(self) -> None:
        """max-connections-per-ip bounds connections that have not authenticated: a
        signed request frees its connection's place (and closing it gives nothing
        back twice); a wrong password frees nothing (issue 14 item 3)."""
        self.startStun(credentials=StaticUsers({"alice": "secret"}), realm="example.org",
                       maxConnectionsPerIp=2)
        key = stun.longTermKey("alice", "example.org", "secret")
        first, transport = self.connect(port=1)
        self.connect(port=2)
        self.assertEqual(self.connect(port=3), (None, None))
        nonce = self.service.auth.makeNonce("127.0.0.1")

        def signed(password_key: bytes) -> bytes:
            return binding((Attr.USERNAME, b"alice"), (Attr.REALM, b"example.org"),
                           (Attr.NONCE, nonce)).encode(password_key)

        first.dataReceived(signed(stun.longTermKey("alice", "example.org", "wrong")))
        self.assertEqual(self.connect(port=4), (None, None))
        first.dataReceived(signed(key))
        reply = self.frames(transport)[-1]
        self.assertEqual(reply.cls, StunClass.SUCCESS)
        third, _ = self.connect(port=5)
        self.assertIsNotNone(third)
        self.assertEqual(self.connect(port=6), (None, None))
        first.connectionLost(None)
        self.assertEqual(self.connect(port=7), (None, None))
        self.assertEqual(self.service.stats.counters["stun.connections.authenticated"], 1)

    def test_connectionLimits(self) -> None:
        """Per-address and total limits refuse connections; closing frees a place."""
        self.startStun(maxConnectionsPerIp=2, maxConnections=3)
        first, _ = self.connect()
        self.connect()
        self.assertEqual(self.connect(), (None, None))
        self.connect("127.0.0.5")
        self.assertEqual(self.connect("127.0.0.6"), (None, None))
        first.connectionLost(None)
        self.assertIsNotNone(self.connect()[0])
        self.assertEqual(self.service.stats.counters["stun.connections.refused"], 2)
        self.assertEqual(self.service.stats.snapshot()["stun.connections"], 3)
