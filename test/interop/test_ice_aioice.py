"""Interop: C{p2pnet ice} against PyPI aioice's ICE agent (C{test/interop/aioice_ice.py}),
each in its own process, lines piped between them: each side in each role, over host
candidates on loopback, through p2pnet's STUN server, and relay-only through p2pnet's
TURN server over UDP and TCP. The side that sends (C{--send}) counts the echoes of the
other (C{--echo}), so both agents send and receive on the selected pair.

A missing aioice skips these tests, except under C{CI}, where it fails.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from test.interop.ice_servers import PASSWORD, USER, LoopbackTurn, runPair

AIOICE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "aioice_ice.py")
P2PNET = [sys.executable, "-m", "p2pnet.cli", "ice", "--host", "127.0.0.1"]
AIOICE = [sys.executable, AIOICE_SCRIPT]
SEND = ["--send", "interop", "--count", "4", "--timeout", "20"]
ECHO = ["--echo", "--timeout", "20"]


class AioiceIceTests(unittest.TestCase):
    """p2pnet's agent and aioice's find each other and echo datagrams."""

    timeout = 90

    def setUp(self) -> None:
        if importlib.util.find_spec("aioice") is None:
            reason = "aioice is not installed (pip install -e '.[test]')"
            if os.environ.get("CI"):
                raise unittest.FailTest(f"{reason}; CI must have it")
            raise unittest.SkipTest(reason)

    @defer.inlineCallbacks
    def connectWith(self, p2pnetRole: str, extraP2pnet: list[str] = (),  # type: ignore[assignment]
            extraAioice: list[str] = (), types: str = "host host") -> Any:  # type: ignore[assignment]
        aioiceRole = "controlled" if p2pnetRole == "controlling" else "controlling"
        # The controlling side sends, the controlled one echoes.
        p2pnetMode = SEND if p2pnetRole == "controlling" else ECHO
        aioiceMode = SEND if aioiceRole == "controlling" else ECHO
        ours, theirs = yield runPair(
            self, P2PNET + ["--role", p2pnetRole, *p2pnetMode, *extraP2pnet],
            AIOICE + ["--role", aioiceRole, *aioiceMode, *extraAioice])
        self.assertIn(f"selected {types}\n", ours)
        self.assertIn(f"selected {types}\n", theirs)
        sender = ours if p2pnetRole == "controlling" else theirs
        self.assertIn("echoed 4/4\n", sender)
        return ours, theirs

    def test_hostControlling(self) -> Any:
        """p2pnet controlling, aioice controlled, host candidates."""
        return self.connectWith("controlling")

    def test_hostControlled(self) -> Any:
        """aioice controlling, p2pnet controlled, host candidates."""
        return self.connectWith("controlled")

    def _stun(self, role: str) -> Any:
        turn = LoopbackTurn(self)
        stun = ["--stun", f"127.0.0.1:{turn.udp}"]
        before = turn.bindings()

        @defer.inlineCallbacks
        def check() -> Any:
            ours, theirs = yield self.connectWith(role, stun, stun)
            # Both asked the STUN server (on loopback the answer is the host address).
            self.assertGreaterEqual(turn.bindings() - before, 2)

        return check()

    def test_stunControlling(self) -> Any:
        """Both ask p2pnet's STUN server; p2pnet controlling."""
        return self._stun("controlling")

    def test_stunControlled(self) -> Any:
        """Both ask p2pnet's STUN server; p2pnet controlled."""
        return self._stun("controlled")

    def _relay(self, role: str, transport: str) -> Any:
        turn = LoopbackTurn(self)
        port = turn.udp if transport == "udp" else turn.tcp
        common = ["--turn", f"127.0.0.1:{port}", "--turn-user", USER, "--turn-password",
                  PASSWORD, "--turn-transport", transport, "--relay-only"]
        return self.connectWith(role, common, common, types="relay relay")

    def test_relayUdpControlling(self) -> Any:
        """Relay-only through p2pnet's TURN server over UDP; p2pnet controlling."""
        return self._relay("controlling", "udp")

    def test_relayUdpControlled(self) -> Any:
        """Relay-only over UDP; p2pnet controlled."""
        return self._relay("controlled", "udp")

    def test_relayTcpControlling(self) -> Any:
        """Relay-only, allocations over TCP; p2pnet controlling."""
        return self._relay("controlling", "tcp")

    def test_relayTcpControlled(self) -> Any:
        """Relay-only, allocations over TCP; p2pnet controlled."""
        return self._relay("controlled", "tcp")
