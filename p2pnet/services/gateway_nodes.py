# -*- test-case-name: test.unit.test_gateway_nodes -*-
"""The gateway's node registry and the C{node.invoke} requests waiting on nodes.

A node connection is registered under its node id once its handshake completes (a
newer connection with the same id takes the place) and forgotten when it closes. An
operator's C{node.invoke} is a L{PendingInvoke} with a timer, and it ends exactly once,
with one response to its caller: the node's result (L{NodeRegistry.finish}), the timeout
(C{TIMEOUT}), or the node's disconnect (C{UNAVAILABLE}). A caller that disconnects
first has its invokes dropped without an answer.

Method parameters and the events sent to nodes are L{p2pnet.services.gateway}'s
business; this module keeps the tables, the timers and the per-caller limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from p2pnet.codecs.gateway_frames import ErrorCode, errorShape
from p2pnet.stats import Stats

__all__ = ["MAX_INVOKES_PER_CALLER", "Caller", "NodeRegistry", "PendingInvoke"]

#: Pending invokes one operator connection may have.
MAX_INVOKES_PER_CALLER = 256

NodeT = TypeVar("NodeT")


class Caller(Protocol):
    """Who waits for an invoke's answer (an operator's session; hashable by identity)."""

    def respond(self, requestId: str, payload: Any = None, error: dict | None = None) -> None:
        """Answer request C{requestId}."""


@dataclass
class PendingInvoke:
    """An operator's C{node.invoke} waiting for the node's result."""

    id: str
    nodeId: str
    command: str
    caller: Caller
    requestId: str
    timer: IDelayedCall


class NodeRegistry(Generic[NodeT]):
    """Connected nodes by id, and the invokes sent to them.

    @param clock: runs the invoke timeouts.
    @param stats: counts C{invokes} and C{invoke_timeouts}.
    @ivar connected: the registered node connections by node id.
    @ivar invokes: the pending invokes by invoke id.
    """

    def __init__(self, clock: IReactorTime, stats: Stats,
                 maxPerCaller: int = MAX_INVOKES_PER_CALLER) -> None:
        self.clock = clock
        self.stats = stats
        self.maxPerCaller = maxPerCaller
        self.connected: dict[str, NodeT] = {}
        self.invokes: dict[str, PendingInvoke] = {}
        self._byCaller: dict[Caller, set[str]] = {}

    def add(self, nodeId: str, node: NodeT) -> None:
        """C{node} completed its handshake as C{nodeId}."""
        self.connected[nodeId] = node

    def canInvoke(self, caller: Caller) -> bool:
        """Whether C{caller} is below its limit of pending invokes."""
        return len(self._byCaller.get(caller, ())) < self.maxPerCaller

    def invoke(self, invokeId: str, nodeId: str, command: str, caller: Caller,
               requestId: str, timeout: float) -> PendingInvoke:
        """Wait up to C{timeout} seconds for the result of C{command} sent to C{nodeId}.

        Without a result by then, C{caller} gets a C{TIMEOUT} error for C{requestId}.
        """
        timer = self.clock.callLater(timeout, self._timedOut, invokeId)
        pending = PendingInvoke(invokeId, nodeId, command, caller, requestId, timer)
        self.invokes[invokeId] = pending
        self._byCaller.setdefault(caller, set()).add(invokeId)
        self.stats.add("invokes")
        return pending

    def awaiting(self, invokeId: str, nodeId: str) -> PendingInvoke | None:
        """The pending invoke C{invokeId} if it went to C{nodeId}, else C{None}."""
        pending = self.invokes.get(invokeId)
        if pending is None or pending.nodeId != nodeId:
            return None
        return pending

    def finish(self, pending: PendingInvoke, payload: Any = None,
               error: dict | None = None) -> None:
        """End C{pending}: its caller gets C{payload}, or C{error}."""
        self._forget(pending)
        pending.caller.respond(pending.requestId, payload, error)

    def disconnected(self, session: Caller, nodeId: str | None) -> None:
        """C{session} closed: drop the invokes it waits for, unanswered; if it is the
        node registered as C{nodeId}, forget it and fail the invokes sent to it."""
        for invokeId in list(self._byCaller.get(session, ())):
            self._forget(self.invokes[invokeId])
        if nodeId is None or self.connected.get(nodeId) is not session:
            return
        del self.connected[nodeId]
        for pending in [p for p in self.invokes.values() if p.nodeId == nodeId]:
            self.finish(pending, error=errorShape(
                ErrorCode.UNAVAILABLE, f"node disconnected ({pending.command})"))

    def _forget(self, pending: PendingInvoke) -> None:
        del self.invokes[pending.id]
        waiting = self._byCaller[pending.caller]
        waiting.discard(pending.id)
        if not waiting:
            del self._byCaller[pending.caller]
        if pending.timer.active():
            pending.timer.cancel()

    def _timedOut(self, invokeId: str) -> None:
        # An invoke that ended earlier had its timer cancelled, so this one is pending.
        self.stats.add("invoke_timeouts")
        self.finish(self.invokes[invokeId],
                    error=errorShape("TIMEOUT", "node invoke timed out"))
