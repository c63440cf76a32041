"""Tests for L{p2pnet.commands.stun}: arguments, output, and runs on a fake reactor
(the runs against a real server are in test/interop/test_commands_stun.py)."""

from __future__ import annotations

import io
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.cli import buildParser
from p2pnet.commands.stun import (
    formatAddress,
    formatResult,
    splitHostPort,
    stunMain,
)
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
        """argparse refuses bad input with one line naming it and status 2."""
        for argv in (["host:99999"], ["--tcp", "--tls", "host"], ["--timeout", "0", "host"],
                     ["--timeout", "x", "host"], []):
            with self.assertRaises(SystemExit) as caught:
                parse(*argv)
            self.assertEqual(caught.exception.code, 2, argv)
        lines = self.stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 5)
        for line in lines:
            self.assertTrue(line.startswith("p2pnet stun: "), line)
            self.assertTrue(line.endswith("(see p2pnet stun --help)"), line)
        self.assertIn("--tls: not allowed with argument --tcp", lines[1])


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

        # The route lookup is the kernel's; test.interop.test_commands_stun uses the real one.
        d = Deferred.fromCoroutine(stunMain(fake, parse(*argv), out, err,
                                            sourceAddress=lambda server: "127.0.0.1"))
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
