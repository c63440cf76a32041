# -*- test-case-name: test.unit.test_node_nat -*-
"""The node's NAT type, from RustDesk's NAT test against its rendezvous server.

RustDesk runs the test when it starts (rustdesk.md §4.12): a node behind a symmetric NAT
cannot be reached by a TCP punch, so it answers every PunchHole with the relay at once
instead of making the controller wait for a punch that cannot work (rustdesk.md §6.2
step 3), and it tells controllers its type in PunchHoleSent. Until the test has an
answer the type is UNKNOWN_NAT, which is treated as punchable, as RustDesk does. Over
WebSocket no test is run: that mode always relays (rustdesk.md §4.12 step 4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from p2pnet.codecs.proto.rendezvous_pb2 import NatType
from p2pnet.protocols.rustdesk_client import natTestPorts

__all__ = ["NAT_TEST_TIMEOUT", "NatTest", "natTypeName"]

log = Logger()

#: Seconds the whole test (two connections, two answers) may take.
NAT_TEST_TIMEOUT = 10.0


def natTypeName(natType: int) -> str:
    """C{"asymmetric"}, C{"symmetric"} or C{"unknown"} (for C{kvm.status})."""
    if natType == NatType.ASYMMETRIC:
        return "asymmetric"
    if natType == NatType.SYMMETRIC:
        return "symmetric"
    return "unknown"


class NatTest:
    """Runs the NAT test and keeps its answer in L{natType}.

    @param reactor: clock and sockets.
    @param server: the rendezvous server's host and TCP port.
    @param natPort: its NAT-test port (default: the TCP port - 1, as on every server).
    @param probe: runs the test (default L{natTestPorts}); tests pass a fake.
    """

    def __init__(self, reactor: Any, server: tuple[str, int], natPort: int | None = None,
                 probe: Callable[..., Deferred[Any]] = natTestPorts) -> None:
        self.reactor = reactor
        self.server = server
        self.natPort = natPort
        self.probe = probe
        self.natType: int = NatType.UNKNOWN_NAT
        self._running: Deferred[Any] | None = None

    def run(self) -> Deferred[int]:
        """Test now (a test in progress is cancelled first); fires with the type, which
        stays as it was when the test fails."""
        self.cancel()
        host, port = self.server
        d = self.probe(self.reactor, host, port, self.natPort or port - 1)
        d.addTimeout(NAT_TEST_TIMEOUT, self.reactor)
        self._running = d
        return d.addCallbacks(self._measured, self._failed).addBoth(self._finished)

    def cancel(self) -> None:
        """Stop a test in progress."""
        running, self._running = self._running, None
        if running is not None:
            running.cancel()

    def _measured(self, result: tuple[tuple[str, int], int, int]) -> int:
        _, first, second = result
        self.natType = NatType.ASYMMETRIC if first == second else NatType.SYMMETRIC
        log.info("NAT test: {kind} (the rendezvous server saw source ports {a} and {b})",
                 kind=natTypeName(self.natType), a=first, b=second)
        return self.natType

    def _failed(self, failure: Any) -> int:
        if self._running is None:  # cancelled: a newer test or the node stopping
            return self.natType
        log.info("NAT test failed ({why}); NAT type stays {kind}",
                 why=failure.getErrorMessage() or failure.type.__name__,
                 kind=natTypeName(self.natType))
        return self.natType

    def _finished(self, natType: int) -> int:
        self._running = None
        return natType
