"""Tests for L{p2pnet.tap} and the start-up contract of C{twistd p2pnet}."""

from __future__ import annotations

import os
import socket
import sys

from twisted.application.service import IServiceCollection
from twisted.internet import utils
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pnet.config import settings
from p2pnet.tap import CommandLineService, Options, makeService

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


class OptionsTests(SynchronousTestCase):
    """Command-line parsing."""

    def test_everySettingIsAFlag(self) -> None:
        """--help documents every setting."""
        text = str(Options())
        for s in settings():
            self.assertIn(f"--{s.key}", text)

    def test_parse(self) -> None:
        options = Options()
        options.parseOptions(["--listen", "127.0.0.1", "--listen", "::1", "--stun-port", "0",
                              "--secure-stun", "--services", "stun"])
        self.assertEqual(options.config.listen, ("127.0.0.1", "::1"))
        self.assertEqual(options.config.stun_port, 0)
        self.assertTrue(options.config.secure_stun)

    def test_configFile(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("stun-port = 4000\n")
        options = Options()
        options.parseOptions(["--config", path, "--tls-port", "4001"])
        self.assertEqual((options.config.stun_port, options.config.tls_port), (4000, 4001))

    def test_badValueExits(self) -> None:
        """A bad value ends the process with status 1 (the one line goes to stderr)."""
        error = self.assertRaises(SystemExit, Options().parseOptions, ["--stun-port", "x"])
        self.assertEqual(error.code, 1)

    def test_unknownFlag(self) -> None:
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--bogus"])

    def test_makeService(self) -> None:
        """makeService builds the appliance under a CommandLineService."""
        options = Options()
        options.parseOptions(["--services", "stun", "--data-dir", self.mktemp()])
        root = makeService(options)
        self.assertIsInstance(root, CommandLineService)
        (appliance,) = list(IServiceCollection(root))
        self.assertEqual([s.name for s in appliance], ["stun"])


class TwistdTests(TestCase):
    """C{twistd p2pnet} as a person runs it: errors are one line and exit non-zero."""

    def twistd(self, *args: str):  # noqa: ANN201
        if not os.path.exists(TWISTD):
            self.skipTest(f"{TWISTD} is not installed")
        data = self.mktemp()
        argv = ["-n", "--pidfile=", "p2pnet", "--data-dir", data, *args]
        return utils.getProcessOutputAndValue(TWISTD, argv, env=dict(os.environ),
                                              path=os.getcwd())

    def assertOneLineError(self, result, *fragments: str) -> None:  # noqa: ANN001
        out, err, code = result
        self.assertNotEqual(code, 0)
        lines = err.decode().strip().splitlines()
        self.assertEqual(len(lines), 1, err.decode())
        self.assertTrue(lines[0].startswith("p2pnet: "), lines[0])
        for fragment in fragments:
            self.assertIn(fragment, lines[0])
        self.assertNotIn(b"Traceback", out + err)

    def test_portInUse(self):  # noqa: ANN201
        taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        taken.bind(("127.0.0.1", 0))
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        d = self.twistd("--services", "stun", "--listen", "127.0.0.1", "--stun-port", str(port),
                        "--tls-port", "0")
        return d.addCallback(self.assertOneLineError, "stun-port", "address already in use")

    def test_unknownTomlKey(self):  # noqa: ANN201
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("stun-port = 1\nbogus-key = 2\n")
        return self.twistd("--config", path).addCallback(
            self.assertOneLineError, "bogus-key", "unknown setting")

    def test_unreadableCertificate(self):  # noqa: ANN201
        d = self.twistd("--services", "stun", "--listen", "127.0.0.1", "--stun-port", "0",
                        "--tls-port", "0", "--tls-cert", "/nonexistent/cert.pem",
                        "--tls-key", "/nonexistent/key.pem")
        return d.addCallback(self.assertOneLineError, "tls-cert", "/nonexistent/cert.pem")

    def test_help(self):  # noqa: ANN201
        if not os.path.exists(TWISTD):
            self.skipTest(f"{TWISTD} is not installed")
        d = utils.getProcessOutputAndValue(TWISTD, ["p2pnet", "--help"], env=dict(os.environ))

        def check(result) -> None:  # noqa: ANN001
            out, _, code = result
            self.assertEqual(code, 0)
            for s in settings():
                self.assertIn(f"--{s.key}".encode(), out)

        return d.addCallback(check)
