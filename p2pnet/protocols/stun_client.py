# -*- test-case-name: test.unit.test_stun_client -*-
"""STUN clients for Twisted: UDP with retransmission, TCP/TLS with framing, and long-term
credentials (RFC 8489 §6.2, §6.3 and §9.2).

L{StunClientProtocol} is a C{DatagramProtocol}: one socket, any number of outstanding
requests to any number of servers, each matched by transaction ID and source address.
L{StunStreamClientProtocol} does the same over one TCP or TLS connection (requests may be
pipelined); L{connectStream} opens one. Both have the same C{request} method; giving it a
L{LongTermCredentials} makes it answer a 401/438 challenge by itself, which is what the
TURN client builds on.

Time comes from the injected reactor (C{reactor} parameter, the global one by default),
so tests drive every timer with C{twisted.internet.task.Clock}::

    protocol = StunClientProtocol(reactor=clock)
    reactor.listenUDP(0, protocol, interface="127.0.0.1")
    response = await protocol.request(Message(Method.BINDING, StunClass.REQUEST),
                                      ("127.0.0.1", 3478))
    print(mappedAddress(response))
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IOpenSSLClientConnectionCreator, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.python.failure import Failure

from p2pnet.codecs.stun import (
    PASSWORD_ALGORITHM_MD5,
    PASSWORD_ALGORITHM_SHA256,
    Attr,
    Message,
    StreamDecoder,
    StunClass,
    StunDecodeError,
    decode,
    decodeAddress,
    decodeErrorCode,
    decodePasswordAlgorithms,
    decodeXorAddress,
    isStun,
    longTermKey,
    newTransactionId,
)
from p2pnet.protocols.stun_transactions import (
    DEFAULT_RC,
    DEFAULT_RM,
    DEFAULT_RTO,
    DEFAULT_TI,
    Transaction,
    TransactionTable,
)

__all__ = [
    "LongTermCredentials",
    "StunClientProtocol",
    "StunErrorResponse",
    "StunStreamClientProtocol",
    "StunTimeout",
    "addressAttribute",
    "connectStream",
    "mappedAddress",
    "normalAddress",
]

Address = tuple[str, int]


class StunTimeout(Exception):
    """No response came before the transaction gave up (RFC 8489 §6.2)."""


@dataclass(eq=False)
class StunErrorResponse(Exception):
    """The server answered with an error response (RFC 8489 §6.3.4).

    @ivar code: the ERROR-CODE number (300-699).
    @ivar reason: the reason phrase the server sent.
    @ivar response: the whole error response, for REALM, NONCE, ALTERNATE-SERVER...
    """

    code: int
    reason: str
    response: Message

    def __str__(self) -> str:
        return f"{self.code} {self.reason}".rstrip()


# -- reading responses -----------------------------------------------------------------------


def mappedAddress(message: Message) -> Address | None:
    """The reflexive address in a Binding response: XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS.

    @raise StunDecodeError: when the attribute is present but malformed.
    """
    value = message.get(Attr.XOR_MAPPED_ADDRESS)
    if value is not None:
        return decodeXorAddress(value, message.transactionId)
    return addressAttribute(message, Attr.MAPPED_ADDRESS)


def addressAttribute(message: Message, attrType: int) -> Address | None:
    """A plain (not XOR'd) address attribute such as RESPONSE-ORIGIN or OTHER-ADDRESS.

    @raise StunDecodeError: when the attribute is present but malformed.
    """
    value = message.get(attrType)
    return None if value is None else decodeAddress(value)


def _verified(response: Message, key: bytes | None) -> bool:
    """Whether a response to a request signed with C{key} may be accepted.

    RFC 8489 §9.1.4 and §9.2.5: a response whose integrity attribute does not
    verify is discarded as if never received, and so is a success response without one.
    Error responses may come unsigned (a 401 or 438 cannot be signed).
    """
    if key is None:
        return True
    if response.hasIntegrity():
        return response.checkIntegrity(key)
    return response.cls == StunClass.ERROR


# -- long-term credentials -------------------------------------------------------------------

#: Send a signed request: C{(message, encoded bytes, key or None) -> Deferred[response]}.
Sender = Callable[[Message, bytes, "bytes | None"], Deferred[Message]]


class LongTermCredentials:
    """A user's long-term credentials and what the server last told about them.

    One object is meant to be shared by every request to one server: after the first
    challenge it remembers the REALM, NONCE and password algorithm, so later requests
    (a TURN Refresh, CreatePermission...) are signed at once (RFC 8489 §9.2.3.2),
    and a 438 Stale Nonce only costs one retry.

    @ivar username: the USERNAME sent.
    @ivar realm: the REALM from the last challenge, or C{None} before the first.
    @ivar nonce: the NONCE from the last challenge or 438, or C{None}.
    @ivar algorithm: PASSWORD-ALGORITHM number in use (MD5 unless SHA-256 was offered).
    @ivar passwordAlgorithms: the PASSWORD-ALGORITHMS value the server sent, echoed back.
    """

    #: Challenges answered for one request before its error is passed on.
    MAX_CHALLENGES = 2

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._password = password
        self.realm: str | None = None
        self.nonce: bytes | None = None
        self.algorithm = PASSWORD_ALGORITHM_MD5
        self.passwordAlgorithms: bytes | None = None
        self._key: bytes | None = None

    @property
    def key(self) -> bytes | None:
        """The HMAC key for the current realm and algorithm, or C{None} before a challenge."""
        if self._key is None and self.realm is not None:
            self._key = longTermKey(self.username, self.realm, self._password, self.algorithm)
        return self._key

    def sign(self, message: Message, fingerprint: bool = False) -> tuple[bytes, bytes | None]:
        """Encode C{message}, adding the credential attributes once a challenge is known.

        The attributes are appended to C{message} itself, so call this on a fresh copy.

        @return: the bytes to send and the key the response must verify with (C{None}
            when the request went unsigned).
        """
        key = self.key
        if key is None or self.nonce is None or self.realm is None:
            return message.encode(fingerprint=fingerprint), None
        # RFC 8489 §9.2.3.2: USERNAME, REALM, NONCE, and PASSWORD-ALGORITHMS with
        # PASSWORD-ALGORITHM when the server offered algorithms, then the integrity.
        message.add(Attr.USERNAME, self.username.encode())
        message.add(Attr.REALM, self.realm.encode())
        message.add(Attr.NONCE, self.nonce)
        if self.passwordAlgorithms is not None:
            message.add(Attr.PASSWORD_ALGORITHMS, self.passwordAlgorithms)
            message.add(Attr.PASSWORD_ALGORITHM, struct.pack("!HH", self.algorithm, 0))
        if self.algorithm == PASSWORD_ALGORITHM_SHA256:
            return message.encode(key, both=True, fingerprint=fingerprint), key
        return message.encode(key, fingerprint=fingerprint), key

    def challenged(self, error: StunErrorResponse, signed: bool) -> bool:
        """Learn from an error response; return whether the request should be sent again.

        @param signed: whether the request that failed carried credentials.
        """
        response = error.response
        realm = response.get(Attr.REALM)
        nonce = response.get(Attr.NONCE)
        if error.code == 401:
            # RFC 8489 §9.2.5: a 401 with REALM and NONCE is a challenge; one to
            # credentials built from the very same realm and nonce rejects them.
            if realm is None or nonce is None:
                return False
            if signed and realm.decode("utf-8", "replace") == self.realm and nonce == self.nonce:
                return False
            offered = response.get(Attr.PASSWORD_ALGORITHMS)
            algorithm = PASSWORD_ALGORITHM_MD5
            if offered is not None:
                try:
                    numbers = [n for n, _ in decodePasswordAlgorithms(offered)]
                except StunDecodeError:
                    return False
                if PASSWORD_ALGORITHM_SHA256 in numbers:
                    algorithm = PASSWORD_ALGORITHM_SHA256
                elif PASSWORD_ALGORITHM_MD5 not in numbers:
                    return False
            self._update(realm.decode("utf-8", "replace"), nonce, algorithm, offered)
            return True
        if error.code == 438 and nonce is not None:
            # RFC 8489 §9.2.5: 438 Stale Nonce: retry with the NONCE (and REALM)
            # of this response.
            newRealm = realm.decode("utf-8", "replace") if realm is not None else self.realm
            if newRealm is None:
                return False
            self._update(newRealm, nonce, self.algorithm, self.passwordAlgorithms)
            return True
        return False

    def _update(
        self, realm: str, nonce: bytes, algorithm: int, passwordAlgorithms: bytes | None
    ) -> None:
        if (realm, algorithm) != (self.realm, self.algorithm):
            self._key = None
        self.realm = realm
        self.nonce = nonce
        self.algorithm = algorithm
        self.passwordAlgorithms = passwordAlgorithms

    def request(self, send: Sender, message: Message, fingerprint: bool = False) -> Deferred[Message]:
        """Send C{message} through C{send}, answering 401 and 438 challenges.

        Each attempt is a new transaction: the first keeps C{message}'s transaction ID,
        a retry gets a new one. C{message} itself is not changed.

        @return: a L{Deferred} firing with the success response, or failing with the
            last L{StunErrorResponse}, L{StunTimeout}...
        """
        return Deferred.fromCoroutine(self._request(send, message, fingerprint))

    async def _request(self, send: Sender, message: Message, fingerprint: bool) -> Message:
        transactionId = message.transactionId
        challenges = 0
        while True:
            copy = Message(
                message.method, message.cls, transactionId, list(message.attributes), message.cookie
            )
            data, key = self.sign(copy, fingerprint)
            try:
                return await send(copy, data, key)
            except StunErrorResponse as e:
                challenges += 1
                if challenges > self.MAX_CHALLENGES or not self.challenged(e, key is not None):
                    raise
            transactionId = newTransactionId()


# -- the shared transaction machinery ---------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Pending:
    deferred: Deferred[Message]
    method: int
    key: bytes | None
    anySource: bool


def normalAddress(addr: tuple[Any, ...]) -> Address:
    """C{(ip, port)} with the IP address in its normal written form.

    @raise ValueError: when the host is not an IP address.
    """
    return str(ipaddress.ip_address(str(addr[0]).split("%", 1)[0])), int(addr[1])


class _TransactionOwner:
    """Runs a L{TransactionTable} on a reactor: one timer for the earliest deadline."""

    _table: TransactionTable
    _reactor: IReactorTime
    _timer: IDelayedCall | None = None

    def _initTransactions(self, table: TransactionTable, reactor: IReactorTime | None) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = cast(IReactorTime, globalReactor)
        self._table = table
        self._reactor = reactor
        self._timer = None

    def _sendData(self, data: bytes, destination: Address | None) -> None:
        raise NotImplementedError

    def _begin(
        self,
        message: Message,
        data: bytes,
        key: bytes | None,
        destination: Address | None,
        *,
        reliable: bool,
        anySource: bool = False,
    ) -> Deferred[Message]:
        transactionId = message.transactionId

        def cancel(d: Deferred[Message]) -> None:
            self._table.finish(transactionId)
            self._reschedule()

        deferred: Deferred[Message] = Deferred(cancel)
        pending = _Pending(deferred, message.method, key, anySource)
        try:
            self._table.start(
                transactionId,
                data,
                destination,
                self._reactor.seconds(),
                reliable=reliable,
                context=pending,
            )
        except ValueError as e:
            deferred.errback(e)
            return deferred
        try:
            self._sendData(data, destination)
        except OSError:
            self._table.finish(transactionId)
            deferred.errback()
            return deferred
        self._reschedule()
        return deferred

    def _reschedule(self) -> None:
        deadline = self._table.nextDeadline()
        timer = self._timer
        if timer is not None and timer.active():
            if deadline is not None and timer.getTime() <= deadline:
                return
            timer.cancel()
        self._timer = None
        if deadline is not None:
            delay = max(0.0, deadline - self._reactor.seconds())
            self._timer = self._reactor.callLater(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        retransmit, timedOut = self._table.expire(self._reactor.seconds())
        for t in retransmit:
            try:
                self._sendData(t.data, t.destination)
            except OSError:
                self._table.finish(t.transactionId)
                t.context.deferred.errback()
        for t in timedOut:
            t.context.deferred.errback(
                StunTimeout(f"no response after {t.sent} request(s)")
            )
        self._reschedule()

    def _messageReceived(self, message: Message, source: Address | None) -> None:
        """Hand a response to its transaction; anything else is ignored."""
        if message.cls not in (StunClass.SUCCESS, StunClass.ERROR):
            return
        t: Transaction | None = self._table.get(message.transactionId)
        if t is None:
            return
        pending: _Pending = t.context
        if message.method != pending.method:
            return
        if source is not None and not pending.anySource and source != t.destination:
            return
        if not _verified(message, pending.key):
            return
        if message.cls == StunClass.ERROR:
            value = message.get(Attr.ERROR_CODE)
            if value is None:
                return
            try:
                code, reason = decodeErrorCode(value)
            except StunDecodeError:
                return
            self._table.finish(message.transactionId)
            self._reschedule()
            pending.deferred.errback(StunErrorResponse(code, reason, message))
            return
        self._table.finish(message.transactionId)
        self._reschedule()
        pending.deferred.callback(message)

    def _failAll(self, reason: Failure) -> None:
        for t in self._table:
            self._table.finish(t.transactionId)
            t.context.deferred.errback(reason)
        self._reschedule()


# -- UDP ---------------------------------------------------------------------------------------


class StunClientProtocol(_TransactionOwner, DatagramProtocol):
    """A STUN client on one UDP socket, retransmitting as RFC 8489 §6.2.1 says.

    Requests to several servers may be outstanding at once; a response is matched by
    transaction ID, method and the address the request went to. Datagrams that match
    nothing, fail to decode, or fail the integrity check are dropped silently.

    @param reactor: clock and scheduler (default: the global reactor).
    @param rto: initial retransmission timeout, seconds.
    @param rc: requests sent in total before the last wait.
    @param rm: the last wait, as a multiple of C{rto}.
    """

    def __init__(
        self,
        reactor: IReactorTime | None = None,
        rto: float = DEFAULT_RTO,
        rc: int = DEFAULT_RC,
        rm: int = DEFAULT_RM,
    ) -> None:
        self._initTransactions(TransactionTable(rto=rto, rc=rc, rm=rm), reactor)

    def request(
        self,
        message: Message,
        addr: Address,
        key: bytes | None = None,
        *,
        sha256: bool = False,
        fingerprint: bool = False,
        credentials: LongTermCredentials | None = None,
        anySource: bool = False,
    ) -> Deferred[Message]:
        """Send C{message} to C{addr} and retransmit it until answered or given up.

        @param addr: the server, C{(ip, port)}; an IP address, not a name.
        @param key: sign with MESSAGE-INTEGRITY (or -SHA256 when C{sha256}) using this
            key, e.g. a short-term password; the response must verify with it.
        @param fingerprint: add FINGERPRINT.
        @param credentials: long-term credentials; a 401 or 438 challenge is then
            answered by a new, signed transaction (C{key} is ignored).
        @param anySource: accept the response from any address, as RFC 5780 needs for
            a CHANGE-REQUEST.
        @return: a L{Deferred} firing with the success response, or failing with
            L{StunErrorResponse} or L{StunTimeout}. Cancelling it stops retransmission.
        @raise ValueError: when the host in C{addr} is not an IP address.
        """
        destination = normalAddress(addr)

        def send(m: Message, data: bytes, k: bytes | None) -> Deferred[Message]:
            return self._begin(m, data, k, destination, reliable=False, anySource=anySource)

        if credentials is not None:
            return credentials.request(send, message, fingerprint)
        return send(message, message.encode(key, sha256=sha256, fingerprint=fingerprint), key)

    @property
    def outstanding(self) -> int:
        """Requests awaiting a response."""
        return len(self._table)

    def _sendData(self, data: bytes, destination: Address | None) -> None:
        self.transport.write(data, destination)  # type: ignore[union-attr]

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Match a response to its request; drop anything else."""
        if not isStun(datagram):
            return
        try:
            message = decode(datagram)
            source = normalAddress(addr)
        except (StunDecodeError, ValueError):
            return
        self._messageReceived(message, source)

    def stopProtocol(self) -> None:
        """The socket closed: fail every outstanding request."""
        self._failAll(Failure(ConnectionDone("the STUN client socket was closed")))


# -- TCP and TLS -------------------------------------------------------------------------------


class StunStreamClientProtocol(_TransactionOwner, Protocol):
    """A STUN client on one TCP or TLS connection (RFC 8489 §6.2.2).

    Requests are sent once; several may be outstanding (pipelined), each answered in any
    order and matched by transaction ID. Each gives up after C{ti} seconds. A stream that
    stops being STUN is closed, failing every outstanding request.

    @param reactor: clock and scheduler (default: the global reactor).
    @param ti: transaction timeout, seconds (RFC 8489: 39.5).
    """

    def __init__(self, reactor: IReactorTime | None = None, ti: float = DEFAULT_TI) -> None:
        self._initTransactions(TransactionTable(ti=ti), reactor)
        self._decoder = StreamDecoder()
        self._closed: Failure | None = None
        self._lost = False
        self._whenLost: list[Deferred[None]] = []

    def request(
        self,
        message: Message,
        key: bytes | None = None,
        *,
        sha256: bool = False,
        fingerprint: bool = False,
        credentials: LongTermCredentials | None = None,
    ) -> Deferred[Message]:
        """Send C{message} once on the connection.

        The arguments are as for L{StunClientProtocol.request}, less the address.

        @return: a L{Deferred} firing with the success response, or failing with
            L{StunErrorResponse}, L{StunTimeout} after Ti, or the reason the connection
            ended.
        """

        def send(m: Message, data: bytes, k: bytes | None) -> Deferred[Message]:
            if self._closed is not None:
                return fail(self._closed)
            return self._begin(m, data, k, None, reliable=True)

        if credentials is not None:
            return credentials.request(send, message, fingerprint)
        return send(message, message.encode(key, sha256=sha256, fingerprint=fingerprint), key)

    @property
    def outstanding(self) -> int:
        """Requests awaiting a response."""
        return len(self._table)

    def _sendData(self, data: bytes, destination: Address | None) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        """Split the stream into messages and match each to its request."""
        try:
            frames = self._decoder.feed(data)
        except StunDecodeError:
            self._closed = Failure()
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        for frame in frames:
            try:
                message = decode(frame)
            except StunDecodeError:
                continue
            self._messageReceived(message, None)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        """Fail every outstanding request with C{reason} (or the stream's decode error)."""
        if self._closed is None:
            self._closed = reason
        self._lost = True
        self._failAll(self._closed)
        waiting, self._whenLost = self._whenLost, []
        for d in waiting:
            d.callback(None)

    def close(self) -> Deferred[None]:
        """Close the connection; the L{Deferred} fires once it is closed.

        Outstanding requests fail with the reason the connection ended.
        """
        if self._lost:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._whenLost.append(d)
        self.transport.loseConnection()  # type: ignore[union-attr]
        return d


def connectStream(
    host: str,
    port: int,
    *,
    reactor: Any = None,
    tlsOptions: IOpenSSLClientConnectionCreator | None = None,
    ti: float = DEFAULT_TI,
    connectTimeout: float = 30,
) -> Deferred[StunStreamClientProtocol]:
    """Connect to a STUN server over TCP, or TLS when C{tlsOptions} is given.

    @param host: a name or an IP address.
    @param tlsOptions: e.g. C{twisted.internet.ssl.optionsForClientTLS("stun.example")}.
    @param ti: transaction timeout of the returned protocol.
    @return: a L{Deferred} firing with the connected L{StunStreamClientProtocol}.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    endpoint: Any = HostnameEndpoint(reactor, host, port, timeout=connectTimeout)
    if tlsOptions is not None:
        endpoint = wrapClientTLS(tlsOptions, endpoint)
    return connectProtocol(endpoint, StunStreamClientProtocol(reactor=reactor, ti=ti))
