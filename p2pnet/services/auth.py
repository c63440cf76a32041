# -*- test-case-name: test.unit.test_services_auth -*-
"""STUN long-term credentials (RFC 8489 §9.2), shared by the STUN and TURN services.

Nonces are stateless: C{obMatJos2} + security feature bits + expiry time + an HMAC of
the expiry and the client's address under a per-process secret. Checking one costs an
HMAC, and no table grows with the number of clients. An expired nonce gets 438.

L{LongTermAuth.check} applies the server steps of RFC 8489 §9.2.4 in order and
returns either the key to sign the response with or the error response to send.

Failed authentications (unknown user, wrong password, wrong realm) are logged with the
user, realm, reason and source at a bounded rate, never with a secret, and slowed: each
spends from budgets per source (IPv4 address or IPv6 /64), per user and per (source,
user) pair; while one of them is spent, requests it covers get 401 without being
checked. A pair that authenticated recently is judged by its own pair budget alone, so
an honest crowd behind one NAT keeps working while a guesser among them is slowed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from p2pnet.addresses import sourceKey
from p2pnet.boundedmap import BoundedMap
from p2pnet.codecs.stun import (
    PASSWORD_ALGORITHM_MD5,
    PASSWORD_ALGORITHM_SHA256,
    Attr,
    Message,
    StunDecodeError,
    decodePasswordAlgorithms,
    encodePasswordAlgorithms,
    longTermKey,
    userhash,
)
from p2pnet.ratelimit import TokenBucket
from p2pnet.ratelog import RateLimitedLog

__all__ = ["AuthResult", "Credentials", "FailureLimits", "LongTermAuth", "StaticUsers"]


class Credentials(Protocol):
    """Where L{LongTermAuth} finds users (configured users, the user table, REST secrets).

    A source gives the long-term key, never the password: RFC 8489 §9.2.2 needs
    only the key, so a durable store can keep keys (as coturn's does) and no password
    has to be stored anywhere.
    """

    def key(self, username: str, realm: str, algorithm: int) -> bytes | None:
        """The key of C{username} in C{realm} for PASSWORD-ALGORITHM C{algorithm}
        (L{longTermKey}), or C{None} when there is no such user.

        @raise ValueError: the password or realm is not a valid prepared string.
        """

    def userFromHash(self, userhash: bytes, realm: str) -> str | None:
        """The username whose L{userhash} in C{realm} is C{userhash}, or C{None}."""


class StaticUsers:
    """L{Credentials} from a fixed C{name -> password} mapping (the C{user} setting)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)
        self._hashes: dict[tuple[bytes, str], str] = {}

    def __len__(self) -> int:
        return len(self._users)

    def key(self, username: str, realm: str, algorithm: int) -> bytes | None:
        password = self._users.get(username)
        if password is None:
            return None
        return longTermKey(username, realm, password, algorithm)

    def userFromHash(self, userhash_: bytes, realm: str) -> str | None:
        if not self._hashes:
            self._hashes = {(userhash(name, realm), realm): name for name in self._users}
        return self._hashes.get((userhash_, realm))

#: RFC 8489 §9.2: the nonce cookie announcing the security features.
NONCE_COOKIE = "obMatJos2"
#: Security feature bits: password algorithms (bit 0) and username anonymity (bit 1).
_FEATURES = base64.b64encode(bytes([0b11000000, 0, 0])).decode()

