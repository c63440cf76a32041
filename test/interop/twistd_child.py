# -*- test-case-name: test.interop.test_logformat,test.interop.test_metrics_process,test.interop.test_stun_clients,test.interop.test_drain -*-
"""A real C{twistd -n p2pnet} child for tests: start it, wait for a log line, stop it."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from twisted.internet import defer, error, protocol, reactor
from twisted.python.failure import Failure

from p2pnet.protocols.nat_discovery import bindingRequest
from p2pnet.protocols.stun_client import StunClientProtocol

#: Seconds the child may take to start or to stop.
TIMEOUT = 30.0


def twistdArgv() -> list[str]:
    """The command starting this venv's twistd."""
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [sys.executable, script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class TwistdChild(protocol.ProcessProtocol):
    """C{twistd -n --pidfile= --logfile=- p2pnet ARGS}; L{output} is its stdout+stderr."""

    def __init__(self, args: list[str], ready: bytes = b"listening on",
                 env: dict[str, str] | None = None) -> None:
        self.argv = [*twistdArgv(), "-n", "--pidfile=", "--logfile=-", "p2pnet", *args]
        self.env = dict(os.environ, **(env or {}))
        self.readyMark = ready
        self.output = b""
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[BaseException] = defer.Deferred()
        self.process: Any = None

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.ready.called and self.readyMark in self.output:
            self.ready.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError(
                f"twistd ended before {self.readyMark!r}:\n{self.text()}"))
        self.ended.callback(reason.value)

    def text(self) -> str:
        """The output so far, decoded."""
        return self.output.decode(errors="replace")

    @defer.inlineCallbacks
    def answering(self) -> Any:
        """Fire once the child answers a STUN Binding on its first logged UDP port: its
        reactor runs (a signal sent earlier may find twistd's handlers not yet set)."""
        found = re.search(r"udp ([0-9.]+):([0-9]+)", self.text())
        assert found, self.text()
        client = StunClientProtocol(rto=0.25)
        port = reactor.listenUDP(0, client, interface="127.0.0.1")  # type: ignore[attr-defined]
        try:
            yield client.request(bindingRequest(), (found.group(1), int(found.group(2))))
        finally:
            yield port.stopListening()

    def kill(self) -> None:
        """SIGKILL, if it still runs."""
        try:
            self.process.signalProcess("KILL")
        except (error.ProcessExitedAlready, AttributeError):
            pass

    @defer.inlineCallbacks
    def start(self, testCase: Any) -> Any:
        """Spawn; fire once the ready mark is logged (SIGKILL after L{TIMEOUT})."""
        self.process = reactor.spawnProcess(  # type: ignore[attr-defined]
            self, self.argv[0], self.argv, env=self.env)
        testCase.addCleanup(self._reap)
        timer = reactor.callLater(TIMEOUT, self.kill)  # type: ignore[attr-defined]
        try:
            yield self.ready
        finally:
            if timer.active():
                timer.cancel()

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """SIGTERM; fire with how it ended (SIGKILL after L{TIMEOUT})."""
        try:
            self.process.signalProcess("TERM")
        except error.ProcessExitedAlready:
            pass
        timer = reactor.callLater(TIMEOUT, self.kill)  # type: ignore[attr-defined]
        try:
            ended = yield self.ended
        finally:
            if timer.active():
                timer.cancel()
        return ended

    def _reap(self) -> defer.Deferred[BaseException] | None:
        if self.ended.called:
            return None
        self.kill()
        return self.ended
