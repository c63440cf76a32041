"""Tests for L{p2pnet.store.sqlite}: the schema, start-up work and the pool's settings."""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from p2pnet.errors import ConfigError
from p2pnet.store.sqlite import Database, connect

SCHEMA = ("CREATE TABLE IF NOT EXISTS item (name TEXT PRIMARY KEY, n INTEGER NOT NULL)",)


def insert(cursor: sqlite3.Cursor, name: str, n: int) -> int:
    cursor.execute("INSERT INTO item (name, n) VALUES (?, ?)", (name, n))
    return cursor.rowcount


def items(cursor: sqlite3.Cursor) -> list[tuple[str, int]]:
    return cursor.execute("SELECT name, n FROM item ORDER BY name").fetchall()


class ConnectTests(TestCase):
    def setUp(self) -> None:
        self.path = self.mktemp()

    def test_schemaAndSettings(self) -> None:
        conn = connect(self.path, SCHEMA)
        self.addCleanup(conn.close)
        self.assertEqual(items(conn.cursor()), [])
        settings = [conn.execute(f"PRAGMA {name}").fetchone()[0]
                    for name in ("journal_mode", "synchronous", "foreign_keys")]
        self.assertEqual(settings, ["wal", 2, 1])

    def test_badSchema(self) -> None:
        self.assertRaises(sqlite3.Error, connect, self.path, ("CREATE NONSENSE",))


class DatabaseTests(TestCase):
    def setUp(self) -> None:
        self.path = self.mktemp()
        self.db = Database(self.path, SCHEMA)
        self.addCleanup(self.db.close)

    @inlineCallbacks
    def test_runSyncCommits(self) -> Any:
        self.assertEqual(self.db.runSync(insert, "a", 1), 1)
        rows = yield self.db.runInteraction(items)
        self.assertEqual(rows, [("a", 1)])

    def test_runSyncRollsBack(self) -> None:
        def insertThenFail(cursor: sqlite3.Cursor) -> None:
            insert(cursor, "a", 1)
            raise ValueError("bad row")

        self.assertRaises(ValueError, self.db.runSync, insertThenFail)
        self.assertEqual(self.db.runSync(items), [])

    def test_runSyncSqliteError(self) -> None:
        self.db.runSync(insert, "a", 1)
        self.assertRaises(sqlite3.IntegrityError, self.db.runSync, insert, "a", 2)
        self.assertEqual(self.db.runSync(items), [("a", 1)])

    @inlineCallbacks
    def test_runSyncSeesPoolWrites(self) -> Any:
        yield self.db.runInteraction(insert, "b", 2)
        self.assertEqual(self.db.runSync(items), [("b", 2)])

    def test_unreadableFile(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"not a database" * 100)
        e = self.assertRaises(ConfigError, Database, path, SCHEMA, "gateway-state")
        self.assertEqual(e.key, "gateway-state")
