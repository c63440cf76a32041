"""Reload in a real C{twistd -n p2pnet} child (issue 10 item 1): SIGHUP and the gateway
method C{config.reload} against a TOML file the test rewrites."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import sys
from typing import Any

from twisted.internet import defer, reactor, threads, utils
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from p2pnet.certs import generateSelfSigned
from p2pnet.protocols.rustdesk_client import ControlledPeer
from p2pnet.protocols.stun_client import StunErrorResponse
from p2pnet.protocols.turn_client import TurnClientProtocol
from test.interop.twistd_child import TwistdChild

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def commonName(port: int) -> str:
    """The CN of the certificate the TLS port at C{port} presents now."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(der)
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


class ReloadTests(TestCase):
    timeout = 120

    def writeConfig(self, users: list[str], cert: tuple[str, str], stunPort: int = 0,
                    broken: bool = False) -> None:
        lines = [
            'services = ["stun", "turn", "rendezvous", "gateway"]',
            'listen = ["127.0.0.1"]',
            f"stun-port = {stunPort}", "tls-port = 0", "alt-port = 0",
            "rendezvous-port = 0", "gateway-port = 0", "allow-loopback-peers = true",
            f"user = {json.dumps(users)}",
            f'tls-cert = "{cert[0]}"', f'tls-key = "{cert[1]}"',
            f'data-dir = "{self.dataDir}"',
        ]
        with open(self.configPath, "w") as f:
            f.write("\n".join(lines) + ("\nthis is = = not TOML\n" if broken else "\n"))

    def certificate(self, name: str) -> tuple[str, str]:
        cert, key = os.path.abspath(self.mktemp()), os.path.abspath(self.mktemp())
        generateSelfSigned(cert, key, commonName=name)
        return cert, key

    @defer.inlineCallbacks
    def waitLog(self, child: TwistdChild, text: str, count: int = 1) -> Any:
        for _ in range(400):
            if child.text().count(text) >= count:
                return
            yield deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"{text!r} not logged:\n{child.text()}")

    def gatewayCall(self, method: str) -> defer.Deferred[tuple[bytes, bytes, int]]:
        return utils.getProcessOutputAndValue(
            sys.executable, ["-c", "import sys; from p2pnet.cli import main; sys.exit(main())",
                             "gateway", "call", method, "--url", self.gatewayUrl,
                             "--data-dir", self.dataDir],
            env=dict(os.environ, PYTHONPATH=ROOT), path=ROOT)

    @defer.inlineCallbacks
    def test_reload(self) -> Any:
        self.dataDir = os.path.abspath(self.mktemp())
        self.configPath = os.path.abspath(self.mktemp())
        first, second = self.certificate("first"), self.certificate("second")
        self.writeConfig(["amy:pw-1"], first)
        child = TwistdChild(["--config", self.configPath], ready=b"gateway listening on",
                            env={"PYTHONPATH": ROOT})
        yield child.start(self)
        text = child.text()
        stunLine = re.search(r"STUN listening on ([^\n]*)", text)
        rendezvousLine = re.search(r"rendezvous server listening on ([^\n]*)", text)
        gateway = re.search(r"gateway listening on tcp 127\.0\.0\.1:([0-9]+)", text)
        assert stunLine and rendezvousLine and gateway, text
        udp = int(re.findall(r"udp 127\.0\.0\.1:(\d+)", stunLine.group(1))[0])
        tlsPort = int(re.findall(r"tcp 127\.0\.0\.1:(\d+)", stunLine.group(1))[1])
        rendezvousUdp = int(re.findall(r"udp 127\.0\.0\.1:(\d+)", rendezvousLine.group(1))[0])
        rendezvousTcp = int(re.findall(r"tcp 127\.0\.0\.1:(\d+)", rendezvousLine.group(1))[0])
        self.gatewayUrl = f"ws://127.0.0.1:{gateway.group(1)}/"

        clients: list[TurnClientProtocol] = []

        def turnClient(user: str, password: str) -> TurnClientProtocol:
            turn = TurnClientProtocol(("127.0.0.1", udp), user, password, reactor=reactor)
            port = reactor.listenUDP(0, turn, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            clients.append(turn)
            return turn

        amy = turnClient("amy", "pw-1")
        yield amy.allocate()
        peer = ControlledPeer(reactor, "127.0.0.1", rendezvousUdp, rendezvousTcp, "123456789")
        yield peer.registerUDP()
        self.addCleanup(peer.udp.transport.stopListening)
        self.assertEqual((yield threads.deferToThread(commonName, tlsPort)), "first")
        with self.assertRaises(StunErrorResponse):
            yield turnClient("bob", "pw-2").allocate()

        # SIGHUP: a new user and certificate apply; a new port is named and not taken.
        self.writeConfig(["amy:pw-1", "bob:pw-2"], second, stunPort=40999)
        child.process.signalProcess(signal.SIGHUP)
        yield self.waitLog(child, "until a restart: stun-port")
        self.assertEqual((yield threads.deferToThread(commonName, tlsPort)), "second")
        yield turnClient("bob", "pw-2").allocate()
        yield amy.createPermission("127.0.0.1")  # the allocation made before survives
        out, err, code = yield self.gatewayCall("rendezvous.peers.list")
        self.assertEqual(code, 0, err.decode())
        self.assertEqual([p["id"] for p in json.loads(out)["items"]], ["123456789"])

        # A broken file is refused, through the gateway method too; the settings stay.
        self.writeConfig(["amy:pw-1"], first, broken=True)
        child.process.signalProcess(signal.SIGHUP)
        yield self.waitLog(child, "reload refused, the running settings stay")
        out, err, code = yield self.gatewayCall("config.reload")
        self.assertEqual(code, 1)
        self.assertIn("INVALID_REQUEST", err.decode())
        self.assertEqual((yield threads.deferToThread(commonName, tlsPort)), "second")
        yield turnClient("bob", "pw-2").allocate()

        # A good file through the gateway method: bob is gone for new allocations.
        self.writeConfig(["amy:pw-1"], second)
        out, err, code = yield self.gatewayCall("config.reload")
        self.assertEqual(code, 0, err.decode())
        self.assertEqual(json.loads(out), {"reloaded": True, "restartNeeded": []})
        with self.assertRaises(StunErrorResponse):
            yield turnClient("bob", "pw-2").allocate()
        # Their Refresh(0) while the server still answers.
        yield defer.gatherResults([c.close().addErrback(lambda _: None) for c in clients])
        ended = yield child.stop()
        self.assertEqual(getattr(ended, "exitCode", None), 0, child.text())
