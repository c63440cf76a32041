"""C{p2pnet ice} end to end: two real processes on loopback, each one's stdout fed to the
other's stdin, host-only and relay-only through p2pnet's TURN server (UDP, TCP, TLS)."""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from test.interop.ice_servers import PASSWORD, USER, LoopbackTurn, runPair, spawnPeer

ICE = [sys.executable, "-m", "p2pnet.cli", "ice"]


class IceCommandTests(unittest.TestCase):
    """Two C{p2pnet ice} processes find each other and echo datagrams."""

    timeout = 60

    def pair(self, common: list[str]) -> Any:
        """A sender (controlling) and an echoer (controlled) with C{common} options."""
        return runPair(
            self,
            ICE + ["--role", "controlling", "--send", "hello", "--count", "4", "--timeout",
                   "20", *common],
            ICE + ["--role", "controlled", "--echo", "--timeout", "20", *common])

    @defer.inlineCallbacks
    def test_host(self) -> Any:
        """Host candidates on 127.0.0.1: host pair, every datagram echoed."""
        aout, bout = yield self.pair(["--host", "127.0.0.1"])
        self.assertIn("selected host host\n", aout)
        self.assertIn("selected host host\n", bout)
        self.assertIn("echoed 4/4\n", aout)
        self.assertIn('"candidates": ["candidate:', aout)

    @defer.inlineCallbacks
    def test_lite(self) -> Any:
        """An ICE-lite echoer: the full agent, started controlled, takes control
        (RFC 8445 §6.1.1) and nominates; both select the host pair."""
        aout, bout = yield runPair(
            self,
            ICE + ["--role", "controlled", "--host", "127.0.0.1", "--send", "lite",
                   "--count", "3", "--timeout", "20"],
            ICE + ["--role", "controlled", "--lite", "--host", "127.0.0.1", "--echo",
                   "--timeout", "20"])
        self.assertIn('"lite": true', bout)
        self.assertIn("selected host host\n", aout)
        self.assertIn("selected host host\n", bout)
        self.assertIn("echoed 3/3\n", aout)

    def _relay(self, transport: str) -> Any:
        turn = LoopbackTurn(self)
        port = {"udp": turn.udp, "tcp": turn.tcp, "tls": turn.tls}[transport]
        common = ["--turn", f"127.0.0.1:{port}", "--turn-user", USER, "--turn-password",
                  PASSWORD, "--turn-transport", transport, "--relay-only"]
        if transport == "tls":
            common += ["--turn-ca", turn.certificatePath()]

        @defer.inlineCallbacks
        def check() -> Any:
            aout, bout = yield self.pair(common)
            self.assertIn("selected relay relay\n", aout)
            self.assertIn("selected relay relay\n", bout)
            self.assertIn("echoed 4/4\n", aout)

        return check()

    def test_relayUdp(self) -> Any:
        """Relay-only through p2pnet's TURN server over UDP."""
        return self._relay("udp")

    def test_relayTcp(self) -> Any:
        """Relay-only, allocations over TCP."""
        return self._relay("tcp")

    def test_relayTls(self) -> Any:
        """Relay-only, allocations over TLS verified against the appliance's cert."""
        return self._relay("tls")

    @defer.inlineCallbacks
    def test_noPeer(self) -> Any:
        """Nobody answers: exit status 1 after the timeout, with the reason."""
        a = spawnPeer(self, ICE + ["--role", "controlling", "--host", "127.0.0.1",
                                   "--timeout", "1"])
        a.transport.write(b'{"ufrag": "abcd", "pwd": "0123456789012345678901", '
                          b'"candidates": ["candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"]}\n')
        code = yield a.ended
        self.assertEqual(code, 1)
        self.assertIn(b"no path", a.err)

    @defer.inlineCallbacks
    def test_usage(self) -> Any:
        """--relay-only without --turn is a usage error (status 2)."""
        a = spawnPeer(self, ICE + ["--role", "controlling", "--relay-only"])
        code = yield a.ended
        self.assertEqual(code, 2)
        self.assertIn(b"--relay-only needs --turn", a.err)
