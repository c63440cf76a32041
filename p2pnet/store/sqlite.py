# -*- test-case-name: test.test_store_sqlite -*-
"""SQLite in WAL mode, used off the reactor thread through Twisted's C{adbapi}.

One connection in a one-thread pool: SQLite serialises writers anyway, and a single
thread keeps every statement ordered. C{synchronous=FULL} makes an acknowledged write
survive C{kill -9} and power loss alike.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred

from p2pnet.errors import ConfigError

__all__ = ["Database"]

T = TypeVar("T")


def _prepare(path: str, schema: Sequence[str]) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        with conn:
            for statement in schema:
                conn.execute(statement)
    finally:
        conn.close()


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
            _prepare(path, schema)
        except sqlite3.Error as e:
            raise ConfigError(key, f"cannot open database {path}: {e}") from None
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            path,
            check_same_thread=False,
            cp_min=1,
            cp_max=1,
            cp_openfun=self._onOpen,
            cp_reconnect=True,
        )

    @staticmethod
    def _onOpen(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")

    def runQuery(self, sql: str, args: Sequence[Any] = ()) -> Deferred[list[tuple[Any, ...]]]:
        """Rows of one C{SELECT}."""
        return self._pool.runQuery(sql, args)

    def runOperation(self, sql: str, args: Sequence[Any] = ()) -> Deferred[None]:
        """One statement, committed before the Deferred fires."""
        return self._pool.runOperation(sql, args)

    def runInteraction(self, work: Callable[..., T], *args: Any) -> Deferred[T]:
        """C{work(cursor, *args)} in one transaction, committed before the Deferred fires."""
        return self._pool.runInteraction(work, *args)

    def close(self) -> None:
        """Stop the pool's thread and close the connection."""
        self._pool.close()

