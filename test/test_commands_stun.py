# -*- test-case-name: test.test_commands_stun -*-
"""Tests for L{p2pnet.commands.stun}: arguments, output, and whole runs against the real
p2pnet STUN server on 127.0.0.1 with 127.0.0.2 as its RFC 5780 alternate address."""

from __future__ import annotations

import io
import os
import re
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pnet.app import buildService
from p2pnet.cli import buildParser
from p2pnet.commands.stun import (
    _resolve,
    formatAddress,
    formatResult,
    splitHostPort,
    stunMain,
)
from p2pnet.config import Config
from p2pnet.protocols.nat_discovery import Behaviour, NatBehaviour
from p2pnet.testing import UDPMemoryReactor


def parse(*argv: str) -> Any:
    return buildParser().parse_args(["stun", *argv])


class ArgumentTests(SynchronousTestCase):
    """Parsing C{p2pnet stun ...}."""

    def setUp(self) -> None:
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def test_splitHostPort(self) -> None:
        """Names, IPv4 and IPv6 addresses, with and without ports."""
        for text, expected in [
            ("stun.example.org", ("stun.example.org", None)),
            ("stun.example.org:3479", ("stun.example.org", 3479)),
            ("127.0.0.1", ("127.0.0.1", None)),
            ("127.0.0.1:1", ("127.0.0.1", 1)),
            ("[::1]:3478", ("::1", 3478)),
            ("[::1]", ("::1", None)),
            ("::1", ("::1", None)),
            ("2001:db8::1", ("2001:db8::1", None)),
            (" 127.0.0.1:65535 ", ("127.0.0.1", 65535)),
        ]:
            self.assertEqual(splitHostPort(text), expected, text)

    def test_splitHostPortErrors(self) -> None:
        """Empty hosts, bad ports and broken brackets are refused."""
        for text in ("", ":3478", "host:", "host:0", "host:65536", "host:x", "[::1", "[::1]x",
                     "[]:3478", "[::1]:"):
            self.assertRaises(ValueError, splitHostPort, text)

    def test_defaults(self) -> None:
        """UDP, the RFC's 39.5 s, no credentials, port chosen later by transport."""
        args = parse("127.0.0.1")
        self.assertEqual(args.server, ("127.0.0.1", None))
        self.assertEqual((args.tcp, args.tls, args.timeout), (False, False, 39.5))
        self.assertEqual((args.user, args.password, args.insecure), (None, None, False))
        self.assertEqual(args.run.__module__, "p2pnet.commands.stun")

    def test_options(self) -> None:
        """Every option is read."""
        args = parse("[::1]:5350", "--tls", "--timeout", "2.5", "--user", "u", "--password",
                     "p", "--ca-cert", "ca.pem")
        self.assertEqual(args.server, ("::1", 5350))
        self.assertTrue(args.tls)
        self.assertEqual((args.timeout, args.user, args.password, args.ca_cert),
                         (2.5, "u", "p", "ca.pem"))

    def test_badArguments(self) -> None:
        """argparse refuses bad input with a usage message and status 2."""
        for argv in (["host:99999"], ["--tcp", "--tls", "host"], ["--timeout", "0", "host"],
                     ["--timeout", "x", "host"], []):
            with self.assertRaises(SystemExit) as caught:
                parse(*argv)
            self.assertEqual(caught.exception.code, 2, argv)
        self.assertIn("usage: p2pnet stun", self.stderr.getvalue())


class FormatTests(SynchronousTestCase):
    """What the command prints."""

    def test_formatAddress(self) -> None:
        """IPv6 addresses are bracketed."""
        self.assertEqual(formatAddress(("127.0.0.1", 3478)), "127.0.0.1:3478")
        self.assertEqual(formatAddress(("::1", 3478)), "[::1]:3478")

    def test_mappedOnly(self) -> None:
        """A server without RFC 5780: one line."""
        self.assertEqual(formatResult(NatBehaviour(("127.0.0.9", 40000))),
                         ["mapped address:  127.0.0.9:40000"])

    def test_everything(self) -> None:
        """Every fact, one per line, in a fixed order."""
        result = NatBehaviour(
            ("::9", 40000), ("::1", 3478), ("::2", 3479), True,
            Behaviour.ADDRESS_DEPENDENT, Behaviour.ADDRESS_AND_PORT_DEPENDENT,
        )
        self.assertEqual(formatResult(result), [
            "mapped address:  [::9]:40000",
            "response origin: [::1]:3478",
            "other address:   [::2]:3479",
            "NAT:             present",
            "NAT mapping:     address-dependent",
            "NAT filtering:   address-and-port-dependent",
        ])

    def test_noNat(self) -> None:
        """No NAT is said in words."""
        result = NatBehaviour(("127.0.0.1", 4), natPresent=False)
        self.assertEqual(formatResult(result)[-1],
                         "NAT:             none (mapped address is the local address)")


class OfflineRunTests(SynchronousTestCase):
    """L{stunMain} on a fake reactor: no server answers."""

    def runMain(self, *argv: str) -> tuple[Any, io.StringIO, io.StringIO, UDPMemoryReactor]:
        fake = UDPMemoryReactor()
        out, err = io.StringIO(), io.StringIO()
        from twisted.internet.defer import Deferred

        d = Deferred.fromCoroutine(stunMain(fake, parse(*argv), out, err))
        return d, out, err, fake

    def test_timeout(self) -> None:
        """No answer: status 1 and one line on standard error after 39.5 s, the request
        sent 7 times from a socket bound to the address the route uses."""
        d, out, err, fake = self.runMain("127.0.0.1:3478")
        ((_, protocol),) = fake.udpPorts.items()
        self.assertEqual(fake.udpPorts, {("127.0.0.1", 0): protocol})
        fake.advance(39.4)
        self.assertNoResult(d)
        fake.advance(0.1)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(err.getvalue(),
                         "p2pnet stun: no response from 127.0.0.1:3478 (no response after "
                         "7 request(s))\n")
        self.assertEqual(out.getvalue(), "")
        self.assertEqual(len(protocol.transport.written), 7)
        self.assertTrue(protocol.transport.stopped)

    def test_timeoutScales(self) -> None:
        """--timeout sets the whole UDP schedule: 7.9 s means an RTO of 0.1 s."""
        d, _, _, fake = self.runMain("--timeout", "7.9", "127.0.0.1")
        ((_, protocol),) = fake.udpPorts.items()
        transport = protocol.transport
        fake.advance(0.1)
        self.assertEqual(len(transport.written), 2)
        fake.advance(7.7)
        self.assertNoResult(d)
        self.assertEqual(len(transport.written), 7)
        self.assertEqual({addr for _, addr in transport.written}, {("127.0.0.1", 3478)})
        fake.advance(0.2)
        self.assertEqual(self.successResultOf(d), 1)

    def test_userWithoutPassword(self) -> None:
        """--user and --password go together: status 2."""
        d, _, err, _ = self.runMain("--user", "alice", "127.0.0.1")
        self.assertEqual(self.successResultOf(d), 2)
        self.assertEqual(err.getvalue(), "p2pnet stun: give --user and --password together\n")


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
