# -*- test-case-name: test.unit.test_store_sqlite -*-
"""SQLite in WAL mode, used off the reactor thread through Twisted's C{adbapi}.

One connection in a one-thread pool: SQLite serialises writers anyway, and a single
thread keeps every statement ordered. C{synchronous=FULL} makes an acknowledged write
survive C{kill -9} and power loss alike.

Start-up (reading small tables into memory, storing a generated secret) and the
command line work synchronously instead: L{Database.runSync} and L{connect}, with the
same connection settings.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred

from p2pnet.errors import ConfigError
from p2pnet.files import privateFile

__all__ = ["Database", "connect"]

T = TypeVar("T")


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")


def connect(path: str, schema: Sequence[str] = ()) -> sqlite3.Connection:
    """A synchronous connection configured like the pool's, with C{schema} in place.

    For work that must not wait for the reactor: start-up and the command line.

    The file (and its C{-wal}/C{-shm} files if they exist) is made mode 0600 first,
    whatever its mode was: it holds state, often secrets (L{p2pnet.files}).

    @raise sqlite3.Error: the file cannot be opened or the schema not applied.
    """
    _private(path)
    conn = sqlite3.connect(path)
    try:
        _configure(conn)
        with conn:
            for statement in schema:
                conn.execute(statement)
    except BaseException:
        conn.close()
        raise
    return conn


def _private(path: str) -> None:
    if path == ":memory:" or path.startswith("file:"):
        return
    try:
        privateFile(path)
        for suffix in ("-wal", "-shm", "-journal"):
            if os.path.exists(path + suffix):
                privateFile(path + suffix)
    except OSError as e:
        raise sqlite3.OperationalError(f"cannot make {path} private: {e.strerror}") from None


class Database:
    """A SQLite file with a schema, queried through Deferreds.

    @param path: the database file; its directory must exist.
    @param schema: C{CREATE ... IF NOT EXISTS} statements run once, synchronously, when
        the database is opened (start-up, before the reactor serves anyone).
    @param key: the setting named if the file cannot be opened.
    """

    def __init__(self, path: str, schema: Sequence[str] = (), key: str = "data-dir") -> None:
        self.path = path
        try:
            connect(path, schema).close()
        except sqlite3.Error as e:
            raise ConfigError(key, f"cannot open database {path}: {e}") from None
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            path,
            check_same_thread=False,
            cp_min=1,
            cp_max=1,
            cp_openfun=_configure,
            cp_reconnect=True,
        )

    def runQuery(self, sql: str, args: Sequence[Any] = ()) -> Deferred[list[tuple[Any, ...]]]:
        """Rows of one C{SELECT}."""
        return self._pool.runQuery(sql, args)

    def runOperation(self, sql: str, args: Sequence[Any] = ()) -> Deferred[None]:
        """One statement, committed before the Deferred fires."""
        return self._pool.runOperation(sql, args)

    def runInteraction(self, work: Callable[..., T], *args: Any) -> Deferred[T]:
        """C{work(cursor, *args)} in one transaction, committed before the Deferred fires."""
        return self._pool.runInteraction(work, *args)

    def runSync(self, work: Callable[..., T], *args: Any) -> T:
        """C{work(cursor, *args)} on this thread in one transaction, committed on return.

        Only for start-up, before the reactor serves anyone (like the schema, which is
        applied the same way): reading small tables into memory, storing a generated
        secret. It blocks the calling thread on the disk; once the service runs, use
        L{runInteraction}. A fresh connection is used, so the pool's is never touched
        from two threads.

        @raise sqlite3.Error: as raised by SQLite (the transaction is rolled back).
        """
        conn = connect(self.path)
        try:
            with conn:
                return work(conn.cursor(), *args)
        finally:
            conn.close()

    def close(self) -> None:
        """Stop the pool's thread and close the connection."""
        self._pool.close()

