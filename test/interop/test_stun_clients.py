"""Interop tests: the real STUN server on loopback, driven by real third-party clients.

The clients are coturn's C{turnutils_stunclient} and C{turnutils_natdiscovery} (Debian
package C{coturn}), the classic RFC 3489 C{stun} client (Debian package C{stun-client})
and PyPI's C{aioice} (the C{test} extra). Each runs as a subprocess through
C{getProcessOutputAndValue} while the reactor keeps serving, bounded by coreutils'
C{timeout}; the assertions are on what the client itself printed.

The in-process tests start L{p2pnet.app.buildService} on 127.0.0.1 with 127.0.0.2 as the
RFC 5780 alternate address, every port chosen by the kernel. L{TwistdTests} starts the
appliance the way a user does, C{twistd -n p2pnet}, and stops it with SIGTERM.

A missing client skips its test with the reason, except when the environment variable
C{CI} is set: CI installs the clients (C{make system-deps}), so there it is a failure.
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
from twisted.internet import defer, error, protocol, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial import unittest

from p2pnet.app import buildService
from p2pnet.config import Config
from p2pnet.errors import ConfigError
from test.interop.twistd_child import twistdArgv

#: Seconds any one client subprocess may run before coreutils' timeout kills it.
CLIENT_TIMEOUT = 30
#: Seconds the twistd subprocess may take to report its listeners.
STARTUP_TIMEOUT = 30

PRIMARY = "127.0.0.1"
ALTERNATE = "127.0.0.2"

#: Which package provides each client, for the skip/failure message.
PACKAGES = {
    "turnutils_stunclient": "Debian package coturn",
    "turnutils_natdiscovery": "Debian package coturn",
    "stun": "Debian package stun-client",
    "aioice": "PyPI aioice (pip install -e '.[test]')",
}

HERE = os.path.dirname(os.path.abspath(__file__))
AIOICE_SCRIPT = os.path.join(HERE, "aioice_stun.py")


def _missing(name: str) -> None:
    reason = f"{name} is not installed ({PACKAGES[name]}; `make system-deps` installs it)"
    if os.environ.get("CI"):
        raise unittest.FailTest(f"{reason}; CI must have it")
    raise unittest.SkipTest(reason)


def requireTool(name: str) -> str:
    """The path of the client C{name}: skip (or fail under CI) when it is absent."""
    path = shutil.which(name)
    if path is None:
        _missing(name)
    assert path is not None
    return path


def requireAioice() -> None:
    """Skip (or fail under CI) when aioice cannot be imported."""
    if importlib.util.find_spec("aioice") is None:
        _missing("aioice")


def runClient(argv: list[str], timeout: int = CLIENT_TIMEOUT) -> defer.Deferred[tuple[str, str, int]]:
    """Run C{argv} under C{timeout}; fire with C{(stdout, stderr, exit status)} as text.

    A client still running after C{timeout} seconds is killed and the status is 124.
    """
    bound = shutil.which("timeout")
    if bound is not None:
        argv = [bound, "-k", "5", str(timeout), *argv]
    d = getProcessOutputAndValue(argv[0], argv[1:], env=dict(os.environ), reactor=reactor)

    def decode(result: tuple[bytes, bytes, int]) -> tuple[str, str, int]:
        out, err, code = result
        return out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), code

    def killed(reason: Failure) -> tuple[str, str, int]:
        # getProcessOutputAndValue errbacks with (out, err, signal) on a signal.
        if isinstance(reason.value, tuple):
            out, err, sig = reason.value
            raise unittest.FailTest(
                f"{argv} died of signal {sig}\nstdout:\n{out!r}\nstderr:\n{err!r}"
            )
        return reason  # type: ignore[return-value]

    return d.addCallbacks(decode, killed)


def showRun(argv: list[str], out: str, err: str, code: int) -> str:
    """A client run, for an assertion message."""
    return f"\n$ {' '.join(argv)}\n[exit {code}]\n--- stdout\n{out}--- stderr\n{err}"


def blocks(output: str) -> list[dict[str, list[str]]]:
    """turnutils output cut at each C{RFC 5780 response N}: label -> addresses printed.

    Lines look like C{0: : IPv4. Response origin: : 127.0.0.1:3478}; the label is the
    text before the address (C{Response origin}, C{Other addr}, C{UDP reflexive addr}).
    """
    found: list[dict[str, list[str]]] = []
    for chunk in re.split(r"^RFC 5780 response \d+\s*$", output, flags=re.M)[1:]:
        fields: dict[str, list[str]] = {}
        for m in re.finditer(
            r"IPv[46]\.\s*(?P<label>[A-Za-z ]+?)\s*:?\s*:\s*(?P<addr>\S+:\d+)\s*$",
            chunk,
            re.M,
        ):
            fields.setdefault(m.group("label"), []).append(m.group("addr"))
        found.append(fields)
    return found


def _freeStunPorts() -> tuple[int, int, int]:
    """Three port numbers free on 127.0.0.1 and 127.0.0.2 for a twistd subprocess.

    The first is free for UDP and TCP on both addresses (the STUN port), the second for
    UDP on both (the RFC 5780 alternate port), the third for TCP (TLS). Another process
    could take one before twistd binds it; in that instant that is unlikely, and twistd
    would then stop with a one-line error naming the port, which the test shows.
    """
    held: list[socket.socket] = []

    def probe(host: str, kind: int, port: int) -> int:
        s = socket.socket(socket.AF_INET, kind)
        held.append(s)
        s.bind((host, port))
        return s.getsockname()[1]

    try:
        ports: list[int] = []
        for kinds in ((socket.SOCK_DGRAM, socket.SOCK_STREAM), (socket.SOCK_DGRAM,)):
            for _attempt in range(100):
                port = probe(PRIMARY, kinds[0], 0)
                try:
                    for host in (PRIMARY, ALTERNATE):
                        for kind in kinds:
                            if (host, kind) != (PRIMARY, kinds[0]):
                                probe(host, kind, port)
                except OSError:
                    continue
                ports.append(port)
                break
            else:
                raise unittest.SkipTest("no free loopback port pair found in 100 tries")
        ports.append(probe(PRIMARY, socket.SOCK_STREAM, 0))
        return ports[0], ports[1], ports[2]
    finally:
        for s in held:
            s.close()


class ServerMixin:
    """Starts the STUN service in-process; gives its ports to the test."""

    primaryPort: int
    alternatePort: int
    tcpPort: int
    tlsPort: int
    dataDir: str

    def startServer(self) -> None:
        test: Any = self
        self.dataDir = test.mktemp()
        # Port 0 picks a free port on the primary address; the RFC 5780 matrix then
        # needs the same number on the alternate one, which another process may hold:
        # a few tries (bounded), each with new kernel-chosen ports.
        for attempt in range(5):
            root = buildService(
                Config(
                    services=("stun",),
                    listen=(PRIMARY,),
                    alt_listen=(ALTERNATE,),
                    stun_port=0,
                    tls_port=0,
                    alt_port=0,
                    data_dir=self.dataDir,
                )
            )
            try:
                root.startService()
            except ConfigError:
                if attempt == 4:
                    raise
                continue
            break
        test.addCleanup(root.stopService)
        stun: Any = IService(root.getServiceNamed("stun"))
        # With port 0 each kind of listener gets its own free port: boundPorts says which.
        ports = stun.boundPorts
        self.primaryPort, self.alternatePort = ports["udp"], ports["alt"]
        self.tcpPort, self.tlsPort = ports["tcp"], ports["tls"]
        addresses, udpPorts = stun.rfc5780[4]
        assert addresses == (PRIMARY, ALTERNATE), addresses
        assert udpPorts == (self.primaryPort, self.alternatePort), (udpPorts, ports)
        self.stun = stun


class CoturnClientTests(ServerMixin, unittest.TestCase):
    """coturn's C{turnutils_stunclient} and C{turnutils_natdiscovery}."""

    def setUp(self) -> None:
        self.startServer()

    @defer.inlineCallbacks
    def test_stunclientRfc5780(self) -> Any:
        """
        C{turnutils_stunclient} gets its reflexive address, then RFC 5780's OTHER-ADDRESS
        and RESPONSE-ORIGIN; its CHANGE-REQUEST (IP and port) is answered from the
        alternate address and port, and RESPONSE-PORT sends that answer to the port
        the client named.
        """
        argv = [requireTool("turnutils_stunclient"), "-L", PRIMARY,
                "-p", str(self.primaryPort), PRIMARY]
        out, err, code = yield runClient(argv)
        shown = showRun(argv, out, err, code)
        self.assertEqual(code, 0, shown)
        found = blocks(out)
        self.assertEqual(len(found), 3, shown)
        first, changed, padded = found
        self.assertEqual(first["Response origin"][0], f"{PRIMARY}:{self.primaryPort}", shown)
        self.assertEqual(first["Other addr"], [f"{ALTERNATE}:{self.alternatePort}"], shown)
        (reflexive,) = first["UDP reflexive addr"]
        host, port = reflexive.rsplit(":", 1)
        self.assertEqual(host, PRIMARY, shown)
        # Change IP and port: the answer leaves from (A2, P2), to the RESPONSE-PORT
        # socket (local port + 1), still naming the request's source.
        self.assertEqual(changed["Response origin"], [f"{ALTERNATE}:{self.alternatePort}"], shown)
        self.assertEqual(changed["UDP reflexive addr"], [reflexive], shown)
        # The third request goes from that second socket, with a PADDING attribute.
        self.assertEqual(padded["Response origin"], [f"{ALTERNATE}:{self.alternatePort}"], shown)
        self.assertEqual(padded["UDP reflexive addr"], [f"{PRIMARY}:{int(port) + 1}"], shown)

    @defer.inlineCallbacks
    def test_natdiscoveryMapping(self) -> Any:
        """
        C{turnutils_natdiscovery -m} finds endpoint-independent mapping: test II, sent to
        the alternate address, is answered from it with the same mapped address.
        """
        argv = [requireTool("turnutils_natdiscovery"), "-m", "-p", str(self.primaryPort), PRIMARY]
        out, err, code = yield runClient(argv)
        shown = showRun(argv, out, err, code)
        self.assertEqual(code, 0, shown)
        self.assertIn("NAT with Endpoint Independent Mapping!", out, shown)
        found = blocks(out)
        self.assertGreaterEqual(len(found), 2, shown)
        self.assertEqual(found[1]["Response origin"], [f"{ALTERNATE}:{self.primaryPort}"], shown)
        self.assertEqual(found[1]["Other addr"], [f"{PRIMARY}:{self.alternatePort}"], shown)
        self.assertEqual(found[0]["UDP reflexive addr"], found[1]["UDP reflexive addr"], shown)
        self.assertMappedIsLocal(found, out, shown)

    @defer.inlineCallbacks
    def test_natdiscoveryFiltering(self) -> Any:
        """
        C{turnutils_natdiscovery -f} finds endpoint-independent filtering: the
        change-IP-and-port answer arrives from the alternate address and port.
        """
        argv = [requireTool("turnutils_natdiscovery"), "-f", "-p", str(self.primaryPort), PRIMARY]
        out, err, code = yield runClient(argv)
        shown = showRun(argv, out, err, code)
        self.assertEqual(code, 0, shown)
        self.assertIn("NAT with Endpoint Independent Filtering!", out, shown)
        found = blocks(out)
        self.assertEqual(found[1]["Response origin"], [f"{ALTERNATE}:{self.alternatePort}"], shown)
        self.assertMappedIsLocal(found, out, shown)

    def assertMappedIsLocal(self, found: list[dict[str, list[str]]], out: str,
                            shown: str) -> None:
        """
        natdiscovery prints its local port: the reflexive address is 127.0.0.1 on that
        port in every answer, and MAPPED-ADDRESS equals XOR-MAPPED-ADDRESS (RFC 5780
        §4.2's ALG check).
        """
        self.assertEqual(out.count("No ALG: Mapped == XOR-Mapped"), len(found), shown)
        for fields in found:
            (local,) = fields["Local addr"]
            self.assertEqual(fields["UDP reflexive addr"],
                             [f"{PRIMARY}:{local.rsplit(':', 1)[1]}"], shown)


