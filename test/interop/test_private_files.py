"""Every file of the data directory holding a secret or state is 0600 and the directory
0700, whatever existed before (issue 14 item 8): the whole appliance is started on
loopback sockets in a data directory made 0755 with state files made 0644 in advance."""

from __future__ import annotations

import os
import sqlite3
import stat

from twisted.trial.unittest import SynchronousTestCase

from p2pnet import Config, buildService
from p2pnet.store.sqlite import connect
from p2pnet.testing import UDPMemoryReactor

#: Public material meant to be handed out: may be readable by others (and nothing else).
PUBLIC = {"tls-cert.pem", "id_ed25519.pub"}
#: What the appliance keeps in its data directory with every service on.
EXPECTED = {"gateway.sqlite", "peers.sqlite3", "users.sqlite3", "tls-key.pem", "id_ed25519",
            "turn-user.txt"}


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class DataDirectoryModeTests(SynchronousTestCase):
    def test_everyFilePrivate(self) -> None:
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)
        data = self.mktemp()
        os.makedirs(data)
        os.chmod(data, 0o755)
        for name in ("gateway.sqlite", "peers.sqlite3"):  # left behind 0644 by an old version
            sqlite3.connect(os.path.join(data, name)).close()
            os.chmod(os.path.join(data, name), 0o644)
        config = Config(data_dir=data, listen=("127.0.0.1",), stun_port=0, tls_port=0,
                        rendezvous_port=0, relay_port=0, gateway_port=0)
        root = buildService(config, UDPMemoryReactor())
        root.startService()
        self.addCleanup(root.stopService)
        names = set(os.listdir(data))
        self.assertTrue(EXPECTED <= names, names)
        # While a database is open with a write in its log, its WAL and shared-memory
        # files exist: SQLite gives them the database's mode.
        conn = connect(os.path.join(data, "gateway.sqlite"))
        self.addCleanup(conn.close)
        with conn:
            conn.execute("CREATE TABLE IF NOT EXISTS probe (x)")
        names = set(os.listdir(data))
        self.assertTrue({"gateway.sqlite-wal", "gateway.sqlite-shm"} <= names, names)
        self.assertEqual(mode(data), 0o700)
        for name in sorted(names - PUBLIC):
            self.assertEqual(mode(os.path.join(data, name)), 0o600, name)

    def test_existingFilesNarrowed(self) -> None:
        """Every file a first start wrote, made 0644 by hand (the key, the generated TURN
        password, the databases), is 0600 again after the next start."""
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)
        data = self.mktemp()
        config = Config(data_dir=data, listen=("127.0.0.1",), stun_port=0, tls_port=0,
                        rendezvous_port=0, relay_port=0, gateway_port=0)
        first = buildService(config, UDPMemoryReactor())
        first.startService()
        first.stopService()
        os.chmod(data, 0o755)
        names = set(os.listdir(data))
        self.assertTrue(EXPECTED <= names, names)
        for name in names:
            os.chmod(os.path.join(data, name), 0o644)
        second = buildService(config, UDPMemoryReactor())
        second.startService()
        self.addCleanup(second.stopService)
        self.assertEqual(mode(data), 0o700)
        for name in sorted(set(os.listdir(data)) - PUBLIC):
            self.assertEqual(mode(os.path.join(data, name)), 0o600, name)
