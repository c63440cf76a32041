"""Whole runs of L{p2pnet.commands.stun} against the real p2pnet STUN server on
127.0.0.1 with 127.0.0.2 as its RFC 5780 alternate address, in-process and as a
C{python -m p2pnet.cli} process."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import sys
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from p2pnet.app import buildService
from p2pnet.commands.stun import _resolve, stunMain
from p2pnet.config import Config
from test.unit.test_commands_stun import parse


def _sleep(seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class ServerMixin:
    """A p2pnet STUN server on 127.0.0.1 (UDP, TCP, TLS) and 127.0.0.2 (RFC 5780)."""

    def setUp(self) -> Any:
        self.config = Config(
            services=("stun",),
            listen=("127.0.0.1",),
            alt_listen=("127.0.0.2",),
            stun_port=0,
            tls_port=0,
            alt_port=0,
            data_dir=self.mktemp(),
            **self.extraConfig(),
        )
        root = buildService(self.config)
        root.startService()
        self.addCleanup(root.stopService)
        stun: Any = root.getServiceNamed("stun")
        self.udpPort = stun.boundPorts["udp"]
        self.tcpPort = stun.boundPorts["tcp"]
        self.tlsPort = stun.boundPorts["tls"]
        self.altPort = stun.boundPorts["alt"]
        self.tcpAltPort = stun.boundPorts["tcp-alt"]

    def extraConfig(self) -> dict[str, Any]:
        return {}

    async def runMain(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = await stunMain(reactor, parse(*argv), out, err)
        return status, out.getvalue(), err.getvalue()

    def assertAddresses(self, out: str, origin: int | None = None,
                        other: int | None = None) -> list[str]:
        """Check the address lines; C{origin} and C{other} are the answering port and the
        other address's port (default: the UDP ones)."""
        lines = out.splitlines()
        self.assertRegex(lines[0], r"^mapped address:  127\.0\.0\.1:\d+$")
        self.assertEqual(lines[1:3], [
            f"response origin: 127.0.0.1:{origin or self.udpPort}",
            f"other address:   127.0.0.2:{other or self.altPort}",
        ])
        return lines


class ServerRunTests(ServerMixin, TestCase):
    """Whole runs against the p2pnet STUN server."""

    async def test_udp(self) -> None:
        """Over UDP with RFC 5780: addresses, and loopback has no NAT."""
        status, out, err = await self.runMain(f"127.0.0.1:{self.udpPort}")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(self.assertAddresses(out)[3:], [
            "NAT:             none (mapped address is the local address)",
            "NAT mapping:     endpoint-independent",
            "NAT filtering:   endpoint-independent",
        ])

    async def test_tcp(self) -> None:
        """Over TCP: the addresses only."""
        status, out, err = await self.runMain("--tcp", f"127.0.0.1:{self.tcpPort}")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(len(self.assertAddresses(out, self.tcpPort, self.tcpAltPort)), 3)

    async def test_tlsTrusted(self) -> None:
        """Over TLS, trusting the server's certificate."""
        cert = os.path.join(self.config.data_dir, "tls-cert.pem")
        status, out, err = await self.runMain(
            "--tls", "--ca-cert", cert, f"127.0.0.1:{self.tlsPort}")
        self.assertEqual((status, err), (0, ""))
        self.assertRegex(out, r"^mapped address:  127\.0\.0\.1:\d+\n")

    async def test_tlsInsecure(self) -> None:
        """--insecure skips verification."""
        status, out, err = await self.runMain("--tls", "--insecure", f"127.0.0.1:{self.tlsPort}")
        self.assertEqual((status, err), (0, ""))
        self.assertRegex(out, r"^mapped address:  127\.0\.0\.1:\d+\n")

    async def test_tlsUntrusted(self) -> None:
        """A certificate that does not verify: status 1 and a hint."""
        status, out, err = await self.runMain("--tls", f"127.0.0.1:{self.tlsPort}")
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(len(err.splitlines()), 1)
        self.assertIn(f"TLS with 127.0.0.1:{self.tlsPort} failed: certificate verify failed",
                      err)
        self.assertIn("--ca-cert", err)

    async def test_tlsAgainstPlainTcp(self) -> None:
        """--tls against the plain TCP port: one line that says what to try."""
        status, out, err = await self.runMain("--tls", "--insecure", "--timeout", "5",
                                              f"127.0.0.1:{self.tcpPort}")
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("during the TLS handshake: is it a STUN-over-TLS port", err)

    async def test_tcpRefused(self) -> None:
        """Nothing listening: status 1, one line."""
        status, _, err = await self.runMain("--tcp", f"127.0.0.1:{self.altPort}")
        self.assertEqual(status, 1)
        self.assertRegex(err, rf"^p2pnet stun: cannot reach 127\.0\.0\.1:{self.altPort}: .+\n$")


