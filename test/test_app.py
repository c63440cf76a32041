"""Tests for L{p2pnet.app}: the service tree, the data directory, embedding, .tac files."""

from __future__ import annotations

import os
import stat
import sys

from twisted.application.service import IService
from twisted.internet import utils
from twisted.persisted.sob import loadValueFromFile
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pnet import Config, ConfigError, buildService
from p2pnet.app import BUILDERS, AppContext
from p2pnet.config import SERVICES
from p2pnet.testing import UDPMemoryReactor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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

    def test_startAndStop(self) -> None:
        """The tree starts (binding sockets) and stops."""
        reactor = UDPMemoryReactor()
        root = buildService(Config(services=("stun",), listen=("127.0.0.1",), stun_port=0,
                                   tls_port=0, data_dir=self.mktemp()), reactor)
        root.startService()
        self.assertTrue(reactor.udpPorts)
        root.stopService()
        self.assertFalse(root.getServiceNamed("stun").ports)


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
    """The deployment files in C{tac/} build the same tree."""

    def test_stunTac(self) -> None:
        cwd = os.getcwd()
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        os.chdir(work)
        self.addCleanup(os.chdir, cwd)
        application = loadValueFromFile(os.path.join(ROOT, "tac", "stun.tac"), "application")
        (appliance,) = list(IService(application))
        self.assertEqual([s.name for s in appliance], ["stun"])
        self.assertTrue(os.path.exists(os.path.join(work, "p2pnet-data", "tls-cert.pem")))


class EmbeddingExampleTests(TestCase):
    """docs/examples/embed_stun.py, which docs/embedding.md shows, runs as documented."""

    def test_example(self):  # noqa: ANN201
        script = os.path.join(ROOT, "docs", "examples", "embed_stun.py")
        d = utils.getProcessOutputAndValue(sys.executable, [script], env=dict(os.environ),
                                           path=os.getcwd())

        def check(result) -> None:  # noqa: ANN001
            out, err, code = result
            self.assertEqual(code, 0, err.decode())
            text = out.decode()
            self.assertIn("STUN server on 127.0.0.1:", text)
            self.assertIn("mapped address: 127.0.0.1:", text)
            self.assertIn("'stun.binding.success': 1", text)

        return d.addCallback(check)
