"""Tests for L{p2pnet.store.peers}: the registry, hbbs import, crash durability."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from p2pnet.store.peers import FILENAME, PeerRecord, PeerStore

HBBS_SCHEMA = """
create table if not exists peer (
    guid blob primary key not null,
    id varchar(100) not null,
    uuid blob not null,
    pk blob not null,
    created_at datetime not null default(current_timestamp),
    user blob,
    status tinyint,
    note varchar(300),
    info text not null
) without rowid;
create unique index if not exists index_peer_id on peer (id);
"""


class PeerStoreTests(TestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, FILENAME)
        self.store = PeerStore(self.path)
        self.addCleanup(self.store.close)

    @defer.inlineCallbacks
    def test_putGetUpdate(self) -> Any:
        self.assertIsNone((yield self.store.get("123456789")))
        yield self.store.put(PeerRecord("123456789", b"u", b"pk", "192.0.2.1"))
        got = yield self.store.get("123456789")
        self.assertEqual((got.uuid, got.pk, got.ip), (b"u", b"pk", "192.0.2.1"))
        self.assertTrue(got.createdAt)
        yield self.store.put(PeerRecord("123456789", b"u", b"pk2", "192.0.2.2"))
        got = yield self.store.get("123456789")
        self.assertEqual((got.pk, got.ip), (b"pk2", "192.0.2.2"))
        self.assertEqual((yield self.store.count()), 1)
        yield self.store.put(PeerRecord("000000001", b"u", b"pk", ""))
        self.assertEqual([r.id for r in (yield self.store.list())], ["000000001", "123456789"])

    @defer.inlineCallbacks
    def test_importHbbs(self) -> Any:
        hbbs = os.path.join(self.dir, "db_v2.sqlite3")
        conn = sqlite3.connect(hbbs)
        conn.executescript(HBBS_SCHEMA)
        conn.execute("insert into peer (guid, id, uuid, pk, info) values (?, ?, ?, ?, ?)",
                     (b"g1", "111111111", b"uuid", b"k" * 32, '{"ip":"::ffff:192.0.2.5"}'))
        conn.execute("insert into peer (guid, id, uuid, pk, info) values (?, ?, ?, ?, ?)",
                     (b"g2", "222222222", b"uuid2", b"j" * 32, '{"ip":"192.0.2.6"}'))
        conn.commit()
        conn.close()
        yield self.store.put(PeerRecord("222222222", b"mine", b"p", "192.0.2.9"))
        self.assertEqual((yield self.store.importHbbs(hbbs)), 1)
        got = yield self.store.get("111111111")
        self.assertEqual((got.uuid, got.pk, got.ip), (b"uuid", b"k" * 32, "192.0.2.5"))
        self.assertEqual((yield self.store.get("222222222")).uuid, b"mine")
        self.assertEqual((yield self.store.importHbbs(hbbs)), 0)

    def test_acknowledgedWriteSurvivesKill9(self) -> None:
        """A child acknowledges a write, then is SIGKILLed; the row is there."""
        script = textwrap.dedent(f"""
            import os, sys
            from twisted.internet import reactor
            from p2pnet.store.peers import PeerRecord, PeerStore
            store = PeerStore({self.path!r})
            def acked(_):
                sys.stdout.write("acked\\n"); sys.stdout.flush()
                os.kill(os.getpid(), 9)
            reactor.callWhenRunning(lambda: store.put(
                PeerRecord("kill9peer", b"u", b"pk", "192.0.2.1")).addCallback(acked))
            reactor.run()
        """)
        result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                                timeout=30, text=True)
        self.assertEqual(result.stdout, "acked\n")
        self.assertEqual(result.returncode, -9)
        conn = sqlite3.connect(self.path)
        try:
            rows = conn.execute("select id from peer where id = 'kill9peer'").fetchall()
        finally:
            conn.close()
        self.assertEqual(rows, [("kill9peer",)])
