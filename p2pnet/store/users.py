# -*- test-case-name: test.test_commands_users -*-
"""The durable TURN user table: SQLite in the data directory (C{users.sqlite3}).

Managed by C{p2pnet users add|del|list} (synchronously, through L{openSync}) while the
server runs: SQLite WAL lets both use the file, and the running server reloads the
table (L{p2pnet.services.turn_credentials.StoredUsers}) every L{RELOAD_INTERVAL}
seconds, so a user added or deleted takes effect within that time without a restart. The long-term mechanism needs the password itself (or a key
per algorithm), so the file is created mode 0600 inside the 0700 data directory.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

from twisted.internet.defer import Deferred

from p2pnet.store.sqlite import Database

__all__ = ["FILENAME", "RELOAD_INTERVAL", "SCHEMA", "UserStore", "addUser", "allUsers",
           "deleteUser", "listUsers", "openSync"]

#: The table's file name inside the data directory.
FILENAME = "users.sqlite3"
#: Seconds between reloads of the table by a running server.
RELOAD_INTERVAL = 10.0

SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS turn_user (
        name TEXT PRIMARY KEY NOT NULL,
        password TEXT NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID""",
)


def _private(path: str) -> None:
    if not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def openSync(path: str) -> sqlite3.Connection:
    """A synchronous connection with the schema in place (for the command line)."""
    _private(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    with conn:
        for statement in SCHEMA:
            conn.execute(statement)
    return conn


def addUser(cursor: Any, name: str, password: str) -> bool:
    """Add C{name} or change its password; C{True} when the user is new."""
    cursor.execute("SELECT 1 FROM turn_user WHERE name = ?", (name,))
    new = cursor.fetchone() is None
    cursor.execute(
        "INSERT INTO turn_user (name, password, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET password = excluded.password",
        (name, password, int(time.time())),
    )
    return new


def deleteUser(cursor: Any, name: str) -> bool:
    """Delete C{name}; C{True} when there was such a user."""
    cursor.execute("DELETE FROM turn_user WHERE name = ?", (name,))
    return bool(cursor.rowcount)


def listUsers(cursor: Any) -> list[tuple[str, int]]:
    """C{(name, created UNIX time)} of every user, by name (never the passwords)."""
    cursor.execute("SELECT name, created_at FROM turn_user ORDER BY name")
    return [(str(name), int(created)) for name, created in cursor.fetchall()]


def allUsers(cursor: Any) -> dict[str, str]:
    """Every user's password, by name (for the running server's credentials)."""
    cursor.execute("SELECT name, password FROM turn_user")
    return {str(name): str(password) for name, password in cursor.fetchall()}


class UserStore:
    """The table as Deferreds, off the reactor thread.

    @param path: the database file (created mode 0600 if missing).
    """

    def __init__(self, path: str, key: str = "data-dir") -> None:
        _private(path)
        self._db = Database(path, SCHEMA, key)

    def all(self) -> Deferred[dict[str, str]]:
        """Every user's password, by name."""
        return self._db.runInteraction(allUsers)

    def close(self) -> None:
        """Stop the database thread."""
        self._db.close()
