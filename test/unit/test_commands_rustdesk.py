"""Tests for C{p2pnet keygen} and C{p2pnet peers}."""

from __future__ import annotations

import base64
import io
import os
import sqlite3

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.cli import buildParser
from p2pnet.services.rendezvous_keys import loadServerKey
from p2pnet.store.peers import FILENAME, PeerRecord, openSync, upsertPeer


def run(*argv: str) -> tuple[int, str]:
    args = buildParser().parse_args(argv)
    out = io.StringIO()
    args.out = out
    return int(args.run(args)), out.getvalue()


class KeygenTests(SynchronousTestCase):
    def test_printsAPairUsableAsKey(self) -> None:
        status, text = run("keygen")
        self.assertEqual(status, 0)
        lines = dict(line.split(":  ") for line in text.splitlines())
        self.assertEqual(len(base64.b64decode(lines["Public Key"])), 32)
        key = loadServerKey(lines["Secret Key"], self.mktemp())
        self.assertEqual(key.publicKey, lines["Public Key"])


class PeersTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        conn = openSync(os.path.join(self.dir, FILENAME))
        with conn:
            upsertPeer(conn.cursor(), PeerRecord("123456789", b"u", b"k" * 32, "192.0.2.1"))
        conn.close()

    def test_list(self) -> None:
        status, text = run("peers", "--data-dir", self.dir, "list")
        self.assertEqual(status, 0)
        self.assertEqual(text.splitlines()[0], "1 peers")
        self.assertTrue(text.splitlines()[1].startswith("123456789\t192.0.2.1\t"))

    def test_show(self) -> None:
        status, text = run("peers", "--data-dir", self.dir, "show", "123456789")
        self.assertEqual(status, 0)
        self.assertIn(f"pk:         {base64.b64encode(b'k' * 32).decode()}", text)
        self.assertEqual(run("peers", "--data-dir", self.dir, "show", "nobody")[0], 1)

    def test_missingRegistry(self) -> None:
        self.assertEqual(run("peers", "--data-dir", self.mktemp(), "list")[0], 1)

    def test_importHbbs(self) -> None:
        hbbs = os.path.join(self.dir, "db_v2.sqlite3")
        conn = sqlite3.connect(hbbs)
        conn.execute("create table peer (guid blob primary key not null, id varchar(100) not "
                     "null, uuid blob not null, pk blob not null, created_at datetime not null "
                     "default(current_timestamp), user blob, status tinyint, note "
                     "varchar(300), info text not null) without rowid")
        conn.execute("insert into peer (guid, id, uuid, pk, info) values "
                     "(x'01', '555555555', x'02', x'03', '{}')")
        conn.commit()
        conn.close()
        status, text = run("peers", "--data-dir", self.dir, "import-hbbs", hbbs)
        self.assertEqual((status, text), (0, f"imported 1 peers from {hbbs}\n"))
        self.assertEqual(run("peers", "--data-dir", self.dir, "import-hbbs",
                             os.path.join(self.dir, "missing"))[0], 1)