class AuthenticatedServerTests(ServerMixin, TestCase):
    """The same server with long-term credentials required (secure-stun)."""

    def extraConfig(self) -> dict[str, Any]:
        return {"user": (("alice", "wonderland"),), "secure_stun": True}

    async def test_udp(self) -> None:
        """Every RFC 5780 test request is authenticated (SHA-256, as the server offers)."""
        status, out, err = await self.runMain(
            "--user", "alice", "--password", "wonderland", f"127.0.0.1:{self.udpPort}")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(len(self.assertAddresses(out)), 6)

    async def test_tcp(self) -> None:
        """Credentials over TCP."""
        status, out, err = await self.runMain(
            "--tcp", "--user", "alice", "--password", "wonderland", f"127.0.0.1:{self.tcpPort}")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(len(self.assertAddresses(out, self.tcpPort, self.tcpAltPort)), 3)

    async def test_noCredentials(self) -> None:
        """Without credentials the 401 is reported."""
        status, out, err = await self.runMain(f"127.0.0.1:{self.udpPort}")
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(err, f"p2pnet stun: 127.0.0.1:{self.udpPort} answered with error "
                              "401 Unauthorized\n")

    async def test_wrongPassword(self) -> None:
        """Wrong credentials: the 401 to the signed retry is reported."""
        status, _, err = await self.runMain(
            "--user", "alice", "--password", "x", f"127.0.0.1:{self.udpPort}")
        self.assertEqual(status, 1)
        self.assertIn("401", err)


class AlternateServerTests(ServerMixin, TestCase):
    """A server that redirects with 300 Try Alternate."""

    def extraConfig(self) -> dict[str, Any]:
        return {"alternate_server": (("127.0.0.3", 3478),)}

    async def test_udp(self) -> None:
        """The alternate server is named in the error line."""
        status, _, err = await self.runMain(f"127.0.0.1:{self.udpPort}")
        self.assertEqual(status, 1)
        self.assertEqual(err, f"p2pnet stun: 127.0.0.1:{self.udpPort} answered with error "
                              "300 Try Alternate (alternate server 127.0.0.3:3478)\n")

    async def test_tcp(self) -> None:
        """Over TCP too."""
        status, _, err = await self.runMain("--tcp", f"127.0.0.1:{self.tcpPort}")
        self.assertEqual(status, 1)
        self.assertIn("(alternate server 127.0.0.3:3478)", err)


