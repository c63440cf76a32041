"""What the ICE interop tests share: p2pnet's own STUN/TURN server on loopback, and
processes that speak the line protocol of C{p2pnet ice} wired to each other."""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application.service import IService
from twisted.internet import defer, protocol, reactor
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.protocols.tls import TLSMemoryBIOFactory

from p2pnet.app import buildService
from p2pnet.config import Config

USER, PASSWORD = "alice", "wonderland"
SECRET = "ice-rest-secret"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _kind(port: Any) -> str:
    """C{udp}, C{tcp} or C{tls}: a stream port is TLS when a TLS factory is somewhere in
    its chain of wrapped factories (listeners are wrapped by guards)."""
    factory = getattr(port, "factory", None)
    if factory is None:
        return "udp"
    for _ in range(10):
        if factory is None:
            return "tcp"
        if isinstance(factory, TLSMemoryBIOFactory):
            return "tls"
        factory = getattr(factory, "wrappedFactory", None)
    return "tcp"


class LoopbackTurn:
    """STUN+TURN in-process on 127.0.0.1 with kernel-chosen ports, loopback peers
    allowed (every ICE peer in these tests is on loopback).

    @ivar udp: @ivar tcp: @ivar tls: the ports.
    """

    def __init__(self, test: Any) -> None:
        self.dataDir = os.path.abspath(test.mktemp())
        root = buildService(Config(
            services=("stun", "turn"), listen=("127.0.0.1",), stun_port=0, tls_port=0,
            data_dir=self.dataDir, user=((USER, PASSWORD),), auth_secret=SECRET,
            allow_loopback_peers=True))
        root.startService()
        test.addCleanup(root.stopService)
        stun: Any = IService(root.getServiceNamed("stun"))
        self.stun = stun
        kinds: dict[str, int] = {}
        for p in stun.ports:
            kinds.setdefault(_kind(p), p.getHost().port)
        self.udp, self.tcp, self.tls = kinds["udp"], kinds["tcp"], kinds["tls"]

    def bindings(self) -> int:
        """Binding requests the STUN server has answered with success so far."""
        return int(self.stun.stats.snapshot().get("stun.binding.success", 0))

    def certificatePath(self) -> str:
        """The PEM certificate the appliance generated (it names 127.0.0.1)."""
        return os.path.join(self.dataDir, "tls-cert.pem")

    def tlsOptions(self) -> Any:
        """Client TLS options trusting the appliance's certificate for 127.0.0.1."""
        with open(self.certificatePath(), "rb") as f:
            return optionsForClientTLS("127.0.0.1", trustRoot=Certificate.loadPEM(f.read()))


class LinePeer(protocol.ProcessProtocol):
    """One process speaking the C{p2pnet ice} line protocol; every line it prints goes
    to C{other}'s stdin. When it prints C{echoed ...} the other's stdin is closed, which
    ends an C{--echo} peer."""

    def __init__(self) -> None:
        self.other: LinePeer | None = None
        self.out = b""
        self.err = b""
        self.ended: defer.Deferred[int] = defer.Deferred()
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        other = self.other
        for line in lines:
            if other is None or other.transport is None or other.ended.called:
                continue
            other.transport.write(line + b"\n")
            if line.startswith(b"echoed"):
                other.transport.closeStdin()

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


def spawnPeer(test: Any, argv: list[str]) -> LinePeer:
    """Start C{argv} with this tree on its path; killed at cleanup if still running."""
    peer = LinePeer()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, *sys.path])
    reactor.spawnProcess(peer, argv[0], argv, env=env, path=ROOT)
    test.addCleanup(lambda: None if peer.ended.called else (
        peer.transport.signalProcess("KILL"), peer.ended)[1])
    return peer


@defer.inlineCallbacks
def runPair(test: Any, argvA: list[str], argvB: list[str]) -> Any:
    """Run two line-protocol peers wired to each other; both must exit 0. Fires with
    their outputs as text."""
    a, b = spawnPeer(test, argvA), spawnPeer(test, argvB)
    a.other, b.other = b, a
    codes = yield defer.gatherResults([a.ended, b.ended])
    info = f"\nA {argvA}:\n{a.out.decode()}{a.err.decode()}\nB {argvB}:\n{b.out.decode()}{b.err.decode()}"
    test.assertEqual(codes, [0, 0], info)
    return a.out.decode(), b.out.decode()
