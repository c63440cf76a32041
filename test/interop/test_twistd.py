"""The start-up contract of C{twistd p2pnet} as a subprocess: errors are one line."""

from __future__ import annotations

import os
import socket
import sys

from twisted.internet import utils
from twisted.trial.unittest import TestCase

from p2pnet.config import settings

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


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

    def test_unknownFlag(self):  # noqa: ANN201
        """One line naming the flag, not twistd's 180 lines of usage (issue 14 item 10)."""
        return self.twistd("--bogus-flag").addCallback(self.assertOneLineError, "bogus-flag")

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
