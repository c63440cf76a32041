"""Tests for L{p2pnet.app}: the service tree, the data directory, embedding, .tac files."""

from __future__ import annotations

import os
import stat

from twisted.application.service import IService
from twisted.persisted.sob import loadValueFromFile
from twisted.trial.unittest import SynchronousTestCase

from p2pnet import Config, ConfigError, buildService
from p2pnet.app import BUILDERS, AppContext
from p2pnet.config import DEFAULT_SERVICES, SERVICES
from p2pnet.testing import UDPMemoryReactor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class BuildServiceTests(SynchronousTestCase):
    """L{buildService} returns one named child per selected service."""

    def test_everyServiceHasABuilder(self) -> None:
        self.assertEqual(set(BUILDERS), set(SERVICES))

    def test_selectedServices(self) -> None:
        root = buildService(Config(services=("stun",), data_dir=self.mktemp()),
                            UDPMemoryReactor())
        self.assertEqual([s.name for s in root], ["stun"])
        self.assertIs(root.getServiceNamed("stun").parent, root)

    def test_checksConfig(self) -> None:
        """An invalid combination is refused before anything is built."""
        config = Config(alt_listen=("127.0.0.2",), data_dir=self.mktemp())
        self.assertEqual(self.assertRaises(ConfigError, buildService, config).key, "alt-listen")


class AppContextTests(SynchronousTestCase):
    """The shared data directory and TLS certificate."""

    def test_dataDirCreatedPrivate(self) -> None:
        path = self.mktemp()
        context = AppContext(Config(data_dir=path), UDPMemoryReactor())
        self.assertEqual(context.dataDir, path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o700)

    def test_dataDirUnusable(self) -> None:
        blocker = self.mktemp()
        open(blocker, "w").close()
        context = AppContext(Config(data_dir=os.path.join(blocker, "sub")), UDPMemoryReactor())
        error = self.assertRaises(ConfigError, lambda: context.dataDir)
        self.assertEqual(error.key, "data-dir")

    def test_certificateGeneratedOnceThenReused(self) -> None:
        path = self.mktemp()
        self.assertIsNotNone(AppContext(Config(data_dir=path), UDPMemoryReactor()).tlsOptions)
        with open(os.path.join(path, "tls-cert.pem"), "rb") as f:
            first = f.read()
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(path, "tls-key.pem")).st_mode), 0o600)
        self.assertIsNotNone(AppContext(Config(data_dir=path), UDPMemoryReactor()).tlsOptions)
        with open(os.path.join(path, "tls-cert.pem"), "rb") as f:
            self.assertEqual(f.read(), first)


class TacTests(SynchronousTestCase):
    """The deployment files in C{tac/} build the trees they promise (nothing is bound:
    twistd starts them)."""

    def loadTac(self, name: str, toml: str | None = None) -> tuple[str, list[str]]:
        cwd = os.getcwd()
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        if toml is not None:
            with open(os.path.join(work, "p2pnet.toml"), "w") as f:
                f.write(toml)
        os.chdir(work)
        self.addCleanup(os.chdir, cwd)
        application = loadValueFromFile(os.path.join(ROOT, "tac", name), "application")
        (appliance,) = list(IService(application))
        return work, [s.name for s in appliance]

    def test_stunTac(self) -> None:
        work, names = self.loadTac("stun.tac")
        self.assertEqual(names, ["stun"])
        self.assertTrue(os.path.exists(os.path.join(work, "p2pnet-data", "tls-cert.pem")))

    def test_everythingTac(self) -> None:
        """tac/p2pnet.tac runs every server (not the KVM node), reading ./p2pnet.toml
        when present."""
        self.assertEqual(self.loadTac("p2pnet.tac")[1], list(DEFAULT_SERVICES))
        self.assertNotIn("node", DEFAULT_SERVICES)
        self.assertEqual(self.loadTac("p2pnet.tac", 'services = "stun"\n')[1], ["stun"])

    def test_rustdeskTac(self) -> None:
        self.assertEqual(self.loadTac("rustdesk.tac")[1], ["rendezvous", "relay"])

    def test_kvmNodeTac(self) -> None:
        """tac/kvm-node.tac builds the node; its identity is made in the data dir."""
        work, names = self.loadTac("kvm-node.tac", 'node-id = "kvm-test"\n')
        self.assertEqual(names, ["node"])
        with open(os.path.join(work, "p2pnet-data", "node.json")) as f:
            self.assertIn('"id": "kvm-test"', f.read())
