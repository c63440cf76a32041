# -*- test-case-name: test.unit.test_stun_client -*-
"""Tests for L{p2pnet.protocols.stun_client} and L{p2pnet.protocols.stun_transactions}."""

from __future__ import annotations

import hashlib
import hmac
import struct

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.stun import (
    PASSWORD_ALGORITHM_MD5,
    PASSWORD_ALGORITHM_SHA256,
    Attr,
    Message,
    Method,
    StunClass,
    StunDecodeError,
    decode,
    decodePasswordAlgorithms,
    encodeAddress,
    encodeXorAddress,
    longTermKey,
)
from p2pnet.protocols.stun_client import (
    LongTermCredentials,
    StunClientProtocol,
    StunErrorResponse,
    StunStreamClientProtocol,
    StunTimeout,
    addressAttribute,
    mappedAddress,
)
from p2pnet.protocols.stun_transactions import TransactionTable
from p2pnet.testing import FakeDatagramTransport

SERVER = ("127.0.0.1", 3478)
OTHER_SERVER = ("127.0.0.2", 3478)
CLIENT = ("127.0.0.1", 40000)

#: RFC 8489 §6.2.1's example: RTO 500 ms, Rc 7, Rm 16.
SEND_TIMES = [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
GIVE_UP = 39.5


def binding() -> Message:
    return Message(Method.BINDING, StunClass.REQUEST)


def success(request: Message, mapped: tuple[str, int] = ("127.0.0.9", 5555)) -> Message:
    return request.reply().add(Attr.XOR_MAPPED_ADDRESS, request.xorMapped(*mapped))


def passwordAlgorithms(*numbers: int) -> bytes:
    return b"".join(struct.pack("!HH", n, 0) for n in numbers)


class FailingTransport(FakeDatagramTransport):
    """A datagram transport whose writes fail like an unreachable network."""

    def write(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        raise OSError(101, "Network is unreachable")


class ClientMixin:
    """A L{StunClientProtocol} on a fake transport and a fake clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.transport = FakeDatagramTransport(*CLIENT)
        self.client = StunClientProtocol(reactor=self.clock)
        self.client.makeConnection(self.transport)  # type: ignore[arg-type]

    def sent(self, index: int = -1) -> Message:
        return decode(self.transport.written[index][0])

    def answer(self, response: Message, source: tuple[str, int] = SERVER, key: bytes | None = None,
               sha256: bool = False) -> None:
        self.client.datagramReceived(response.encode(key, sha256=sha256), source)


class TransactionTableTests(SynchronousTestCase):
    """The sans-IO table: its schedule is a function of C{now} alone."""

    def schedule(self, table: TransactionTable, reliable: bool = False) -> tuple[list[float], float]:
        """Run one transaction to its end; return send times and the time it gave up."""
        table.start(b"x" * 12, b"data", SERVER, 0.0, reliable=reliable)
        sends = [0.0]
        for _ in range(100):
            now = table.nextDeadline()
            assert now is not None
            retransmit, timedOut = table.expire(now)
            sends.extend(now for _ in retransmit)
            if timedOut:
                self.assertEqual(len(table), 0)
                self.assertIsNone(table.nextDeadline())
                return sends, now
        self.fail("the transaction never ended")

    def test_rfc8489Schedule(self) -> None:
        """With the defaults, requests go at 0, 0.5, 1.5 ... 31.5 s and it gives up at 39.5 s."""
        sends, end = self.schedule(TransactionTable())
        self.assertEqual(sends, SEND_TIMES)
        self.assertEqual(end, GIVE_UP)

    def test_configuredSchedule(self) -> None:
        """RTO, Rc and Rm are parameters: RTO 1 s, Rc 3, Rm 2 gives 0, 1, 3 and 5."""
        sends, end = self.schedule(TransactionTable(rto=1.0, rc=3, rm=2))
        self.assertEqual(sends, [0.0, 1.0, 3.0])
        self.assertEqual(end, 5.0)

    def test_singleRequest(self) -> None:
        """Rc 1 sends once and waits Rm * RTO."""
        sends, end = self.schedule(TransactionTable(rto=0.5, rc=1, rm=4))
        self.assertEqual(sends, [0.0])
        self.assertEqual(end, 2.0)

    def test_reliable(self) -> None:
        """Over a stream a request is sent once and given up after Ti."""
        sends, end = self.schedule(TransactionTable(ti=10.0), reliable=True)
        self.assertEqual(sends, [0.0])
        self.assertEqual(end, 10.0)

    def test_notYetDue(self) -> None:
        """Before a deadline nothing happens."""
        table = TransactionTable()
        table.start(b"a" * 12, b"data", SERVER, 100.0)
        self.assertEqual(table.expire(100.49), ([], []))
        self.assertEqual(table.nextDeadline(), 100.5)

    def test_finish(self) -> None:
        """A finished transaction leaves the table; finishing an unknown one is harmless."""
        table = TransactionTable()
        t = table.start(b"a" * 12, b"data", SERVER, 0.0, context="mine")
        self.assertIs(table.get(b"a" * 12), t)
        self.assertIs(table.finish(b"a" * 12), t)
        self.assertEqual(t.context, "mine")
        self.assertIsNone(table.finish(b"a" * 12))
        self.assertIsNone(table.nextDeadline())
        self.assertEqual(table.expire(1000.0), ([], []))

    def test_duplicate(self) -> None:
        """A transaction ID cannot be outstanding twice."""
        table = TransactionTable()
        table.start(b"a" * 12, b"data", SERVER, 0.0)
        self.assertRaises(ValueError, table.start, b"a" * 12, b"data", SERVER, 0.0)

    def test_badParameters(self) -> None:
        """Nonsense parameters are refused."""
        for kwargs in ({"rto": 0}, {"rc": 0}, {"rm": 0}, {"ti": -1}):
            self.assertRaises(ValueError, TransactionTable, **kwargs)

    def test_independentTransactions(self) -> None:
        """Each transaction keeps its own schedule."""
        table = TransactionTable()
        table.start(b"a" * 12, b"A", SERVER, 0.0)
        table.start(b"b" * 12, b"B", SERVER, 0.2)
        retransmit, _ = table.expire(0.5)
        self.assertEqual([t.data for t in retransmit], [b"A"])
        self.assertEqual(table.nextDeadline(), 0.7)
        retransmit, _ = table.expire(0.7)
        self.assertEqual([t.data for t in retransmit], [b"B"])


class RetransmissionTests(ClientMixin, SynchronousTestCase):
    """RFC 8489 §6.2.1 over UDP, timed with C{task.Clock}."""

    def test_schedule(self) -> None:
        """The request goes out at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s, identical each
        time, and the transaction fails with L{StunTimeout} at 39.5 s, not before."""
        request = binding()
        d = self.client.request(request, SERVER)
        sendTimes: list[float] = []
        seen = 0
        # Quarter-second steps are exact in binary floating point.
        for _ in range(int(GIVE_UP * 4) - 1):
            if len(self.transport.written) > seen:
                sendTimes.extend([self.clock.seconds()] * (len(self.transport.written) - seen))
                seen = len(self.transport.written)
            self.clock.advance(0.25)
        self.assertEqual(sendTimes, SEND_TIMES)
        self.assertEqual({w for w in self.transport.written}, {(request.encode(), SERVER)})
        self.assertNoResult(d)
        self.clock.advance(GIVE_UP - self.clock.seconds() - 1e-6)
        self.assertNoResult(d)
        self.clock.advance(1e-6)
        self.failureResultOf(d, StunTimeout)
        self.assertEqual(len(self.transport.written), 7)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.client.outstanding, 0)

    def test_exactTimes(self) -> None:
        """Advancing straight to each send time sends exactly one more request."""
        self.client.request(binding(), SERVER)
        for count, (before, at) in enumerate(zip(SEND_TIMES, SEND_TIMES[1:], strict=False), 1):
            self.clock.advance(at - before - 0.001)
            self.assertEqual(len(self.transport.written), count)
            self.clock.advance(0.001)
            self.assertEqual(len(self.transport.written), count + 1)

    def test_configuredRto(self) -> None:
        """The RTO, Rc and Rm given to the protocol are used."""
        client = StunClientProtocol(reactor=self.clock, rto=0.125, rc=2, rm=3)
        transport = FakeDatagramTransport(*CLIENT)
        client.makeConnection(transport)  # type: ignore[arg-type]
        d = client.request(binding(), SERVER)
        self.clock.advance(0.125 - 1e-6)
        self.assertEqual(len(transport.written), 1)
        self.clock.advance(1e-6)
        self.assertEqual(len(transport.written), 2)
        self.clock.advance(0.375 - 1e-6)
        self.assertNoResult(d)
        self.clock.advance(1e-6)
        self.failureResultOf(d, StunTimeout)
        self.assertEqual(len(transport.written), 2)

    def test_responseStopsRetransmission(self) -> None:
        """A response fires the L{Deferred}, and nothing is sent or scheduled after it."""
        request = binding()
        d = self.client.request(request, SERVER)
        self.clock.advance(0.5)
        self.answer(success(request))
        response = self.successResultOf(d)
        self.assertEqual(mappedAddress(response), ("127.0.0.9", 5555))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(len(self.transport.written), 2)

    def test_lateResponseIgnored(self) -> None:
        """A second response to an answered transaction changes nothing."""
        request = binding()
        d = self.client.request(request, SERVER)
        self.answer(success(request))
        self.answer(success(request, ("127.0.0.8", 1)))
        self.assertEqual(mappedAddress(self.successResultOf(d)), ("127.0.0.9", 5555))

    def test_cancel(self) -> None:
        """Cancelling the L{Deferred} stops retransmission."""
        d = self.client.request(binding(), SERVER)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(len(self.transport.written), 1)

    def test_socketClosed(self) -> None:
        """Closing the socket fails every outstanding request."""
        d1 = self.client.request(binding(), SERVER)
        d2 = self.client.request(binding(), OTHER_SERVER)
        self.client.doStop()
        self.failureResultOf(d1, ConnectionDone)
        self.failureResultOf(d2, ConnectionDone)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_writeFails(self) -> None:
        """A send error fails the request at once."""
        client = StunClientProtocol(reactor=self.clock)
        client.makeConnection(FailingTransport())  # type: ignore[arg-type]
        self.failureResultOf(client.request(binding(), SERVER), OSError)
        self.assertEqual(client.outstanding, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_nameRefused(self) -> None:
        """The server is given as an IP address: a name would never match the source."""
        self.assertRaises(ValueError, self.client.request, binding(), ("localhost", 3478))

    def test_duplicateTransaction(self) -> None:
        """The same message twice at once is refused, the first one unharmed."""
        request = binding()
        d1 = self.client.request(request, SERVER)
        self.failureResultOf(self.client.request(request, SERVER), ValueError)
        self.answer(success(request))
        self.successResultOf(d1)


class MatchingTests(ClientMixin, SynchronousTestCase):
    """Responses are matched by transaction ID, method and source; the rest is dropped."""

    def test_wrongSource(self) -> None:
        """A response from another address than the request went to is ignored."""
        request = binding()
        d = self.client.request(request, SERVER)
        self.answer(success(request), ("127.0.0.1", 3479))
        self.answer(success(request), OTHER_SERVER)
        self.assertNoResult(d)
        self.answer(success(request), SERVER)
        self.successResultOf(d)

    def test_anySource(self) -> None:
        """With C{anySource} (CHANGE-REQUEST) a response from elsewhere is accepted."""
        request = binding()
        d = self.client.request(request, SERVER, anySource=True)
        self.answer(success(request), ("127.0.0.2", 3479))
        self.successResultOf(d)

    def test_severalServers(self) -> None:
        """One socket talks to several servers; each answer finds its own request."""
        first, second = binding(), binding()
        d1 = self.client.request(first, SERVER)
        d2 = self.client.request(second, OTHER_SERVER)
        self.assertEqual(
            [addr for _, addr in self.transport.written], [SERVER, OTHER_SERVER]
        )
        self.answer(success(second, ("127.0.0.5", 2)), OTHER_SERVER)
        self.assertNoResult(d1)
        self.answer(success(first, ("127.0.0.5", 1)), SERVER)
        self.assertEqual(mappedAddress(self.successResultOf(d1)), ("127.0.0.5", 1))
        self.assertEqual(mappedAddress(self.successResultOf(d2)), ("127.0.0.5", 2))

    def test_ipv6SourceNormalised(self) -> None:
        """An IPv6 server written in long form matches the short form the socket reports."""
        request = binding()
        d = self.client.request(request, ("0:0:0:0:0:0:0:1", 3478))
        self.assertEqual(self.transport.written[0][1], ("::1", 3478))
        self.answer(success(request), ("::1", 3478))
        self.successResultOf(d)

    def test_unknownTransaction(self) -> None:
        """A response to no outstanding request is ignored."""
        d = self.client.request(binding(), SERVER)
        self.answer(success(binding()))
        self.assertNoResult(d)

    def test_wrongMethod(self) -> None:
        """A response of another method with the same transaction ID is ignored."""
        request = binding()
        d = self.client.request(request, SERVER)
        self.answer(Message(Method.ALLOCATE, StunClass.SUCCESS, request.transactionId))
        self.assertNoResult(d)

    def test_requestsAndIndicationsIgnored(self) -> None:
        """Only responses complete a transaction."""
        request = binding()
        d = self.client.request(request, SERVER)
        self.answer(Message(Method.BINDING, StunClass.REQUEST, request.transactionId))
        self.answer(Message(Method.BINDING, StunClass.INDICATION, request.transactionId))
        self.assertNoResult(d)

    def test_garbageIgnored(self) -> None:
        """Datagrams that are not STUN, or not well-formed, are dropped silently."""
        request = binding()
        d = self.client.request(request, SERVER)
        good = success(request).encode(fingerprint=True)
        badFingerprint = good[:-1] + bytes([good[-1] ^ 1])
        for junk in (
            b"",
            b"\xff" * 40,
            good[:19],
            good[:-4],
            good + b"\0\0\0\0",
            badFingerprint,
            b"\x40\x00\x00\x04abcd",  # ChannelData
        ):
            self.client.datagramReceived(junk, SERVER)
        self.client.datagramReceived(good, ("not an address", 1))
        self.assertNoResult(d)
        self.client.datagramReceived(good, SERVER)
        self.successResultOf(d)

    def test_errorResponse(self) -> None:
        """An error response fails with L{StunErrorResponse} carrying code and reason."""
        request = binding()
        d = self.client.request(request, SERVER)
        self.answer(request.errorReply(420, "Unknown Attribute").add(
            Attr.UNKNOWN_ATTRIBUTES, b"\x00\x03"))
        error = self.failureResultOf(d, StunErrorResponse).value
        self.assertEqual((error.code, error.reason), (420, "Unknown Attribute"))
        self.assertEqual(error.response.get(Attr.UNKNOWN_ATTRIBUTES), b"\x00\x03")
        self.assertEqual(str(error), "420 Unknown Attribute")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_errorWithoutCode(self) -> None:
        """An error response without a (valid) ERROR-CODE is malformed: dropped."""
        request = binding()
        d = self.client.request(request, SERVER)
        self.answer(request.reply(StunClass.ERROR))
        self.answer(request.reply(StunClass.ERROR).add(Attr.ERROR_CODE, b"\0\0"))
        self.assertNoResult(d)

    def test_fingerprint(self) -> None:
        """C{fingerprint=True} adds FINGERPRINT (checked by the decoder) last."""
        self.client.request(binding(), SERVER, fingerprint=True)
        self.assertEqual(self.sent().attributes[-1][0], Attr.FINGERPRINT)


class ShortTermKeyTests(ClientMixin, SynchronousTestCase):
    """A request signed with a key accepts only responses that verify with it."""

    key = b"short-term password"

    def test_signed(self) -> None:
        """The request carries MESSAGE-INTEGRITY (or -SHA256) made with the key."""
        self.client.request(binding(), SERVER, self.key)
        self.client.request(binding(), SERVER, self.key, sha256=True)
        first, second = self.sent(0), self.sent(1)
        self.assertTrue(first.get(Attr.MESSAGE_INTEGRITY))
        self.assertTrue(first.checkIntegrity(self.key))
        self.assertTrue(second.get(Attr.MESSAGE_INTEGRITY_SHA256))
        self.assertTrue(second.checkIntegrity(self.key))

    def test_verifiedResponse(self) -> None:
        """A response signed with the key is accepted."""
        request = binding()
        d = self.client.request(request, SERVER, self.key)
        self.answer(success(request), key=self.key)
        self.successResultOf(d)

    def test_badIntegrity(self) -> None:
        """A response signed with another key, or unsigned, is discarded; retransmission
        goes on until a good one comes."""
        request = binding()
        d = self.client.request(request, SERVER, self.key)
        self.answer(success(request), key=b"wrong")
        self.answer(success(request))
        self.assertNoResult(d)
        self.clock.advance(0.5)
        self.assertEqual(len(self.transport.written), 2)
        self.answer(success(request), key=self.key, sha256=True)
        self.successResultOf(d)

    def test_unsignedError(self) -> None:
        """An error response may come unsigned (the server may not know the key)."""
        request = binding()
        d = self.client.request(request, SERVER, self.key)
        self.answer(request.errorReply(400))
        self.assertEqual(self.failureResultOf(d, StunErrorResponse).value.code, 400)


# -- long-term credentials -------------------------------------------------------------------


class FakeAuthServer:
    """A long-term-credential STUN server made from the codec, for one user.

    @ivar received: every request it was given, decoded.
    @ivar nonce: the nonce it currently accepts.
    @ivar algorithms: the PASSWORD-ALGORITHMS value it offers, or C{None}.
    """

    realm = "example.org"

    def __init__(self, username: str = "alice", password: str = "secret",
                 algorithms: bytes | None = None) -> None:
        self.username = username
        self.password = password
        self.algorithms = algorithms
        self.nonce = b"nonce-1"
        self.received: list[Message] = []
        self.keys: list[bytes] = []

    def challenge(self, request: Message, code: int = 401) -> Message:
        reply = request.errorReply(code)
        reply.add(Attr.REALM, self.realm.encode()).add(Attr.NONCE, self.nonce)
        if self.algorithms is not None:
            reply.add(Attr.PASSWORD_ALGORITHMS, self.algorithms)
        return reply

    def handle(self, data: bytes) -> bytes:
        request = decode(data)
        self.received.append(request)
        if not request.hasIntegrity():
            return self.challenge(request).encode()
        if request.get(Attr.NONCE) != self.nonce:
            return self.challenge(request, 438).encode()
        algorithm = PASSWORD_ALGORITHM_MD5
        chosen = request.get(Attr.PASSWORD_ALGORITHM)
        if chosen is not None:
            algorithm = struct.unpack("!H", chosen[:2])[0]
        if request.get(Attr.PASSWORD_ALGORITHMS) != self.algorithms:
            return request.errorReply(400).encode()
        if request.get(Attr.USERNAME) != self.username.encode():
            return self.challenge(request).encode()
        key = longTermKey(self.username, self.realm, self.password, algorithm)
        if not request.checkIntegrity(key):
            return self.challenge(request).encode()
        self.keys.append(key)
        sha256 = request.get(Attr.MESSAGE_INTEGRITY_SHA256) is not None
        return success(request).encode(key, sha256=sha256)


class LongTermCredentialTests(ClientMixin, SynchronousTestCase):
    """RFC 8489 §9.2: 401 and 438 challenges answered by the client."""

    def exchange(self, server: FakeAuthServer, credentials: LongTermCredentials,
                 request: Message | None = None) -> Deferred[Message]:
        """Run one request against C{server}, delivering each answer at once."""
        start = len(self.transport.written)
        d = self.client.request(request or binding(), SERVER, credentials=credentials)
        for _ in range(10):
            if start >= len(self.transport.written):
                break
            data, _ = self.transport.written[start]
            start += 1
            self.client.datagramReceived(server.handle(data), SERVER)
        return d

    def test_challengeAnswered(self) -> None:
        """After a 401 the request is sent again, as a new transaction, with USERNAME,
        REALM, NONCE and MESSAGE-INTEGRITY made with the MD5 key."""
        server = FakeAuthServer()
        credentials = LongTermCredentials("alice", "secret")
        request = binding().add(Attr.SOFTWARE, b"test")
        response = self.successResultOf(self.exchange(server, credentials, request))
        self.assertEqual(mappedAddress(response), ("127.0.0.9", 5555))
        first, second = server.received
        self.assertEqual(first.transactionId, request.transactionId)
        self.assertFalse(first.hasIntegrity())
        self.assertNotEqual(second.transactionId, request.transactionId)
        self.assertEqual(
            [t for t, _ in second.attributes],
            [Attr.SOFTWARE, Attr.USERNAME, Attr.REALM, Attr.NONCE, Attr.MESSAGE_INTEGRITY],
        )
        self.assertEqual(second.get(Attr.USERNAME), b"alice")
        self.assertEqual(second.get(Attr.REALM), b"example.org")
        self.assertEqual(second.get(Attr.NONCE), b"nonce-1")
        self.assertTrue(second.checkIntegrity(longTermKey("alice", "example.org", "secret")))
        self.assertEqual(request.attributes, [(Attr.SOFTWARE, b"test")])
        self.assertEqual(credentials.realm, "example.org")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sha256Offered(self) -> None:
        """When the server offers SHA-256 in PASSWORD-ALGORITHMS, the retry echoes the
        list, names SHA-256 in PASSWORD-ALGORITHM, and carries MESSAGE-INTEGRITY then
        MESSAGE-INTEGRITY-SHA256, both made with the SHA-256 key."""
        offered = passwordAlgorithms(PASSWORD_ALGORITHM_MD5, PASSWORD_ALGORITHM_SHA256)
        server = FakeAuthServer(algorithms=offered)
        credentials = LongTermCredentials("alice", "secret")
        self.successResultOf(self.exchange(server, credentials))
        signed = server.received[1]
        key = longTermKey("alice", "example.org", "secret", PASSWORD_ALGORITHM_SHA256)
        self.assertEqual(server.keys, [key])
        self.assertEqual(
            [t for t, _ in signed.attributes][-4:],
            [Attr.PASSWORD_ALGORITHMS, Attr.PASSWORD_ALGORITHM, Attr.MESSAGE_INTEGRITY,
             Attr.MESSAGE_INTEGRITY_SHA256],
        )
        self.assertEqual(signed.get(Attr.PASSWORD_ALGORITHMS), offered)
        self.assertEqual(signed.get(Attr.PASSWORD_ALGORITHM), b"\x00\x02\x00\x00")
        # MESSAGE-INTEGRITY covers the attributes before it, the length counting it.
        before = [(t, v) for t, v in signed.attributes
                  if t not in (Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256)]
        expected = Message(signed.method, signed.cls, signed.transactionId, before).encode(key)
        self.assertEqual(signed.get(Attr.MESSAGE_INTEGRITY), expected[-20:])
        # MESSAGE-INTEGRITY-SHA256 covers everything up to it, MESSAGE-INTEGRITY too.
        head = signed.raw[:2] + struct.pack("!H", len(signed.raw) - 20) + signed.raw[4:-36]
        self.assertEqual(
            signed.get(Attr.MESSAGE_INTEGRITY_SHA256),
            hmac.new(key, head, hashlib.sha256).digest(),
        )

    def test_sha256WithFingerprint(self) -> None:
        """FINGERPRINT goes after both integrity attributes and checks out."""
        server = FakeAuthServer(algorithms=passwordAlgorithms(PASSWORD_ALGORITHM_SHA256))
        credentials = LongTermCredentials("alice", "secret")
        d = self.client.request(binding(), SERVER, credentials=credentials, fingerprint=True)
        self.client.datagramReceived(server.handle(self.transport.written[0][0]), SERVER)
        signed = decode(self.transport.written[1][0])  # decoding checks FINGERPRINT
        self.assertEqual([t for t, _ in signed.attributes][-3:], [
            Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256, Attr.FINGERPRINT])
        self.client.datagramReceived(server.handle(self.transport.written[1][0]), SERVER)
        self.successResultOf(d)

    def test_md5Only(self) -> None:
        """PASSWORD-ALGORITHMS offering only MD5 is echoed, with PASSWORD-ALGORITHM MD5 and
        MESSAGE-INTEGRITY alone."""
        server = FakeAuthServer(algorithms=passwordAlgorithms(PASSWORD_ALGORITHM_MD5))
        self.successResultOf(self.exchange(server, LongTermCredentials("alice", "secret")))
        signed = server.received[1]
        self.assertEqual(signed.get(Attr.PASSWORD_ALGORITHM), b"\x00\x01\x00\x00")
        self.assertIsNone(signed.get(Attr.MESSAGE_INTEGRITY_SHA256))

    def test_unsupportedAlgorithms(self) -> None:
        """No algorithm in common: the 401 is passed on."""
        server = FakeAuthServer(algorithms=passwordAlgorithms(0x7777))
        d = self.exchange(server, LongTermCredentials("alice", "secret"))
        self.assertEqual(self.failureResultOf(d, StunErrorResponse).value.code, 401)
        self.assertEqual(len(server.received), 1)

    def test_malformedAlgorithms(self) -> None:
        """A PASSWORD-ALGORITHMS that does not parse: the 401 is passed on."""
        server = FakeAuthServer(algorithms=b"\x00\x02\x00\x08")
        d = self.exchange(server, LongTermCredentials("alice", "secret"))
        self.assertEqual(self.failureResultOf(d, StunErrorResponse).value.code, 401)

    def test_nextRequestSignedAtOnce(self) -> None:
        """The realm and nonce are remembered: the next request needs no challenge."""
        server = FakeAuthServer()
        credentials = LongTermCredentials("alice", "secret")
        self.successResultOf(self.exchange(server, credentials))
        self.successResultOf(self.exchange(server, credentials))
        self.assertEqual(len(server.received), 3)
        self.assertTrue(server.received[2].hasIntegrity())

    def test_staleNonce(self) -> None:
        """A 438 is answered with the new nonce."""
        server = FakeAuthServer()
        credentials = LongTermCredentials("alice", "secret")
        self.successResultOf(self.exchange(server, credentials))
        server.nonce = b"nonce-2"
        self.successResultOf(self.exchange(server, credentials))
        stale, fresh = server.received[2:]
        self.assertEqual(stale.get(Attr.NONCE), b"nonce-1")
        self.assertEqual(fresh.get(Attr.NONCE), b"nonce-2")
        self.assertTrue(fresh.checkIntegrity(longTermKey("alice", "example.org", "secret")))
        self.assertEqual(credentials.nonce, b"nonce-2")

    def test_wrongPassword(self) -> None:
        """A 401 to credentials built from that very realm and nonce fails the request."""
        server = FakeAuthServer()
        d = self.exchange(server, LongTermCredentials("alice", "wrong"))
        error = self.failureResultOf(d, StunErrorResponse).value
        self.assertEqual(error.code, 401)
        self.assertEqual(len(server.received), 2)

    def test_endlessStaleNonce(self) -> None:
        """A server that keeps saying 438 gets a bounded number of retries."""
        server = FakeAuthServer()
        credentials = LongTermCredentials("alice", "secret")
        self.successResultOf(self.exchange(server, credentials))

        class Stale(FakeAuthServer):
            def handle(self, data: bytes) -> bytes:
                request = decode(data)
                self.received.append(request)
                self.nonce += b"!"
                return self.challenge(request, 438).encode()

        stale = Stale()
        d = self.exchange(stale, credentials)
        self.assertEqual(self.failureResultOf(d, StunErrorResponse).value.code, 438)
        self.assertEqual(len(stale.received), LongTermCredentials.MAX_CHALLENGES + 1)

    def test_challengeWithoutNonce(self) -> None:
        """A 401 without REALM and NONCE is no challenge: passed on."""
        request = binding()
        d = self.client.request(request, SERVER, credentials=LongTermCredentials("a", "b"))
        self.answer(request.errorReply(401))
        self.assertEqual(self.failureResultOf(d, StunErrorResponse).value.code, 401)
        self.assertEqual(len(self.transport.written), 1)

    def test_otherErrorsPassedOn(self) -> None:
        """Errors other than 401 and 438 are not retried."""
        request = binding()
        d = self.client.request(request, SERVER, credentials=LongTermCredentials("a", "b"))
        self.answer(request.errorReply(403))
        self.assertEqual(self.failureResultOf(d, StunErrorResponse).value.code, 403)

    def test_staleNonceBeforeAnyRealm(self) -> None:
        """A 438 with no realm known from it or before cannot be answered."""
        request = binding()
        d = self.client.request(request, SERVER, credentials=LongTermCredentials("a", "b"))
        self.answer(request.errorReply(438).add(Attr.NONCE, b"n"))
        self.assertEqual(self.failureResultOf(d, StunErrorResponse).value.code, 438)

    def test_responseMustVerify(self) -> None:
        """The success response to a signed request must carry valid integrity."""
        server = FakeAuthServer()
        credentials = LongTermCredentials("alice", "secret")
        d = self.client.request(binding(), SERVER, credentials=credentials)
        self.client.datagramReceived(server.handle(self.transport.written[0][0]), SERVER)
        signed = decode(self.transport.written[1][0])
        self.answer(success(signed))
        self.answer(success(signed), key=b"forged")
        self.assertNoResult(d)
        self.answer(success(signed), key=longTermKey("alice", "example.org", "secret"))
        self.successResultOf(d)

    def test_timeoutPassedOn(self) -> None:
        """A timeout on the retry fails the request with L{StunTimeout}."""
        server = FakeAuthServer()
        d = self.client.request(binding(), SERVER, credentials=LongTermCredentials("a", "b"))
        self.client.datagramReceived(server.handle(self.transport.written[0][0]), SERVER)
        self.clock.advance(GIVE_UP)
        self.failureResultOf(d, StunTimeout)

    def test_cancelDuringRetry(self) -> None:
        """Cancelling while the signed retry is outstanding stops it."""
        server = FakeAuthServer()
        d = self.client.request(binding(), SERVER, credentials=LongTermCredentials("a", "b"))
        self.client.datagramReceived(server.handle(self.transport.written[0][0]), SERVER)
        self.assertEqual(self.client.outstanding, 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.client.outstanding, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class HelperTests(SynchronousTestCase):
    """Reading addresses and PASSWORD-ALGORITHMS from responses."""

    def test_mappedAddressPrefersXor(self) -> None:
        """XOR-MAPPED-ADDRESS wins over MAPPED-ADDRESS; MAPPED-ADDRESS is the fallback."""
        m = Message(Method.BINDING, StunClass.SUCCESS)
        self.assertIsNone(mappedAddress(m))
        m.add(Attr.MAPPED_ADDRESS, encodeAddress("127.0.0.1", 1))
        self.assertEqual(mappedAddress(m), ("127.0.0.1", 1))
        m.add(Attr.XOR_MAPPED_ADDRESS, encodeXorAddress("::1", 2, m.transactionId))
        self.assertEqual(mappedAddress(m), ("::1", 2))

    def test_addressAttribute(self) -> None:
        """Plain address attributes decode; malformed ones raise L{StunDecodeError}."""
        m = Message(Method.BINDING, StunClass.SUCCESS)
        m.add(Attr.OTHER_ADDRESS, encodeAddress("127.0.0.2", 3479))
        m.add(Attr.RESPONSE_ORIGIN, b"\0\1")
        self.assertEqual(addressAttribute(m, Attr.OTHER_ADDRESS), ("127.0.0.2", 3479))
        self.assertIsNone(addressAttribute(m, Attr.ALTERNATE_SERVER))
        self.assertRaises(StunDecodeError, addressAttribute, m, Attr.RESPONSE_ORIGIN)

    def test_passwordAlgorithms(self) -> None:
        """Entries with parameters are padded to 4 bytes; truncation is an error."""
        value = struct.pack("!HH", 2, 0) + struct.pack("!HH", 9, 3) + b"abc\0" + struct.pack(
            "!HH", 1, 0)
        self.assertEqual(decodePasswordAlgorithms(value), [(2, b""), (9, b"abc"), (1, b"")])
        self.assertEqual(decodePasswordAlgorithms(b""), [])
        self.assertRaises(StunDecodeError, decodePasswordAlgorithms, b"\0\2\0")
        self.assertRaises(StunDecodeError, decodePasswordAlgorithms, b"\0\2\0\4ab")

    def test_errorResponseStr(self) -> None:
        """The exception reads as code and reason."""
        m = Message(Method.BINDING, StunClass.ERROR)
        self.assertEqual(str(StunErrorResponse(300, "Try Alternate", m)), "300 Try Alternate")
        self.assertEqual(str(StunErrorResponse(500, "", m)), "500")


# -- TCP and TLS ---------------------------------------------------------------------------


class StreamClientTests(SynchronousTestCase):
    """L{StunStreamClientProtocol}: framing, pipelining, Ti."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.transport = StringTransport()
        self.client = StunStreamClientProtocol(reactor=self.clock)
        self.client.makeConnection(self.transport)

    def sentMessages(self) -> list[Message]:
        from p2pnet.codecs.stun import StreamDecoder

        return [decode(f) for f in StreamDecoder().feed(self.transport.value())]

    def test_requestAndResponse(self) -> None:
        """A request is written once; a response fed a byte at a time answers it."""
        request = binding()
        d = self.client.request(request)
        self.assertEqual(self.transport.value(), request.encode())
        data = success(request).encode()
        for i in range(len(data)):
            self.assertNoResult(d)
            self.client.dataReceived(data[i : i + 1])
        self.assertEqual(mappedAddress(self.successResultOf(d)), ("127.0.0.9", 5555))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_pipelined(self) -> None:
        """Several requests are outstanding at once and answered in any order, even two
        in one segment."""
        requests = [binding() for _ in range(3)]
        ds = [self.client.request(r) for r in requests]
        self.assertEqual(len(self.sentMessages()), 3)
        self.assertEqual(self.client.outstanding, 3)
        self.client.dataReceived(
            success(requests[2], ("127.0.0.3", 3)).encode()
            + success(requests[0], ("127.0.0.1", 1)).encode()
        )
        self.assertEqual(mappedAddress(self.successResultOf(ds[2])), ("127.0.0.3", 3))
        self.assertEqual(mappedAddress(self.successResultOf(ds[0])), ("127.0.0.1", 1))
        self.assertNoResult(ds[1])
        self.client.dataReceived(requests[1].errorReply(400).encode())
        self.assertEqual(self.failureResultOf(ds[1], StunErrorResponse).value.code, 400)

    def test_timeout(self) -> None:
        """No retransmission over a stream; the request gives up after Ti = 39.5 s."""
        d = self.client.request(binding())
        self.clock.advance(GIVE_UP - 0.001)
        self.assertNoResult(d)
        self.assertEqual(len(self.sentMessages()), 1)
        self.clock.advance(0.001)
        self.failureResultOf(d, StunTimeout)

    def test_configuredTimeout(self) -> None:
        """Ti is a parameter."""
        client = StunStreamClientProtocol(reactor=self.clock, ti=2.0)
        client.makeConnection(StringTransport())
        d = client.request(binding())
        self.clock.advance(2.0)
        self.failureResultOf(d, StunTimeout)

    def test_malformedMessageSkipped(self) -> None:
        """A frame that does not decode is skipped; the stream stays in step."""
        request = binding()
        d = self.client.request(request)
        good = success(request).encode(fingerprint=True)
        self.client.dataReceived(good[:-1] + bytes([good[-1] ^ 1]))
        self.assertNoResult(d)
        self.client.dataReceived(good)
        self.successResultOf(d)

    def test_streamGarbage(self) -> None:
        """A stream that is not STUN is closed and outstanding requests fail with the
        decode error."""
        d = self.client.request(binding())
        self.client.dataReceived(b"\xff" * 8)
        self.assertTrue(self.transport.disconnecting)
        self.client.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, StunDecodeError)

    def test_connectionLost(self) -> None:
        """Losing the connection fails outstanding and later requests."""
        d = self.client.request(binding())
        self.client.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(d, ConnectionLost)
        self.failureResultOf(self.client.request(binding()), ConnectionLost)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_close(self) -> None:
        """C{close} loses the connection and fires once it is lost."""
        closed = self.client.close()
        self.assertTrue(self.transport.disconnecting)
        self.assertNoResult(closed)
        self.client.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(closed)
        self.successResultOf(self.client.close())

    def test_credentials(self) -> None:
        """Long-term credentials work over a stream as over UDP."""
        server = FakeAuthServer()
        d = self.client.request(binding(), credentials=LongTermCredentials("alice", "secret"))
        for _ in range(3):
            frames = self.sentMessages()
            if len(server.received) == len(frames):
                break
            self.client.dataReceived(server.handle(frames[len(server.received)].raw))
        self.successResultOf(d)
        self.assertEqual(len(server.received), 2)

    def test_signedWithKey(self) -> None:
        """A request signed with a key needs a response that verifies."""
        request = binding()
        d = self.client.request(request, b"k", sha256=True)
        self.assertTrue(self.sentMessages()[0].checkIntegrity(b"k"))
        self.client.dataReceived(success(request).encode())
        self.assertNoResult(d)
        self.client.dataReceived(success(request).encode(b"k"))
        self.successResultOf(d)
