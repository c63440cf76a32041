# -*- test-case-name: test.unit.test_rendezvous_cluster,test.unit.test_gateway_cluster -*-
"""L{InboxReader}: one node's loop over its inbox in a shared store (the rendezvous
servers' and the gateways' messages to each other, docs/cluster.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

__all__ = ["Inbox", "InboxReader", "RETRY"]

#: Seconds to wait before reading the inbox again after a failure.
RETRY = 1.0


class Inbox(Protocol):
    """Messages to and from the other nodes (L{p2pnet.store.redis.RedisInbox})."""

    node: str

    def send(self, node: str, payload: dict[str, Any]) -> Deferred[None]:
        """Queue C{payload} for C{node}."""

    def receive(self, timeout: int = 1) -> Deferred[dict[str, Any] | None]:
        """The next message for this node, or C{None} after C{timeout} seconds."""

    def close(self) -> None:
        """Release the connections."""


class InboxReader:
    """Reads C{inbox} one message after another until L{stop}, handing each to
    C{handle}; a failed read is reported to C{failed} and retried after L{RETRY}."""

    def __init__(self, clock: IReactorTime, inbox: Inbox,
                 handle: Callable[[dict[str, Any]], None],
                 failed: Callable[[Any], None]) -> None:
        self.clock = clock
        self.inbox = inbox
        self.handle = handle
        self.failed = failed
        self.running = False
        self._retry: Any = None

    def start(self) -> None:
        """Read until L{stop}."""
        self.running = True
        self._next()

    def _next(self) -> None:
        self._retry = None
        if not self.running:
            return
        d = self.inbox.receive()
        d.addCallback(lambda payload: payload is not None and self.handle(payload))
        d.addCallbacks(lambda _: self._next(), self._readFailed)

    def _readFailed(self, failure: Any) -> None:
        self.failed(failure)
        if self.running:
            self._retry = self.clock.callLater(RETRY, self._next)

    def stop(self) -> None:
        """Stop reading and close the inbox."""
        self.running = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self.inbox.close()
