"""Interop tests: the real TURN server on loopback, driven by coturn's C{turnutils_uclient}.

The server runs in-process (L{p2pnet.app.buildService}, C{--services stun,turn}) on
127.0.0.1 (and ::1 when the host has IPv6 loopback) with kernel-chosen ports; coturn's
UDP echo peer C{turnutils_peer} runs beside it. Each test runs C{turnutils_uclient} in
one mode and asserts on what it printed: every message sent came back ("Total lost
packets 0"). Peers are on loopback, so the server allows loopback peers, as
C{--allow-loopback-peers} does.

PyPI's aioice runs C{test/interop/aioice_turn.py}: C{create_turn_endpoint} over UDP and
TCP, echoing through a channel and refreshing.

A missing tool skips its test with the reason, except when the environment variable
C{CI} is set (CI installs coturn), where it fails.

Known client artefact, not tested: C{-S -t -y} (TLS client-to-client) loses the last
message of some sessions against coturn's own C{turnserver} too (the client leaves a
TLS record unread when two arrive together), so TLS is checked without C{-y}.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import sys
from typing import Any

from twisted.application.service import IService
from twisted.internet import defer, protocol, reactor
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest

from p2pnet.app import buildService
from p2pnet.config import Config
from test.interop.test_stun_clients import runClient, showRun

AIOICE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             "aioice_turn.py")
USER, PASSWORD = "alice", "wonderland"
SECRET = "rest-shared-secret"
MESSAGES = 20
CLIENTS = 2


def requireCoturn(name: str) -> str:
    """The path of coturn tool C{name}: skip (or fail under CI) when it is absent."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (Debian package coturn)"
        if os.environ.get("CI"):
            raise unittest.FailTest(f"{reason}; CI must have it")
        raise unittest.SkipTest(reason)
    return path


def ipv6Loopback() -> bool:
    """Whether ::1 can be bound here."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def freePort(host: str) -> int:
    """A UDP port on C{host} that was free a moment ago."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _Ended(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended: defer.Deferred[None] = defer.Deferred()

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)