class ClassicStunClientTests(ServerMixin, unittest.TestCase):
    """Debian's classic RFC 3489 client C{stun} (Vovida stund's client, version 0.97)."""

    def setUp(self) -> None:
        self.startServer()

    @defer.inlineCallbacks
    def test_fullRun(self) -> Any:
        """
        The whole RFC 3489 test sequence succeeds: test I, test II (change IP), test III
        (change port), test I(2) to CHANGED-ADDRESS and the hairpin; on loopback the
        verdict is "Open".

        The client's exit status is a bit set: 0x00 for Open, 0x01 when the port was
        preserved and 0x10 when there was no hairpin; anything else is another verdict.
        """
        server = f"{PRIMARY}:{self.primaryPort}"
        argv = [requireTool("stun"), server, "-v"]
        out, err, code = yield runClient(argv)
        shown = showRun(argv, out, err, code)
        self.assertIn("Primary: Open", out, shown)
        self.assertEqual(code & ~0x01, 0, shown)
        for line in ["test I = 1", "test II = 1", "test III = 1", "test I(2) = 1",
                     "hairpin = 1"]:
            self.assertIn(line, err, shown)
        # RFC 3489 §11.2: SOURCE-ADDRESS names the socket the answer came from,
        # CHANGED-ADDRESS the (A2, P2) pair.
        self.assertIn(f"ChangedAddress = {ALTERNATE}:{self.alternatePort}", err, shown)
        self.assertIn(f"SourceAddress = {PRIMARY}:{self.primaryPort}", err, shown)
        self.assertIn(f"SourceAddress = {ALTERNATE}:{self.primaryPort}", err, shown)
        self.assertIn(f"SourceAddress = {PRIMARY}:{self.alternatePort}", err, shown)


