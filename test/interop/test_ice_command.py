"""C{p2pnet ice} end to end: two real processes on loopback, each one's stdout fed to the
other's stdin, host-only and relay-only through p2pnet's TURN server (UDP, TCP, TLS)."""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from test.interop.ice_servers import PASSWORD, USER, LoopbackTurn


class _Peer(protocol.ProcessProtocol):
    """One C{p2pnet ice} process; lines it prints go to C{other}'s stdin."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.other: _Peer | None = None
        self.out = b""
        self.err = b""
        self.ended: defer.Deferred[int] = defer.Deferred()
        self.onLine: Any = None
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        for line in lines:
            if self.other is not None and self.other.transport is not None:
                self.other.transport.write(line + b"\n")
            if self.onLine is not None:
                self.onLine(self, line)

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


def _spawn(name: str, argv: list[str]) -> _Peer:
    peer = _Peer(name)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), *sys.path])
    reactor.spawnProcess(peer, sys.executable, [sys.executable, "-m", "p2pnet.cli", "ice",
                                                *argv], env=env)
    return peer


class IceCommandTests(unittest.TestCase):
    """Two C{p2pnet ice} processes find each other and echo datagrams."""

    timeout = 60

    @defer.inlineCallbacks
    def pair(self, common: list[str], sender: list[str] | None = None) -> Any:
        a = _spawn("a", ["--role", "controlling", "--send", "hello", "--count", "4",
                         "--timeout", "20", *common, *(sender or [])])
        b = _spawn("b", ["--role", "controlled", "--echo", "--timeout", "20", *common])
        a.other, b.other = b, a

        def line(peer: _Peer, text: bytes) -> None:
            if text.startswith(b"echoed"):
                b.transport.closeStdin()

        a.onLine = line
        self.addCleanup(lambda: [p.transport.signalProcess("KILL") for p in (a, b)
                                 if not p.ended.called])
        codes = yield defer.gatherResults([a.ended, b.ended])
        info = f"a: {a.out!r} {a.err!r}\nb: {b.out!r} {b.err!r}"
        self.assertEqual(codes, [0, 0], info)
        return a.out.decode(), b.out.decode()

    @defer.inlineCallbacks
    def test_host(self) -> Any:
        """Host candidates on 127.0.0.1: host pair, every datagram echoed."""
        aout, bout = yield self.pair(["--host", "127.0.0.1"])
        self.assertIn("selected host host\n", aout)
        self.assertIn("selected host host\n", bout)
        self.assertIn("echoed 4/4\n", aout)
        self.assertIn('"candidates": ["candidate:', aout)

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
        a = _spawn("a", ["--role", "controlling", "--host", "127.0.0.1", "--timeout", "1"])
        a.transport.write(b'{"ufrag": "abcd", "pwd": "0123456789012345678901", '
                          b'"candidates": ["candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"]}\n')
        code = yield a.ended
        self.assertEqual(code, 1)
        self.assertIn(b"no path", a.err)

    @defer.inlineCallbacks
    def test_usage(self) -> Any:
        """--relay-only without --turn is a usage error (status 2)."""
        a = _spawn("a", ["--role", "controlling", "--relay-only"])
        code = yield a.ended
        self.assertEqual(code, 2)
        self.assertIn(b"--relay-only needs --turn", a.err)