class TurnServerMixin:
    """Starts STUN+TURN in-process and an echo peer; runs uclient against them."""

    def startServer(self, **overrides: Any) -> None:
        test: Any = self
        self.uclient = requireCoturn("turnutils_uclient")
        peerTool = requireCoturn("turnutils_peer")
        self.v6 = ipv6Loopback()
        listen = ("127.0.0.1", "::1") if self.v6 else ("127.0.0.1",)
        settings: dict[str, Any] = dict(
            services=("stun", "turn"), listen=listen, stun_port=0, tls_port=0,
            data_dir=test.mktemp(), user=((USER, PASSWORD),), auth_secret=SECRET,
            allow_loopback_peers=True, relay_ports=(40000, 49999),
        )
        settings.update(overrides)
        root = buildService(Config(**settings))
        root.startService()
        test.addCleanup(root.stopService)
        stun: Any = IService(root.getServiceNamed("stun"))
        self.turn: Any = root.getServiceNamed("turn")
        kinds: dict[str, int] = {}
        #: The IPv6 loopback's UDP port, when there is one.
        self.port6 = next((p.getHost().port for p in stun.ports
                           if p.getHost().host == "::1" and getattr(p, "factory", None) is None),
                          None)
        for p in stun.ports:
            if p.getHost().host == "127.0.0.1":
                factory = getattr(p, "factory", None)
                factory = getattr(factory, "wrappedFactory", None) if factory else None
                kind = ("udp" if factory is None else
                        "tls" if isinstance(factory, TLSMemoryBIOFactory) else "tcp")
                kinds.setdefault(kind, p.getHost().port)
        self.port, self.tcpPort, self.tlsPort = kinds["udp"], kinds["tcp"], kinds["tls"]
        self.peers: dict[str, int] = {}
        for host in listen:
            self.peers[host] = port = freePort(host)
            ended = _Ended()
            process = reactor.spawnProcess(
                ended, peerTool, [peerTool, "-L", host, "-p", str(port)], env=dict(os.environ))
            test.addCleanup(lambda p=process, e=ended: (p.signalProcess("KILL"), e.ended)[1])

    @defer.inlineCallbacks
    def runUclient(self, *flags: str, peer: str = "127.0.0.1", port: int | None = None,
                   auth: tuple[str, ...] = ("-u", USER, "-w", PASSWORD),
                   messages: int = MESSAGES, clients: int = CLIENTS,
                   client: str = "127.0.0.1") -> Any:
        """Run uclient with C{flags}; assert no loss; return its output."""
        test: Any = self
        if port is None:
            port = self.tcpPort if "-t" in flags or "-T" in flags else self.port
        argv = [self.uclient, *auth, "-p", str(port), "-n", str(messages),
                "-m", str(clients), "-l", "120", *flags]
        if "-y" not in flags and "-T" not in flags:
            argv += ["-e", peer, "-r", str(self.peers[peer])]
        argv.append(client)
        out, err, code = yield runClient(argv, timeout=60)
        text = out + err
        shown = showRun(argv, out, err, code)
        lost = re.search(r"Total lost packets (\d+)", text)
        totals = re.search(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", text, re.M)
        test.assertIsNotNone(lost, shown)
        test.assertIsNotNone(totals, shown)
        sent, received = int(totals.group(1)), int(totals.group(2))
        test.assertEqual(int(lost.group(1)), 0, shown)
        test.assertGreater(sent, 0, shown)
        test.assertEqual(sent, received, shown)
        return text


class UclientTests(TurnServerMixin, unittest.TestCase):
    """coturn's C{turnutils_uclient} in each mode the issue names, zero loss each."""

    timeout = 120

    def setUp(self) -> None:
        self.startServer()

    def test_udpChannels(self) -> Any:
        """UDP client transport, ChannelData (with EVEN-PORT/RESERVATION-TOKEN for RTCP)."""
        return self.runUclient()

    def test_udpSendIndications(self) -> Any:
        """C{-s}: Send and Data indications instead of channels."""
        return self.runUclient("-s")

    def test_tcp(self) -> Any:
        """C{-t}: TCP client transport, padded ChannelData on the stream."""
        return self.runUclient("-t")

    def test_tcpSendIndications(self) -> Any:
        """C{-t -s}: indications over TCP."""
        return self.runUclient("-t", "-s")

    def test_tls(self) -> Any:
        """C{-S -t}: TLS client transport."""
        return self.runUclient("-S", "-t", port=self.tlsPort)

    def test_clientToClient(self) -> Any:
        """C{-y}: two clients relay to each other's relayed addresses."""
        return self.runUclient("-y")

    def test_clientToClientTcp(self) -> Any:
        """C{-t -y} over TCP."""
        return self.runUclient("-t", "-y")

    def test_restCredentials(self) -> Any:
        """C{-W}: TURN REST API credentials from the shared secret."""
        return self.runUclient("-W", SECRET, auth=("-u", "restuser"))

    def test_tcpRelay(self) -> Any:
        """C{-T}: RFC 6062 TCP allocations, Connect, ConnectionAttempt, ConnectionBind
        and spliced byte streams between two clients."""
        return self.runUclient("-T")

    def test_tcpRelayTls(self) -> Any:
        """C{-T -S}: RFC 6062 with TLS control and data connections."""
        return self.runUclient("-T", "-S", port=self.tlsPort)

    def test_dontFragment(self) -> Any:
        """C{-g}: DONT-FRAGMENT on Allocate and Send."""
        return self.runUclient("-g", "-s")

    def test_ipv6Relay(self) -> Any:
        """C{-x}: an IPv6 relayed address (RFC 6156) for an IPv4 client."""
        if not self.v6:
            raise unittest.SkipTest("no IPv6 loopback on this host")
        return self.runUclient("-x", peer="::1")

    @defer.inlineCallbacks
    def test_negative(self) -> Any:
        """C{-N}: uclient's negative tests get errors, and the server keeps serving."""
        argv = [self.uclient, "-u", USER, "-w", PASSWORD, "-p", str(self.port), "-N",
                "-n", "5", "-e", "127.0.0.1", "-r", str(self.peers["127.0.0.1"]),
                "127.0.0.1"]
        out, err, code = yield runClient(argv, timeout=60)
        self.assertIn("error 400", out + err, showRun(argv, out, err, code))
        self.assertGreater(self.turn.stats.counters["turn.errors.400"], 0)
        yield self.runUclient()


class AioiceTests(TurnServerMixin, unittest.TestCase):
    """PyPI aioice's C{create_turn_endpoint} (C{test/interop/aioice_turn.py}): allocate,
    channel, echo, refresh and delete, over UDP and TCP."""

    timeout = 60

    def setUp(self) -> None:
        if importlib.util.find_spec("aioice") is None:
            reason = "aioice is not installed (pip install -e '.[test]')"
            if os.environ.get("CI"):
                raise unittest.FailTest(reason)
            raise unittest.SkipTest(reason)
        self.startServer()

    @defer.inlineCallbacks
    def relay(self, transport: str) -> Any:
        port = self.port if transport == "udp" else self.tcpPort
        argv = [sys.executable, AIOICE_SCRIPT, "127.0.0.1", str(port), transport, USER,
                PASSWORD, "127.0.0.1", str(self.peers["127.0.0.1"])]
        out, err, code = yield runClient(argv)
        shown = showRun(argv, out, err, code)
        self.assertEqual(code, 0, shown)
        self.assertIn("ECHOED 20", out, shown)
        self.assertIn("REFRESHED 900", out, shown)
        self.assertRegex(out, r"CHANNEL \d+")
        self.assertRegex(out, r"RELAYED 127\.0\.0\.1 \d+")
        if self.turn.fastPath is not None:  # what the kernel relayed, read back
            self.turn.fastPath.collectAll()
        counters = self.turn.stats.counters
        self.assertEqual(counters["turn.allocations.created"], 1)
        self.assertGreaterEqual(counters["turn.packets.from_peer"]
                                + counters["turn.fastpath.packets_from_peers"], 20)

    def test_udp(self) -> Any:
        """aioice over UDP."""
        return self.relay("udp")

    def test_tcp(self) -> Any:
        """aioice over TCP (padded ChannelData on the stream)."""
        return self.relay("tcp")