class AioiceTests(ServerMixin, unittest.TestCase):
    """aioice's own STUN client code over UDP, TCP and TLS (C{test/interop/aioice_stun.py})."""

    def setUp(self) -> None:
        requireAioice()
        self.startServer()

    @defer.inlineCallbacks
    def query(self, transport: str, port: int) -> Any:
        argv = [sys.executable, AIOICE_SCRIPT, PRIMARY, str(port), transport,
                "--cafile", os.path.join(self.dataDir, "tls-cert.pem")]
        out, err, code = yield runClient(argv)
        shown = showRun(argv, out, err, code)
        self.assertEqual(code, 0, shown)
        lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
        self.assertEqual(lines["MAPPED"], lines["LOCAL"], shown)
        self.assertTrue(lines["LOCAL"].startswith(PRIMARY + " "), shown)
        self.assertEqual(lines.get("SOFTWARE"), "p2pnet", shown)
        self.assertIn("FINGERPRINT", lines["ATTRIBUTES"].split(), shown)
        return lines

    def test_udp(self) -> defer.Deferred[Any]:
        """aioice's ICE server-reflexive query over UDP maps to the client's own address."""
        return self.query("udp", self.primaryPort)

    def test_tcp(self) -> defer.Deferred[Any]:
        """aioice's TURN stream client gets a Binding answer over TCP."""
        return self.query("tcp", self.tcpPort)

    def test_tls(self) -> defer.Deferred[Any]:
        """
        aioice's TURN stream client gets a Binding answer over TLS, verifying the
        certificate the appliance generated in its data directory.
        """
        return self.query("tls", self.tlsPort)


