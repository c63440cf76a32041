# -*- test-case-name: test.test_services_auth -*-
"""STUN long-term credentials (RFC 8489 section 9.2), shared by the STUN and TURN services.

Nonces are stateless: C{obMatJos2} + security feature bits + expiry time + an HMAC of
the expiry and the client's address under a per-process secret. Checking one costs an
HMAC, and no table grows with the number of clients. An expired nonce gets 438.

L{LongTermAuth.check} applies the server steps of RFC 8489 section 9.2.4 in order and
returns either the key to sign the response with or the error response to send.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.interfaces import IReactorTime

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

__all__ = ["AuthResult", "Credentials", "LongTermAuth", "StaticUsers"]


class Credentials(Protocol):
    """Where L{LongTermAuth} finds users (configured users, the user table, REST secrets).

    A source gives the long-term key, never the password: RFC 8489 section 9.2.2 needs
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

#: RFC 8489 section 9.2: the nonce cookie announcing the security features.
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


class LongTermAuth:
    """Checks long-term credentials and makes nonces.

    @param realm: the REALM value.
    @param credentials: where passwords come from.
    @param clock: where time comes from (a C{task.Clock} in tests).
    @param nonceLifetime: seconds a nonce is accepted before 438 Stale Nonce.
    @param software: SOFTWARE value for error responses, or empty.
    """

    def __init__(
        self,
        realm: str,
        credentials: Credentials,
        clock: IReactorTime,
        nonceLifetime: float = 3600.0,
        software: str = "",
    ) -> None:
        self.realm = realm
        self._realmBytes = realm.encode()
        self.credentials = credentials
        self._clock = clock
        self._lifetime = nonceLifetime
        self._secret = os.urandom(32)
        self._software = software.encode()

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
        if self._software:
            reply.add(Attr.SOFTWARE, self._software)
        return reply

    def check(self, request: Message, client: str) -> AuthResult:
        """Apply RFC 8489 section 9.2.4 to C{request} from IP address C{client}."""
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
        key = None
        if name is not None and realm == self._realmBytes:
            try:
                key = self.credentials.key(name, self.realm, algorithm)
            except ValueError:  # not a valid prepared string (RFC 4013)
                return AuthResult(error=self._error(request, 400))
        if key is None:
            return AuthResult(error=self.challenge(request, client))
        if not request.checkIntegrity(key):
            return AuthResult(error=self.challenge(request, client))
        return AuthResult(key=key, sha256=sha256, username=name)  # type: ignore[arg-type]

    def _error(self, request: Message, code: int) -> Message:
        reply = request.errorReply(code)
        if self._software:
            reply.add(Attr.SOFTWARE, self._software)
        return reply
