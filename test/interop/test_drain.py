"""Draining and systemd readiness in a real C{twistd -n p2pnet} child (issue 10 item 9)."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from typing import Any

from twisted.internet import defer, reactor, utils
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from p2pnet.protocols.stun_client import StunErrorResponse
from p2pnet.protocols.turn_client import TurnClientProtocol
from test.interop.twistd_child import TwistdChild

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Notifications(DatagramProtocol):
    """What the child sends to NOTIFY_SOCKET, one Deferred per awaited word."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.waiting: list[tuple[str, defer.Deferred[None]]] = []

    def datagramReceived(self, data: bytes, addr: Any = None) -> None:
        self.received.append(data.decode())
        for word, d in list(self.waiting):
            if word in self.received[-1]:
                self.waiting.remove((word, d))
                d.callback(None)

    def seen(self, word: str) -> defer.Deferred[None]:
        if any(word in r for r in self.received):
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self.waiting.append((word, d))
        return d.addTimeout(30, reactor)


class DrainTests(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_drainAndReadiness(self) -> Any:
        """READY=1 once listening; after SIGUSR1 a new allocation gets 508 while the
        existing one keeps working; when it ends the process stops by itself, status 0,
        having said STOPPING=1."""
        socketPath = os.path.abspath(self.mktemp())
        notes = Notifications()
        listening = reactor.listenUNIXDatagram(socketPath, notes)
        self.addCleanup(listening.stopListening)
        child = TwistdChild(
            ["--services", "stun,turn", "--listen", "127.0.0.1", "--stun-port", "0",
             "--tls-port", "0", "--alt-port", "0", "--user", "amy:pw-1",
             "--allow-loopback-peers", "--data-dir", os.path.abspath(self.mktemp())],
            env={"NOTIFY_SOCKET": socketPath, "PYTHONPATH": ROOT})
        yield child.start(self)
        yield notes.seen("READY=1")
        found = re.search(r"udp 127\.0\.0\.1:([0-9]+)", child.text())
        assert found, child.text()
        server = ("127.0.0.1", int(found.group(1)))

        def client() -> TurnClientProtocol:
            turn = TurnClientProtocol(server, "amy", "pw-1", reactor=reactor)
            port = reactor.listenUDP(0, turn, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.addCleanup(lambda: turn.close().addErrback(lambda _: None))
            return turn

        first = client()
        yield first.allocate()
        child.process.signalProcess(signal.SIGUSR1)
        yield notes.seen("STATUS=draining")
        second = client()
        with self.assertRaises(StunErrorResponse) as refused:
            yield second.allocate()
        self.assertEqual(refused.exception.code, 508)
        yield first.createPermission("127.0.0.1")  # the existing allocation works
        yield first.close()  # Refresh(0): nothing is left
        ended = yield child.ended
        self.assertEqual(getattr(ended, "exitCode", None), 0, child.text())
        yield notes.seen("STOPPING=1")
        self.assertIn("drained: nothing left; stopping", child.text())

    @defer.inlineCallbacks
    def test_gatewayMethod(self) -> Any:
        """server.drain through p2pnet gateway call: the answer says what is left; the
        process stops once that is gone."""
        dataDir = os.path.abspath(self.mktemp())
        child = TwistdChild(
            ["--services", "stun,turn,gateway", "--listen", "127.0.0.1", "--stun-port", "0",
             "--tls-port", "0", "--alt-port", "0", "--gateway-port", "0", "--user",
             "amy:pw-1", "--data-dir", dataDir],
            ready=b"gateway listening on", env={"PYTHONPATH": ROOT})
        yield child.start(self)
        stun = re.search(r"udp 127\.0\.0\.1:([0-9]+)", child.text())
        gateway = re.search(r"gateway listening on tcp 127\.0\.0\.1:([0-9]+)", child.text())
        assert stun and gateway, child.text()
        turn = TurnClientProtocol(("127.0.0.1", int(stun.group(1))), "amy", "pw-1",
                                  reactor=reactor)
        port = reactor.listenUDP(0, turn, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: turn.close().addErrback(lambda _: None))
        yield turn.allocate()
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable, ["-c", "import sys; from p2pnet.cli import main; sys.exit(main())",
                             "gateway", "call", "server.drain", "--url",
                             f"ws://127.0.0.1:{gateway.group(1)}/", "--data-dir", dataDir],
            env=dict(os.environ, PYTHONPATH=ROOT), path=ROOT)
        self.assertEqual(code, 0, err.decode())
        self.assertEqual(json.loads(out), {"draining": True, "remaining": {"turn": 1}})
        yield turn.close()
        ended = yield child.ended
        self.assertEqual(getattr(ended, "exitCode", None), 0, child.text())

