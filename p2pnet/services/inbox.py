# -*- test-case-name: test.unit.test_rendezvous_cluster,test.unit.test_gateway_cluster -*-
"""L{InboxReader}: one node's loop over its inbox in a shared store (the rendezvous
servers' and the gateways' messages to each other, docs/cluster.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

__all__ = ["Inbox", "InboxReader", "RETRY"]

#: Seconds to wait before reading the inbox again after a failure.
RETRY = 1.0


class Inbox(Protocol):
    """Messages to and from the other nodes (L{p2pnet.store.redis.RedisInbox})."""

    node: str

    def send(self, node: str, payload: dict[str, Any]) -> Deferred[None]:
        """Queue C{payload} for C{node}."""

    def receive(self, timeout: int = 1) -> Deferred[list[dict[str, Any]]]:
        """The messages waiting for this node, oldest first, once there is one; an
        empty list after C{timeout} seconds without any."""

    def close(self) -> None:
        """Release the connections."""


class InboxReader:
    """Reads C{inbox} until L{stop}, handing each message to C{handle} in order; a
    failed read is reported to C{failed} and retried after L{RETRY}."""

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
        d.addCallback(self._handleAll)
        d.addCallbacks(lambda _: self._next(), self._readFailed)

    def _handleAll(self, payloads: list[dict[str, Any]]) -> None:
        """Hand each message over; one that fails is reported and the rest still go."""
        for payload in payloads:
            if not self.running:
                return
            try:
                self.handle(payload)
            except Exception:
                self.failed(Failure())

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
