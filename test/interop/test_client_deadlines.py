"""Client commands as processes against servers that never answer, or answer an error
(issue 14 item 7): each ends within its deadline with one line and no traceback, and an
error says what to do."""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from p2pnet.app import buildService
from p2pnet.config import Config


class DeadlineTests(TestCase):
    async def command(self, *argv: str) -> tuple[bytes, bytes, int, float]:
        start = time.monotonic()
        out, err, status = await getProcessOutputAndValue(
            sys.executable, ["-m", "p2pnet.cli", *argv], env=dict(os.environ),
            reactor=reactor)
        return out, err, status, time.monotonic() - start

    def silentTcp(self) -> int:
        """A port whose connections the kernel completes and nobody ever answers."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        self.addCleanup(sock.close)
        return int(sock.getsockname()[1])

    def assertOneLine(self, err: bytes, prefix: bytes) -> None:
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith(prefix), err)
        self.assertNotIn(b"Traceback", err)
        self.assertNotIn(b"'Deferred'", err)

    async def test_gatewayCallTlsAgainstSilentPort(self) -> None:
        """gateway call --url wss:// against a port that never answers the TLS handshake
        (a ws:// gateway's behaviour) ends at --timeout."""
        port = self.silentTcp()
        out, err, status, took = await self.command(
            "gateway", "call", "health", "--url", f"wss://127.0.0.1:{port}/", "--insecure",
            "--timeout", "1")
        self.assertEqual((status, out), (1, b""))
        self.assertLess(took, 10)
        self.assertOneLine(err, b"p2pnet")
        self.assertIn(b"1 s", err)

    async def test_turnAgainstSilentServer(self) -> None:
        """p2pnet turn against a UDP port that never answers: the Allocate is inside the
        command's deadline, (count + 8) x --timeout."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        self.addCleanup(sock.close)
        out, err, status, took = await self.command(
            "turn", f"127.0.0.1:{sock.getsockname()[1]}", "--user", "u", "--password", "p",
            "--count", "1", "--timeout", "0.5")
        self.assertEqual(status, 1)
        self.assertLess(took, 15)
        self.assertOneLine(err, b"p2pnet")

    async def test_gatewayCallWithoutToken(self) -> None:
        """Without a token, the refusal says how to give one."""
        root = buildService(Config(services=("gateway",), listen=("127.0.0.1",),
                                   gateway_port=0, data_dir=self.mktemp(),
                                   gateway_token="s3cret-token"))
        root.startService()
        self.addCleanup(root.stopService)
        gateway: Any = root.getServiceNamed("gateway")
        port = gateway.ports[0].getHost().port
        cwd = self.mktemp()
        os.makedirs(cwd)  # no ./p2pnet-data there to read a token from
        start = time.monotonic()
        out, err, status = await getProcessOutputAndValue(
            sys.executable, ["-m", "p2pnet.cli", "gateway", "call", "status", "--url",
                             f"ws://127.0.0.1:{port}/", "--timeout", "5"],
            env=dict(os.environ, P2PNET_GATEWAY_TOKEN=""), path=cwd, reactor=reactor)
        self.assertLess(time.monotonic() - start, 15)
        self.assertEqual(status, 1)
        self.assertOneLine(err, b"p2pnet")
        self.assertIn(b"--token", err)
        self.assertIn(b"p2pnet gateway token", err)


class ClosedPipeTests(TestCase):
    def test_closedOutput(self) -> None:
        """C{p2pnet users list | head -0}: one line on standard error, status 141, no
        traceback."""
        import subprocess

        data = self.mktemp()
        for name in ("alice", "bob"):
            subprocess.run([sys.executable, "-m", "p2pnet.cli", "users", "add", name,
                            "--password", "pw", "--data-dir", data],
                           check=True, capture_output=True)
        process = subprocess.Popen(
            [sys.executable, "-m", "p2pnet.cli", "users", "list", "--data-dir", data],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()  # the reader is gone before anything is written
        err = process.stderr.read()
        process.stderr.close()
        self.assertEqual(process.wait(30), 141)
        self.assertEqual(err, b"p2pnet users: output closed (broken pipe)\n")