#: PASSWORD-ALGORITHMS value the server offers: SHA-256 first, then MD5, no parameters.
PASSWORD_ALGORITHMS = encodePasswordAlgorithms(
    [(PASSWORD_ALGORITHM_SHA256, b""), (PASSWORD_ALGORITHM_MD5, b"")]
)


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of L{LongTermAuth.check}.

    @ivar key: the HMAC key to sign the success response with, when accepted.
    @ivar sha256: sign with MESSAGE-INTEGRITY-SHA256 (the request used it).
    @ivar username: who was authenticated.
    @ivar error: the error response to send instead, when refused.
    """

    key: bytes | None = None
    sha256: bool = False
    username: str = ""
    error: Message | None = None


@dataclass(frozen=True, slots=True)
class FailureLimits:
    """How fast failed authentications may come before requests get 401 unchecked.

    Rates are failures per second; each burst is what may fail at once before the rate
    applies. The defaults let a NAT's worth of misconfigured clients retry (a client
    retries a failed Allocate every few seconds) and cut a guesser from thousands of
    tries per second to a few.

    @ivar perSource: failures from one IPv4 address or IPv6 /64.
    @ivar perUser: failures naming one user, from anywhere.
    @ivar perPair: failures of one user from one source that authenticated recently.
    @ivar trusted: seconds a (source, user) pair stays trusted after a success.
    @ivar tracked: entries each table keeps at most (least recently used forgotten).
    """

    perSource: tuple[float, float] = (5.0, 50.0)
    perUser: tuple[float, float] = (2.0, 20.0)
    perPair: tuple[float, float] = (1.0, 10.0)
    trusted: float = 3600.0
    tracked: int = 65536


class _FailureBudget:
    """Failures per key: a L{TokenBucket} each, in a L{BoundedMap}. A key whose bucket
    holds less than one token is blocked until it refills."""

    __slots__ = ("rate", "burst", "_buckets")

    def __init__(self, rate: float, burst: float, tracked: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: BoundedMap[Hashable, TokenBucket] = BoundedMap(tracked)

    def blocked(self, key: Hashable, now: float) -> bool:
        bucket = self._buckets.peek(key)
        return bucket is not None and bucket.available(now) < 1

    def fail(self, key: Hashable, now: float) -> None:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, now, self.burst)
        bucket.take(1, now)


class LongTermAuth:
    """Checks long-term credentials and makes nonces.

    @param realm: the REALM value.
    @param credentials: where passwords come from.
    @param clock: where time comes from (a C{task.Clock} in tests).
    @param nonceLifetime: seconds a nonce is accepted before 438 Stale Nonce.
    @param software: kept for callers; error answers no longer carry SOFTWARE (they go
        to unauthenticated clients, and must not be larger than they need to be).
    @param limits: how fast failures may come (L{FailureLimits}).

    @ivar failures: failed authentications so far (unknown user, wrong password or realm).
    @ivar throttled: requests answered 401 unchecked because a failure budget was spent.
    """

    log = Logger()

    def __init__(
        self,
        realm: str,
        credentials: Credentials,
        clock: IReactorTime,
        nonceLifetime: float = 3600.0,
        software: str = "",
        limits: FailureLimits | None = None,
    ) -> None:
        self.realm = realm
        self._realmBytes = realm.encode()
        self.credentials = credentials
        self._clock = clock
        self._lifetime = nonceLifetime
        self._secret = os.urandom(32)
        limits = limits or FailureLimits()
        self.limits = limits
        self._bySource = _FailureBudget(*limits.perSource, limits.tracked)
        self._byUser = _FailureBudget(*limits.perUser, limits.tracked)
        self._byPair = _FailureBudget(*limits.perPair, limits.tracked)
        #: (source key, user) -> when it last authenticated.
        self._trusted: BoundedMap[tuple[str, str], float] = BoundedMap(limits.tracked)
        self._failureLog = RateLimitedLog(self.log, clock, interval=60.0, burst=20)
        self.failures = 0
        self.throttled = 0

    # -- nonces ---------------------------------------------------------------------------

    def makeNonce(self, client: str) -> bytes:
        """A nonce for requests from C{client} (an IP address), valid for the lifetime."""
        expiry = int(self._clock.seconds() + self._lifetime)
        stamp = f"{expiry:x}"
        mac = hmac.new(self._secret, f"{stamp}|{client}".encode(), hashlib.sha256).digest()[:12]
        return f"{NONCE_COOKIE}{_FEATURES}{stamp}.{base64.urlsafe_b64encode(mac).decode()}".encode()

    def nonceValid(self, nonce: bytes, client: str) -> bool:
        """Whether C{nonce} was made here for C{client} and has not expired."""
        prefix = (NONCE_COOKIE + _FEATURES).encode()
        if not nonce.startswith(prefix):
            return False
        stamp, _, mac = nonce[len(prefix) :].partition(b".")
        try:
            expiry = int(stamp, 16)
            given = base64.urlsafe_b64decode(mac)
        except ValueError:
            return False
        expected = hmac.new(
            self._secret, stamp + b"|" + client.encode(), hashlib.sha256
        ).digest()[:12]
        return hmac.compare_digest(given, expected) and self._clock.seconds() < expiry

    # -- the check ------------------------------------------------------------------------

    def challenge(self, request: Message, client: str, code: int = 401) -> Message:
        """An error response with REALM, a fresh NONCE and PASSWORD-ALGORITHMS."""
        reply = request.errorReply(code)
        reply.add(Attr.REALM, self._realmBytes)
        reply.add(Attr.NONCE, self.makeNonce(client))
        reply.add(Attr.PASSWORD_ALGORITHMS, PASSWORD_ALGORITHMS)
        return reply

    def check(self, request: Message, client: str) -> AuthResult:
        """Apply RFC 8489 §9.2.4 to C{request} from IP address C{client}."""
        sha256 = request.get(Attr.MESSAGE_INTEGRITY_SHA256) is not None
        if not sha256 and request.get(Attr.MESSAGE_INTEGRITY) is None:
            # "If the message does not contain a MESSAGE-INTEGRITY or a
            # MESSAGE-INTEGRITY-SHA256 attribute, the server MUST generate an error
            # response with an error code of 401 (Unauthenticated)."
            return AuthResult(error=self.challenge(request, client))
        username = request.get(Attr.USERNAME)
        hashed = request.get(Attr.USERHASH)
        realm = request.get(Attr.REALM)
        nonce = request.get(Attr.NONCE)
        # "If the message contains a MESSAGE-INTEGRITY or a MESSAGE-INTEGRITY-SHA256
        # attribute, but is missing either the USERNAME or USERHASH, REALM, or NONCE
        # attribute, the server MUST generate an error response with an error code of
        # 400 (Bad Request)."
        if (username is None and hashed is None) or realm is None or nonce is None:
            return AuthResult(error=self._error(request, 400))
        # "If the NONCE attribute starts with the 'nonce cookie' ... but
        # PASSWORD-ALGORITHMS does not match the value sent in the response that sent
        # this NONCE, then the server MUST generate an error response with 400."
        offered = request.get(Attr.PASSWORD_ALGORITHMS)
        chosen = request.get(Attr.PASSWORD_ALGORITHM)
        algorithm = PASSWORD_ALGORITHM_MD5
        if offered is not None or chosen is not None:
            try:
                entries = decodePasswordAlgorithms(chosen or b"")
            except StunDecodeError:
                entries = []
            if offered != PASSWORD_ALGORITHMS or len(entries) != 1:
                return AuthResult(error=self._error(request, 400))
            algorithm = entries[0][0]
            if algorithm not in (PASSWORD_ALGORITHM_MD5, PASSWORD_ALGORITHM_SHA256):
                return AuthResult(error=self._error(request, 400))
        # "If the value of the NONCE attribute is no longer valid, the server MUST
        # generate an error response with an error code of 438 (Stale Nonce)."
        if not self.nonceValid(nonce, client):
            return AuthResult(error=self.challenge(request, client, 438))
        # "Using the password associated with the username or userhash in the REALM
        # attribute, the server MUST compute the value for the message integrity".
        if username is not None:
            name: str | None = username.decode("utf-8", "replace")
        else:
            name = self.credentials.userFromHash(hashed, self.realm)  # type: ignore[arg-type]
        source = sourceKey(client)
        now = self._clock.seconds()
        shown = name if name is not None else "(unknown userhash)"
        # Slowed: a spent failure budget answers 401 without looking the user up.
        if self._throttle(source, shown, now):
            self.throttled += 1
            self._logFailure(shown, realm, "throttled: too many failures", client)
            return AuthResult(error=self.challenge(request, client))
        key = None
        reason = "wrong realm"
        if name is None:
            reason = "unknown user"
        elif realm == self._realmBytes:
            try:
                key = self.credentials.key(name, self.realm, algorithm)
            except ValueError:  # not a valid prepared string (RFC 4013)
                return AuthResult(error=self._error(request, 400))
            reason = "unknown user" if key is None else "wrong password"
        if key is None or not request.checkIntegrity(key):
            self._failed(source, shown, now)
            self._logFailure(shown, realm, reason, client)
            return AuthResult(error=self.challenge(request, client))
        self._trusted[(source, shown)] = now
        return AuthResult(key=key, sha256=sha256, username=name)  # type: ignore[arg-type]

    def verify(self, request: Message, client: str) -> bool:
        """Whether C{request} from C{client} carries valid long-term credentials (a nonce
        made here for C{client}, a known user of this realm, a matching integrity), with
        no answer built, nothing logged and no failure counted; C{False} while the
        failure budgets refuse the source or user. The STUN service uses it to tell an
        authenticated TCP/TLS connection from one that has not authenticated."""
        nonce = request.get(Attr.NONCE)
        if nonce is None or request.get(Attr.REALM) != self._realmBytes:
            return False
        if not request.hasIntegrity() or not self.nonceValid(nonce, client):
            return False
        username = request.get(Attr.USERNAME)
        if username is not None:
            name: str | None = username.decode("utf-8", "replace")
        else:
            hashed = request.get(Attr.USERHASH)
            name = None if hashed is None else self.credentials.userFromHash(hashed, self.realm)
        if name is None or self._throttle(sourceKey(client), name, self._clock.seconds()):
            return False
        algorithm = PASSWORD_ALGORITHM_MD5
        chosen = request.get(Attr.PASSWORD_ALGORITHM)
        if chosen is not None:
            try:
                entries = decodePasswordAlgorithms(chosen)
            except StunDecodeError:
                return False
            if len(entries) != 1:
                return False
            algorithm = entries[0][0]
        try:
            key = self.credentials.key(name, self.realm, algorithm)
        except ValueError:
            return False
        return key is not None and request.checkIntegrity(key)

    # -- failures -------------------------------------------------------------------------

    def _throttle(self, source: str, user: str, now: float) -> bool:
        """Whether a request from C{source} naming C{user} is refused unchecked."""
        pair = (source, user)
        since = self._trusted.peek(pair)
        if since is not None and now - since < self.limits.trusted:
            return self._byPair.blocked(pair, now)
        return self._bySource.blocked(source, now) or self._byUser.blocked(user, now)

    def _failed(self, source: str, user: str, now: float) -> None:
        self.failures += 1
        self._bySource.fail(source, now)
        self._byUser.fail(user, now)
        self._byPair.fail((source, user), now)

    def _logFailure(self, user: str, realm: bytes, reason: str, client: str) -> None:
        """One line per failure (bounded: 20 a minute, then a count of the rest): who,
        where, why; never a password, key, nonce or integrity value."""
        self._failureLog.warn(
            "auth-failed",
            "STUN/TURN authentication failed: user={user} realm={realm} reason={reason} "
            "source={source}",
            user=ascii(user[:64]), realm=ascii(realm[:64].decode("utf-8", "replace")),
            reason=reason, source=client,
        )

    def _error(self, request: Message, code: int) -> Message:
        return request.errorReply(code)
