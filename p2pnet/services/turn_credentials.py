# -*- test-case-name: test.unit.test_turn_credentials -*-
"""Where TURN users come from, as L{p2pnet.services.auth.Credentials}.

L{RestCredentials} is the TURN REST API convention (draft-uberti-behave-turn-rest, what
coturn's C{use-auth-secret} and WebRTC services use): the username is C{EXPIRY[:USER]}
with C{EXPIRY} a UNIX time, the password is base64(HMAC-SHA1(secret, username)); it is
valid until C{EXPIRY}. L{ChainedCredentials} asks several sources in order (configured
users, the durable user table, the REST secret). The password check itself (an HMAC of
the message, compared in constant time) stays in L{p2pnet.services.auth.LongTermAuth}.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from p2pnet.codecs.stun import longTermKey
from p2pnet.services.auth import Credentials
from p2pnet.store.users import RELOAD_INTERVAL, IUserStore, StoredUser

__all__ = ["ChainedCredentials", "RestCredentials", "StoredUsers", "restPassword"]


def restPassword(secret: str, username: str) -> str:
    """The TURN REST password of C{username}: base64(HMAC-SHA1(secret, username))."""
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode()


class RestCredentials:
    """Time-limited users derived from a shared secret (coturn's C{--use-auth-secret}).

    @param secret: the shared secret (never logged).
    @param clock: UNIX time source (the reactor).
    """

    def __init__(self, secret: str, clock: IReactorTime) -> None:
        self._secret = secret
        self._clock = clock

    def key(self, username: str, realm: str, algorithm: int) -> bytes | None:
        """The key of an unexpired C{EXPIRY[:USER]} username, else C{None}."""
        stamp = username.partition(":")[0]
        if not stamp.isdigit() or int(stamp) <= self._clock.seconds():
            return None
        return longTermKey(username, realm, restPassword(self._secret, username), algorithm)

    def userFromHash(self, userhash: bytes, realm: str) -> str | None:
        """Never: a REST username cannot be recovered from its hash."""
        return None

    def mint(self, user: str, ttl: float) -> tuple[str, str]:
        """C{(username, password)} valid for C{ttl} seconds from now, for C{user}."""
        username = f"{int(self._clock.seconds() + ttl)}:{user}"
        return username, restPassword(self._secret, username)


class ChainedCredentials:
    """The first answer among several L{Credentials}, asked in order."""

    def __init__(self, sources: Sequence[Credentials]) -> None:
        self.sources = list(sources)

    def key(self, username: str, realm: str, algorithm: int) -> bytes | None:
        for source in self.sources:
            found = source.key(username, realm, algorithm)
            if found is not None:
                return found
        return None

    def userFromHash(self, userhash: bytes, realm: str) -> str | None:
        for source in self.sources:
            found = source.userFromHash(userhash, realm)
            if found is not None:
                return found
        return None


class StoredUsers:
    """The durable user table (L{IUserStore}) kept in memory, reloaded every
    C{interval} seconds off the reactor thread, so C{p2pnet users add|del} takes effect
    on a running server.

    @param store: the table.
    @param clock: the reactor, for the reload timer.
    """

    log = Logger()

    def __init__(self, store: IUserStore, clock: IReactorTime,
                 interval: float = RELOAD_INTERVAL) -> None:
        self.store = store
        self._users: dict[str, StoredUser] = {}
        self._hashes: dict[tuple[bytes, str], str] = {}
        self._loop = LoopingCall(self.reload)
        self._loop.clock = clock
        self._interval = interval

    def __len__(self) -> int:
        return len(self._users)

    def start(self) -> Deferred[None]:
        """Load now and then every interval; fires when the first load is done."""
        first = self.reload()
        self._loop.start(self._interval, now=False)
        return first

    def stop(self) -> None:
        """Stop reloading and close the table."""
        if self._loop.running:
            self._loop.stop()
        self.store.close()

    def reload(self) -> Deferred[None]:
        """Read the table again; a failed read keeps the previous users and is logged."""
        def loaded(users: dict[str, StoredUser]) -> None:
            self._users = users
            self._hashes = {(user.userhash, user.realm): name for name, user in users.items()}

        def failed(failure: Any) -> None:
            self.log.warn("cannot read the TURN user table: {error}",
                          error=str(failure.value))

        return self.store.all().addCallbacks(loaded, failed)

    def key(self, username: str, realm: str, algorithm: int) -> bytes | None:
        user = self._users.get(username)
        if user is None or user.realm != realm:
            return None
        return user.key(algorithm)

    def userFromHash(self, userhash: bytes, realm: str) -> str | None:
        return self._hashes.get((userhash, realm))