class _TwistdProtocol(protocol.ProcessProtocol):
    """Collects a twistd subprocess's log; fires L{ready} at the STUN listening line."""

    def __init__(self) -> None:
        self.output = b""
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[BaseException] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.ready.called and b"STUN listening on" in self.output:
            self.ready.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        if not self.ready.called:
            self.ready.errback(unittest.FailTest("twistd ended before listening"))
        # The exception itself, not the Failure: a Failure would errback.
        self.ended.callback(reason.value)


class TwistdTests(unittest.TestCase):
    """C{twistd -n p2pnet} as a subprocess, queried by C{turnutils_stunclient}."""

    @defer.inlineCallbacks
    def test_twistdServesStunclient(self) -> Any:
        """
        The plugin starts from the command line on the ports given as flags, answers
        C{turnutils_stunclient} with RFC 5780 attributes, and on SIGTERM shuts down
        cleanly with exit status 0.
        """
        stunclient = requireTool("turnutils_stunclient")
        stunPort, altPort, tlsPort = _freeStunPorts()
        dataDir = os.path.abspath(self.mktemp())
        argv = [*twistdArgv(), "-n", "--pidfile=", "--logfile=-", "p2pnet",
                "--services", "stun", "--listen", PRIMARY, "--alt-listen", ALTERNATE,
                "--stun-port", str(stunPort), "--alt-port", str(altPort),
                "--tls-port", str(tlsPort), "--data-dir", dataDir]
        proto = _TwistdProtocol()
        process = reactor.spawnProcess(proto, argv[0], argv, env=dict(os.environ))

        def stop() -> None:
            try:
                process.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass

        def reap() -> defer.Deferred[Any] | None:
            if proto.ended.called:
                return None
            stop()
            return proto.ended

        self.addCleanup(reap)
        timer = reactor.callLater(STARTUP_TIMEOUT, stop)
        try:
            yield proto.ready
        except Exception:
            yield proto.ended
            self.fail(f"twistd did not start: {argv}\n{proto.output.decode(errors='replace')}")
        finally:
            if timer.active():
                timer.cancel()
        log = proto.output.decode(errors="replace")
        self.assertIn(f"udp {PRIMARY}:{stunPort}", log)
        self.assertIn(f"tcp {PRIMARY}:{tlsPort}", log)

        clientArgv = [stunclient, "-L", PRIMARY, "-p", str(stunPort), PRIMARY]
        out, err, code = yield runClient(clientArgv)
        shown = showRun(clientArgv, out, err, code)
        self.assertEqual(code, 0, shown)
        found = blocks(out)
        self.assertEqual(len(found), 3, shown)
        self.assertEqual(found[0]["Other addr"], [f"{ALTERNATE}:{altPort}"], shown)
        self.assertEqual(found[1]["Response origin"], [f"{ALTERNATE}:{altPort}"], shown)

        process.signalProcess("TERM")
        timer = reactor.callLater(STARTUP_TIMEOUT, stop)
        try:
            ended = yield proto.ended
        finally:
            if timer.active():
                timer.cancel()
        log = proto.output.decode(errors="replace")
        # A clean stop on SIGTERM exits with status 0 (p2pnet.tap.CommandLineService).
        self.assertIsInstance(ended, error.ProcessDone, log)
        self.assertIn("Received SIGTERM, shutting down.", log)
        self.assertIn("Server Shut Down.", log)
        self.assertNotIn("Traceback", log)
