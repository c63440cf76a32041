# -*- test-case-name: test.unit.test_commands_users -*-
"""The durable TURN user table: SQLite in the data directory (C{users.sqlite3}).

Managed by C{p2pnet users add|del|list} (synchronously, through L{openSync}) while the
server runs: SQLite WAL lets both use the file, and the running server reloads the
table (L{p2pnet.services.turn_credentials.StoredUsers}) every L{RELOAD_INTERVAL}
seconds, so a user added or deleted takes effect within that time without a restart.

No password is stored: a row holds the long-term keys of RFC 8489 §9.2.2 (MD5
and SHA-256 of C{name:realm:password}) and the USERHASH, all of which depend on the
realm, so a row serves only the realm it was added for (coturn's C{turnadmin -r}
works the same way). The keys still let anyone who reads them authenticate, so the
file is created mode 0600 inside the 0700 data directory.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any, NamedTuple, Protocol

from twisted.internet.defer import Deferred

from p2pnet.codecs.stun import (
    PASSWORD_ALGORITHM_MD5,
    PASSWORD_ALGORITHM_SHA256,
    longTermKey,
    userhash,
)
from p2pnet.store.sqlite import Database, connect

__all__ = ["FILENAME", "IUserStore", "RELOAD_INTERVAL", "SCHEMA", "StoredUser", "UserStore",
           "addUser", "allUsers", "deleteUser", "listUsers", "openSync", "userRow"]

#: The table's file name inside the data directory.
FILENAME = "users.sqlite3"
#: Seconds between reloads of the table by a running server.
RELOAD_INTERVAL = 10.0

SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS turn_user (
        name TEXT PRIMARY KEY NOT NULL,
        realm TEXT NOT NULL,
        key_md5 BLOB NOT NULL,
        key_sha256 BLOB NOT NULL,
        userhash BLOB NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID""",
)


class StoredUser(NamedTuple):
    """One row as the server uses it: the realm and what authenticates in it."""

    realm: str
    keyMd5: bytes
    keySha256: bytes
    userhash: bytes

    def key(self, algorithm: int) -> bytes:
        """The key for PASSWORD-ALGORITHM C{algorithm} (MD5 or SHA-256)."""
        return self.keySha256 if algorithm == PASSWORD_ALGORITHM_SHA256 else self.keyMd5


def _private(path: str) -> None:
    if not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def openSync(path: str) -> sqlite3.Connection:
    """A synchronous connection with the schema in place (for the command line)."""
    _private(path)
    return connect(path, SCHEMA)


def userRow(name: str, password: str, realm: str) -> StoredUser:
    """What is stored of C{name}: its realm, long-term keys and USERHASH, never the
    password.

    @raise ValueError: the name, password or realm is not a valid prepared string.
    """
    return StoredUser(
        realm,
        longTermKey(name, realm, password, PASSWORD_ALGORITHM_MD5),
        longTermKey(name, realm, password, PASSWORD_ALGORITHM_SHA256),
        userhash(name, realm),
    )


def addUser(cursor: Any, name: str, password: str, realm: str, now: float) -> bool:
    """Add C{name} for C{realm} or change its password; C{True} when the user is new.
    C{now} (UNIX time, from the caller's clock) is its creation time.

    @raise ValueError: the name, password or realm is not a valid prepared string.
    """
    row = tuple(userRow(name, password, realm))
    cursor.execute("SELECT 1 FROM turn_user WHERE name = ?", (name,))
    new = cursor.fetchone() is None
    cursor.execute(
        "INSERT INTO turn_user (name, realm, key_md5, key_sha256, userhash, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET realm = excluded.realm, "
        "key_md5 = excluded.key_md5, key_sha256 = excluded.key_sha256, "
        "userhash = excluded.userhash",
        (name, *row, int(now)),
    )
    return new


def deleteUser(cursor: Any, name: str) -> bool:
    """Delete C{name}; C{True} when there was such a user."""
    cursor.execute("DELETE FROM turn_user WHERE name = ?", (name,))
    return bool(cursor.rowcount)


def listUsers(cursor: Any) -> list[tuple[str, str, int]]:
    """C{(name, realm, created UNIX time)} of every user, by name (never the keys)."""
    cursor.execute("SELECT name, realm, created_at FROM turn_user ORDER BY name")
    return [(str(name), str(realm), int(created)) for name, realm, created in cursor.fetchall()]


def allUsers(cursor: Any) -> dict[str, StoredUser]:
    """Every user, by name (for the running server's credentials)."""
    cursor.execute("SELECT name, realm, key_md5, key_sha256, userhash FROM turn_user")
    return {
        str(name): StoredUser(str(realm), bytes(md5), bytes(sha256), bytes(hashed))
        for name, realm, md5, sha256, hashed in cursor.fetchall()
    }


class IUserStore(Protocol):
    """What the TURN service needs of a durable user table. L{UserStore} (SQLite) and
    L{p2pnet.store.redis.RedisUserStore} implement it."""

    def all(self) -> Deferred[dict[str, StoredUser]]:
        """Every user, by name."""

    def list(self) -> Deferred[list[tuple[str, str, int]]]:
        """C{(name, realm, created UNIX time)} of every user, by name."""

    def add(self, name: str, password: str, realm: str, now: float) -> Deferred[bool]:
        """Add or change C{name}; fires C{True} when the user is new."""

    def remove(self, name: str) -> Deferred[bool]:
        """Delete C{name}; fires C{True} when there was such a user."""

    def close(self) -> None:
        """Release the store's resources."""


class UserStore:
    """The table as Deferreds, off the reactor thread.

    @param path: the database file (created mode 0600 if missing).
    """

    def __init__(self, path: str, key: str = "data-dir") -> None:
        _private(path)
        self._db = Database(path, SCHEMA, key)

    def all(self) -> Deferred[dict[str, StoredUser]]:
        """Every user, by name."""
        return self._db.runInteraction(allUsers)

    def list(self) -> Deferred[list[tuple[str, str, int]]]:
        """C{(name, realm, created UNIX time)} of every user, by name (never the keys)."""
        return self._db.runInteraction(listUsers)

    def add(self, name: str, password: str, realm: str, now: float) -> Deferred[bool]:
        """Add C{name} (created at UNIX time C{now}) or change its password; fires
        C{True} when the user is new (C{ValueError} for names or passwords that are not
        valid prepared strings)."""
        return self._db.runInteraction(addUser, name, password, realm, now)

    def remove(self, name: str) -> Deferred[bool]:
        """Delete C{name}; fires C{True} when there was such a user."""
        return self._db.runInteraction(deleteUser, name)

    def close(self) -> None:
        """Stop the database thread."""
        self._db.close()
