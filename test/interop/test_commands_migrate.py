"""C{p2pnet config from-coturn} as a command, on Debian's own C{turnserver.conf} and on
the test sample; its output is loaded as twistd p2pnet would."""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.config import loadConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "test", "unit", "data", "turnserver.conf")


class FromCoturnTests(SynchronousTestCase):
    def convert(self, path: str) -> tuple[str, str]:
        done = subprocess.run(
            [sys.executable, "-c", "import sys; from p2pnet.cli import main; sys.exit(main())",
             "config", "from-coturn", path],
            capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
        self.assertEqual(done.returncode, 0, done.stderr)
        out = self.mktemp()
        with open(out, "w") as f:
            f.write(done.stdout)
        loadConfig({}, out, environ={})  # raises on anything twistd would refuse
        return done.stdout, done.stderr

    def test_debian(self) -> None:
        """Debian's coturn package ships /etc/turnserver.conf with a few options set."""
        path = "/etc/turnserver.conf"
        if not os.path.exists(path):
            self.skipTest(f"{path} is not installed (Debian's coturn)")
        out, err = self.convert(path)
        self.assertIn("# syslog: twistd --syslog", out)
        self.assertIn("no equivalent: no-rfc5780", err)

    def test_sample(self) -> None:
        out, err = self.convert(SAMPLE)
        self.assertIn('realm = "example.org"', out)
        self.assertEqual(err.count("no equivalent"), 3)

    def test_missingFile(self) -> None:
        done = subprocess.run(
            [sys.executable, "-c", "import sys; from p2pnet.cli import main; sys.exit(main())",
             "config", "from-coturn", "/nonexistent/turnserver.conf"],
            capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
        self.assertEqual((done.returncode, done.stdout), (1, ""))
        self.assertEqual(done.stderr.count("\n"), 1)