class ProcessTests(ServerMixin, TestCase):
    """C{python -m p2pnet.cli stun ...} as a process: C{task.react} and exit statuses."""

    async def command(self, *argv: str) -> tuple[bytes, bytes, int]:
        return await getProcessOutputAndValue(
            sys.executable, ["-m", "p2pnet.cli", "stun", *argv], env=dict(os.environ),
            reactor=reactor,
        )

    async def test_udp(self) -> None:
        """Success: status 0, the result on standard output."""
        out, err, status = await self.command(f"127.0.0.1:{self.udpPort}")
        self.assertEqual((status, err), (0, b""))
        self.assertEqual(len(self.assertAddresses(out.decode())), 6)

    async def test_tcp(self) -> None:
        """Failure: status 1, one line on standard error."""
        out, err, status = await self.command("--tcp", f"127.0.0.1:{self.altPort}")
        self.assertEqual((status, out), (1, b""))
        self.assertTrue(re.match(rb"p2pnet stun: cannot reach .*\n$", err), err)

    async def test_silentServer(self) -> None:
        """A port that accepts and never answers: --tls ends within --timeout with one
        line naming what it waited for (issue 14 item 7)."""
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the connection; nobody ever answers
        self.addCleanup(silent.close)
        port = silent.getsockname()[1]
        start = time.monotonic()
        out, err, status = await self.command("--tls", "--insecure", "--timeout", "1",
                                              f"127.0.0.1:{port}")
        took = time.monotonic() - start
        self.assertEqual((status, out), (1, b""))
        self.assertLess(took, 10)  # the interpreter's start-up included
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertRegex(err.decode(), r"^p2pnet stun: (gave up after 1 s while waiting for "
                         r"|no response from )")
        self.assertNotIn(b"Deferred", err)

    async def test_interrupted(self) -> None:
        """Ctrl-C: one line, status 130, no traceback."""
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        self.addCleanup(silent.close)
        ended: Deferred[Any] = Deferred()

        class Collect(ProcessProtocol):
            err = b""

            def errReceived(self, data: bytes) -> None:
                self.err += data

            def processEnded(self, reason: Any) -> None:
                ended.callback((self.err, reason.value.exitCode))

        collect = Collect()
        argv = [sys.executable, "-m", "p2pnet.cli", "stun", "--tcp", "--timeout", "30",
                f"127.0.0.1:{silent.getsockname()[1]}"]
        process = reactor.spawnProcess(collect, sys.executable, argv, env=dict(os.environ))
        silent.setblocking(False)
        for _ in range(200):  # until the command connected (bounded: 20 s)
            await _sleep(0.1)
            try:
                conn, _ = silent.accept()
            except BlockingIOError:
                continue
            self.addCleanup(conn.close)
            break
        process.signalProcess(signal.SIGINT)
        err, code = await ended
        self.assertEqual((err, code), (b"p2pnet stun: interrupted\n", 130))

    async def test_usage(self) -> None:
        """A usage error: status 2."""
        _, err, status = await self.command("--user", "alice", "127.0.0.1")
        self.assertEqual(status, 2)
        self.assertEqual(err, b"p2pnet stun: give --user and --password together\n")


class IPv6Tests(TestCase):
    """An IPv6 server without an alternate address: written as C{[::1]:PORT}."""

    def setUp(self) -> Any:
        config = Config(services=("stun",), listen=("::1",), stun_port=0, tls_port=0,
                        data_dir=self.mktemp())
        root = buildService(config)
        root.startService()
        self.addCleanup(root.stopService)
        stun: Any = root.getServiceNamed("stun")
        self.port = stun.boundPorts["udp"]
        self.tcpPort = stun.boundPorts["tcp"]

    async def runMain(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = await stunMain(reactor, parse(*argv), out, err)
        return status, out.getvalue(), err.getvalue()

    async def test_udp(self) -> None:
        """Mapped address in brackets; no OTHER-ADDRESS, so no behaviour tests."""
        status, out, err = await self.runMain(f"[::1]:{self.port}")
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertRegex(lines[0], r"^mapped address:  \[::1\]:\d+$")
        self.assertEqual(lines[1:], ["NAT:             none (mapped address is the local address)"])

    async def test_tcp(self) -> None:
        """Over TCP."""
        status, out, err = await self.runMain("--tcp", f"[::1]:{self.tcpPort}")
        self.assertEqual((status, err), (0, ""))
        self.assertRegex(out, r"^mapped address:  \[::1\]:\d+\n$")

    async def test_resolveName(self) -> None:
        """A host name is looked up (in a thread) to a loopback address; an address is
        taken as it is, in its normal form."""
        host, port = await _resolve(reactor, "localhost", 3478)
        self.assertIn(host, ("127.0.0.1", "::1"))
        self.assertEqual(port, 3478)
        self.assertEqual(await _resolve(reactor, "0:0::1", 1), ("::1", 1))
