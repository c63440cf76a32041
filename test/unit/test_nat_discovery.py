# -*- test-case-name: test.unit.test_nat_discovery -*-
"""Tests for L{p2pnet.protocols.nat_discovery}: verdicts against a simulated NAT and a
simulated RFC 5780 server, all in memory on a C{task.Clock}."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.stun import (
    Attr,
    StunClass,
    decode,
    decodeChangeRequest,
    encodeAddress,
    longTermKey,
)
from p2pnet.protocols.nat_discovery import (
    Behaviour,
    NatBehaviour,
    NatDiscoveryError,
    bindingRequest,
    discover,
)
from p2pnet.protocols.stun_client import (
    LongTermCredentials,
    StunClientProtocol,
    StunErrorResponse,
    StunTimeout,
)
from p2pnet.testing import FakeDatagramTransport

EI = Behaviour.ENDPOINT_INDEPENDENT
AD = Behaviour.ADDRESS_DEPENDENT
APD = Behaviour.ADDRESS_AND_PORT_DEPENDENT

ADDRESSES = ("127.0.0.1", "127.0.0.2")
PORTS = (3478, 3479)
PRIMARY = (ADDRESSES[0], PORTS[0])
LOCAL = ("127.0.0.10", 5000)
PUBLIC_IP = "127.0.0.20"
DELAY = 0.01


class FakeServer:
    """An RFC 5780 server on two addresses and two ports.

    @ivar log: C{(destination, changeIp, changePort)} for every transaction, in order.
    @ivar received: requests received, retransmissions included.
    """

    def __init__(self, rfc5780: bool = True, honourChange: bool = True,
                 changeError: bool = False, silent: bool = False) -> None:
        self.rfc5780 = rfc5780
        self.honourChange = honourChange
        self.changeError = changeError
        self.silent = silent
        self.log: list[tuple[tuple[str, int], bool, bool]] = []
        self.transactions: set[bytes] = set()
        self.received = 0

    def handle(self, data: bytes, source: tuple[str, int],
               destination: tuple[str, int]) -> tuple[bytes, tuple[str, int]] | None:
        """The response and the address it leaves from, or C{None} for silence."""
        request = decode(data)
        a, p = ADDRESSES.index(destination[0]), PORTS.index(destination[1])
        change = request.get(Attr.CHANGE_REQUEST)
        changeIp, changePort = decodeChangeRequest(change) if change else (False, False)
        if request.transactionId not in self.transactions:
            self.transactions.add(request.transactionId)
            self.log.append((destination, changeIp, changePort))
        self.received += 1
        if self.silent:
            return None
        if (changeIp or changePort) and self.changeError:
            return request.errorReply(420).encode(), destination
        if self.honourChange:
            a, p = a ^ changeIp, p ^ changePort
        reply = request.reply()
        reply.add(Attr.XOR_MAPPED_ADDRESS, request.xorMapped(*source))
        if self.rfc5780:
            reply.add(Attr.RESPONSE_ORIGIN, encodeAddress(ADDRESSES[a], PORTS[p]))
            reply.add(Attr.OTHER_ADDRESS, encodeAddress(
                ADDRESSES[1 - ADDRESSES.index(destination[0])],
                PORTS[1 - PORTS.index(destination[1])]))
        return reply.encode(), (ADDRESSES[a], PORTS[p])


class FakeNat:
    """A NAT with the given behaviours between one local socket and the server, or no NAT
    at all (C{mapping=None}).

    @ivar mappings: public port per mapping key.
    @ivar sentTo: remote addresses the inside has sent to (for filtering).
    """

    def __init__(self, mapping: Behaviour | None, filtering: Behaviour | None) -> None:
        self.mapping = mapping
        self.filtering = filtering
        self.mappings: dict[Any, int] = {}
        self.sentTo: set[tuple[str, int]] = set()

    def outbound(self, destination: tuple[str, int]) -> tuple[str, int]:
        """The source address the server sees for a datagram to C{destination}."""
        self.sentTo.add(destination)
        if self.mapping is None:
            return LOCAL
        key: Any = {
            EI: (),
            AD: destination[0],
            APD: destination,
        }[self.mapping]
        if key not in self.mappings:
            self.mappings[key] = 20000 + len(self.mappings)
        return PUBLIC_IP, self.mappings[key]

    def inboundAllowed(self, source: tuple[str, int]) -> bool:
        if self.filtering is None or self.filtering == EI:
            return True
        if self.filtering == AD:
            return source[0] in {host for host, _ in self.sentTo}
        return source in self.sentTo


class NetworkTransport(FakeDatagramTransport):
    """The client's socket: each write crosses the NAT to the server, and the answer
    comes back through it C{DELAY} seconds later."""

    def __init__(self, clock: Clock, nat: FakeNat, server: FakeServer,
                 host: str = LOCAL[0], port: int = LOCAL[1]) -> None:
        super().__init__(host, port)
        self.clock = clock
        self.nat = nat
        self.server = server
        self.protocol: StunClientProtocol | None = None

    def write(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        super().write(data, addr)
        assert addr is not None
        answer = self.server.handle(data, self.nat.outbound(addr), addr)
        if answer is not None and self.nat.inboundAllowed(answer[1]):
            assert self.protocol is not None
            self.clock.callLater(DELAY, self.protocol.datagramReceived, *answer)


class DiscoveryTests(SynchronousTestCase):
    """RFC 5780 §4.3 and §4.4 verdicts."""

    def runDiscovery(self, nat: FakeNat, server: FakeServer | None = None, *,
            host: str = LOCAL[0], **kwargs: Any) -> Deferred[NatBehaviour]:
        self.clock = Clock()
        self.server = server or FakeServer()
        self.transport = NetworkTransport(self.clock, nat, self.server, host)
        client = StunClientProtocol(reactor=self.clock)
        self.transport.protocol = client
        client.makeConnection(self.transport)  # type: ignore[arg-type]
        d = Deferred.fromCoroutine(discover(client, PRIMARY, **kwargs))
        for _ in range(1000):
            calls = self.clock.getDelayedCalls()
            if d.called or not calls:
                break
            self.clock.advance(min(c.getTime() for c in calls) - self.clock.seconds())
        self.assertEqual(client.outstanding, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        return d

    def test_everyCombination(self) -> None:
        """Each of the nine mapping and filtering combinations is told apart."""
        for mapping in Behaviour:
            for filtering in Behaviour:
                result = self.successResultOf(self.runDiscovery(FakeNat(mapping, filtering)))
                self.assertEqual(
                    (result.mapping, result.filtering), (mapping, filtering),
                    f"NAT with {mapping} mapping and {filtering} filtering",
                )
                self.assertTrue(result.natPresent)
                self.assertEqual(result.mappedAddress, (PUBLIC_IP, 20000))
                self.assertEqual(result.responseOrigin, PRIMARY)
                self.assertEqual(result.otherAddress, (ADDRESSES[1], PORTS[1]))

    def test_filteringBeforeMapping(self) -> None:
        """The filtering tests go before anything is sent to the other address, which
        would open an address-dependent filter; they ask for the two changes."""
        self.successResultOf(self.runDiscovery(FakeNat(APD, APD)))
        self.assertEqual(self.server.log, [
            (PRIMARY, False, False),
            (PRIMARY, True, True),
            (PRIMARY, False, True),
            ((ADDRESSES[1], PORTS[0]), False, False),
            ((ADDRESSES[1], PORTS[1]), False, False),
        ])

    def test_endpointIndependentStopsEarly(self) -> None:
        """With endpoint-independent mapping, mapping test III is not needed."""
        self.successResultOf(self.runDiscovery(FakeNat(EI, EI)))
        self.assertEqual(len(self.server.log), 4)

    def test_filteringTimeouts(self) -> None:
        """Unanswered filtering tests take the whole RFC 8489 schedule, no longer."""
        self.successResultOf(self.runDiscovery(FakeNat(EI, APD)))
        # Test I answered after DELAY; tests II and III give up 39.5 s after they are
        # sent; mapping test II is answered after DELAY more.
        self.assertAlmostEqual(self.clock.seconds(), DELAY + 39.5 + DELAY)
        self.assertEqual(self.server.received, 1 + 7 + 7 + 1)

    def test_noNat(self) -> None:
        """When the mapped address is the socket's own address there is no NAT."""
        result = self.successResultOf(self.runDiscovery(FakeNat(None, None)))
        self.assertFalse(result.natPresent)
        self.assertEqual(result.mappedAddress, LOCAL)
        self.assertEqual((result.mapping, result.filtering), (EI, EI))
        self.assertEqual(len(self.server.log), 3)

    def test_wildcardSocket(self) -> None:
        """A socket bound to a wildcard address does not know its own address: NAT
        presence is unknown, unless the caller gives the local address."""
        result = self.successResultOf(self.runDiscovery(FakeNat(None, None), host="0.0.0.0"))
        self.assertIsNone(result.natPresent)
        self.assertEqual(result.mapping, EI)
        result = self.successResultOf(
            self.runDiscovery(FakeNat(None, None), host="0.0.0.0", localAddress=LOCAL))
        self.assertFalse(result.natPresent)

    def test_noOtherAddress(self) -> None:
        """A server without RFC 5780 support: the mapped address only."""
        result = self.successResultOf(self.runDiscovery(FakeNat(APD, APD), FakeServer(rfc5780=False)))
        self.assertEqual(result, NatBehaviour((PUBLIC_IP, 20000), natPresent=True))
        self.assertEqual(len(self.server.log), 1)

    def test_changeIgnored(self) -> None:
        """A server answering CHANGE-REQUEST from its primary address would make every
        NAT look endpoint-independent; discovery refuses the verdict."""
        d = self.runDiscovery(FakeNat(APD, APD), FakeServer(honourChange=False))
        self.failureResultOf(d, NatDiscoveryError)

    def test_changeRefused(self) -> None:
        """A server that refuses CHANGE-REQUEST: its error is passed on."""
        d = self.runDiscovery(FakeNat(EI, EI), FakeServer(changeError=True))
        self.assertEqual(self.failureResultOf(d, StunErrorResponse).value.code, 420)

    def test_noServer(self) -> None:
        """No answer to the first request: L{StunTimeout}."""
        self.failureResultOf(self.runDiscovery(FakeNat(EI, EI), FakeServer(silent=True)), StunTimeout)

    def test_credentials(self) -> None:
        """Credentials are used for every test request."""

        class AuthServer(FakeServer):
            def handle(self, data: bytes, source: tuple[str, int],
                       destination: tuple[str, int]) -> tuple[bytes, tuple[str, int]] | None:
                request = decode(data)
                if not request.hasIntegrity():
                    return (request.errorReply(401).add(Attr.REALM, b"r").add(
                        Attr.NONCE, b"n").encode(), destination)
                answer = super().handle(data, source, destination)
                assert answer is not None
                reply = decode(answer[0])
                reply.raw = b""
                return reply.encode(longTermKey("u", "r", "p")), answer[1]

        server = AuthServer()
        credentials = LongTermCredentials("u", "p")
        result = self.successResultOf(
            self.runDiscovery(FakeNat(EI, EI), server, credentials=credentials))
        self.assertEqual(result.filtering, EI)
        # One challenge, then four signed tests.
        self.assertEqual(len(self.server.log), 4)
        self.assertEqual(len(self.transport.written), 1 + 4)
        signed = [decode(data) for data, _ in self.transport.written[1:]]
        self.assertTrue(all(m.get(Attr.USERNAME) == b"u" for m in signed))

    def test_noMappedAddress(self) -> None:
        """A Binding response without any mapped address is refused."""

        class Blank(FakeServer):
            def handle(self, data: bytes, source: tuple[str, int],
                       destination: tuple[str, int]) -> tuple[bytes, tuple[str, int]] | None:
                return decode(data).reply().encode(), destination

        self.failureResultOf(self.runDiscovery(FakeNat(EI, EI), Blank()), NatDiscoveryError)


class BindingRequestTests(SynchronousTestCase):
    """L{bindingRequest}."""

    def test_plain(self) -> None:
        """Without flags, no CHANGE-REQUEST."""
        message = bindingRequest()
        self.assertEqual((message.cls, message.attributes), (StunClass.REQUEST, []))

    def test_change(self) -> None:
        """The flags become CHANGE-REQUEST."""
        for changeIp, changePort in ((True, False), (False, True), (True, True)):
            value = bindingRequest(changeIp, changePort).get(Attr.CHANGE_REQUEST)
            assert value is not None
            self.assertEqual(decodeChangeRequest(value), (changeIp, changePort))

    def test_fresh(self) -> None:
        """Each request has its own transaction ID."""
        self.assertNotEqual(bindingRequest().transactionId, bindingRequest().transactionId)
