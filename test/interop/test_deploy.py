# -*- test-case-name: test.interop.test_deploy -*-
"""The systemd unit of docs/deploy.md is accepted by C{systemd-analyze verify}."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

from p2pnet.config import Config

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "p2pnet.service"
DOC = ROOT / "docs" / "deploy.md"


class UnitTests(TestCase):
    """deploy/p2pnet.service."""

    def test_verify(self) -> None:
        """C{systemd-analyze verify} reports nothing about the unit: no unknown key, no
        unparsable value. C{ExecStart} is pointed at this venv's C{twistd}, the only part
        that depends on the machine."""
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise SkipTest("systemd-analyze is not installed (Debian package systemd)")
        twistd = Path(sys.executable).parent / "twistd"
        text = UNIT.read_text().replace("/opt/p2pnet/.venv/bin/twistd", str(twistd))
        self.assertIn(str(twistd), text)
        with tempfile.TemporaryDirectory() as tmp:
            unit = Path(tmp) / "p2pnet.service"
            unit.write_text(text)
            done = subprocess.run(
                [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60,
                env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
            )
        mentions = [line for line in (done.stdout + done.stderr).splitlines()
                    if "p2pnet.service" in line]
        self.assertEqual((done.returncode, mentions), (0, []))

    def test_hardening(self) -> None:
        """The unit has the options docs/deploy.md §1 promises."""
        lines = set(UNIT.read_text().splitlines())
        for option in (
            "DynamicUser=yes", "StateDirectory=p2pnet",
            "AmbientCapabilities=CAP_NET_BIND_SERVICE", "NoNewPrivileges=yes",
            "ProtectSystem=strict", "PrivateTmp=yes",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        ):
            self.assertIn(option, lines)

    def test_portsDocumented(self) -> None:
        """Every default port of config.py is in the port table of docs/deploy.md."""
        c = Config()
        doc = DOC.read_text()
        low, high = c.relay_ports
        for port in (c.stun_port, c.tls_port, c.alt_port, c.rendezvous_port - 1,
                     c.rendezvous_port, c.rendezvous_port + 2, c.relay_port,
                     c.relay_port + 2, c.gateway_port):
            self.assertIn(f"| {port} |", doc)
        self.assertIn(f"| {low}-{high} |", doc)
