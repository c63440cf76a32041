"""Tests for L{p2pnet.tap}: options, secrets from files, the service under twistd."""

from __future__ import annotations

from twisted.application.service import IServiceCollection
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.config import fileSettings, settings
from p2pnet.tap import CommandLineService, Options, makeService


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
        """An unknown flag ends the process with status 1 (one line, see the interop test)."""
        error = self.assertRaises(SystemExit, Options().parseOptions, ["--bogus"])
        self.assertEqual(error.code, 1)

    def test_secretFileFlags(self) -> None:
        """Every secret setting has a --KEY-file flag reading it from a file."""
        text = str(Options())
        for key in fileSettings():
            self.assertIn(f"--{key}", text)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("s3cret\n")
        options = Options()
        options.parseOptions(["--auth-secret-file", path, "--services", "stun"])
        self.assertEqual(options.config.auth_secret, "s3cret")

    def test_makeService(self) -> None:
        """makeService builds the appliance under a CommandLineService."""
        options = Options()
        options.parseOptions(["--services", "stun", "--data-dir", self.mktemp()])
        root = makeService(options)
        self.assertIsInstance(root, CommandLineService)
        (appliance,) = list(IServiceCollection(root))
        self.assertEqual([s.name for s in appliance], ["stun"])
