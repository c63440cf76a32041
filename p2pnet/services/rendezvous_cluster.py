# -*- test-case-name: test.unit.test_rendezvous_cluster,test.interop.test_cluster_redis -*-
"""Routing across rendezvous nodes that share a store (docs/cluster.md).

A controller's request may reach node B while its target registered with node A. B
builds the message the target must get (PunchHole, FetchLocalAddr, RequestRelay: the
controller's address mangled in, as if A had) and sends it to A's inbox; A delivers it
to its peer and remembers that answers carrying that mangled address belong to B. The
peer's answer (PunchHoleSent, LocalAddr, RelayResponse) arrives at A, which sends it back
to B with the peer's address as A saw it; B answers its controller exactly as for a
local peer. Which node holds which peer is the presence table
(L{p2pnet.services.rendezvous_registry.Presence}); the inboxes are L{Inbox}.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from p2pnet.boundedmap import BoundedMap
from p2pnet.codecs.proto.rendezvous_pb2 import RendezvousMessage
from p2pnet.ratelog import RateLimitedLog
from p2pnet.services.inbox import Inbox, InboxReader
from p2pnet.stats import Stats

__all__ = ["ClusterRoutes", "Locator", "RemoteLink"]

log = Logger()

#: Requests delivered for other nodes whose answers are still expected.
MAX_REMOTE_REQUESTERS = 10000


class Locator(Protocol):
    """Which node holds a peer (L{p2pnet.store.redis.RedisPeerStore.where})."""

    def where(self, peerId: str) -> Deferred[tuple[str, tuple[str, int]] | None]:
        """The holding node and the peer's address there, or C{None}."""


class RemoteLink:
    """A peer's connection to another node, as the router sees its forwarded answer:
    only its address (for the reply's mangled address and the LAN check)."""

    ws = False

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer

    def send(self, message: RendezvousMessage) -> None:
        """Nothing goes back over a forwarded answer's link."""

    def close(self) -> None:
        """Nothing to close."""


def _encode(message: RendezvousMessage) -> str:
    return base64.b64encode(message.SerializeToString()).decode()


def _decode(text: str) -> RendezvousMessage:
    return RendezvousMessage.FromString(base64.b64decode(text))


class ClusterRoutes:
    """This node's side of cross-node routing.

    @param deliver: hands a message to a peer registered here (C{False}: not online).
    @param answered: handles a target's answer forwarded back here, with the link it
        came over at the other node (L{RemoteLink}).
    """

    def __init__(self, clock: IReactorTime, inbox: Inbox, locator: Locator, stats: Stats,
                 deliver: Callable[[str, RendezvousMessage], bool],
                 answered: Callable[[RendezvousMessage, RemoteLink], None]) -> None:
        self.clock = clock
        self.inbox = inbox
        self.locator = locator
        self.stats = stats
        self.deliver = deliver
        self.answered = answered
        #: Mangled controller address -> the node waiting for the answer.
        self.remoteRequesters: BoundedMap[bytes, str] = BoundedMap(MAX_REMOTE_REQUESTERS)
        self.badInput = RateLimitedLog(log, clock)
        self.reader = InboxReader(clock, inbox, self._received, lambda f: self._failed(
            "cannot read this node's inbox: {error}", f))

    @property
    def node(self) -> str:
        """This node's name."""
        return self.inbox.node

    def holder(self, peerId: str) -> Deferred[tuple[str, tuple[str, int]] | None]:
        """The other node holding C{peerId}, and the peer's address there; C{None} when
        no node does, or this one (a failing store counts as none)."""

        def other(found: tuple[str, tuple[str, int]] | None) -> Any:
            return found if found is not None and found[0] != self.node else None

        def failed(failure: Any) -> None:
            self._failed("cannot read presence from the store: {error}", failure)

        return self.locator.where(peerId).addCallbacks(other, failed)

    def forwardRequest(self, node: str, peerId: str, message: RendezvousMessage) -> None:
        """Send C{message} for C{peerId} to the node holding it."""
        self.stats.add("cluster_forwarded")
        self.inbox.send(node, {"kind": "deliver", "id": peerId, "from": self.node,
                               "message": _encode(message)}).addErrback(
            lambda f: self._failed("cannot reach node {node}: {error}", f, node=node))

    def forwardAnswer(self, mangled: bytes, message: RendezvousMessage,
                      peer: tuple[str, int]) -> bool:
        """If C{mangled} names a controller waiting at another node, send it C{message}
        (a target's answer, from C{peer}) there and return C{True}."""
        node = self.remoteRequesters.pop(mangled, None)
        if node is None:
            return False
        self.stats.add("cluster_answers_forwarded")
        self.inbox.send(node, {"kind": "answer", "from": self.node, "peer": list(peer),
                               "message": _encode(message)}).addErrback(
            lambda f: self._failed("cannot reach node {node}: {error}", f, node=node))
        return True

    def _received(self, payload: dict[str, Any]) -> None:
        try:
            kind = payload["kind"]
            message = _decode(payload["message"])
            if kind == "deliver":
                union = message.WhichOneof("union")
                sub = getattr(message, union) if union else None
                mangled = bytes(getattr(sub, "socket_addr", b""))
                if self.deliver(str(payload["id"]), message):
                    self.remoteRequesters[mangled] = str(payload["from"])
                else:
                    self.stats.add("cluster_undeliverable")
            elif kind == "answer":
                host, port = payload["peer"]
                self.answered(message, RemoteLink((str(host), int(port))))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            self.stats.add("cluster_bad_messages")
            self.badInput.warn("cluster-inbox", "bad message from another node: {error}",
                               error=str(e))

    # -- the inbox loop ------------------------------------------------------------------

    def start(self) -> None:
        """Read the inbox until L{stop}."""
        self.reader.start()

    def stop(self) -> None:
        """Stop reading and close the inbox."""
        self.reader.stop()

    def _failed(self, text: str, failure: Any, **fields: Any) -> None:
        self.stats.add("cluster_errors")
        self.badInput.warn("cluster", text, error=failure.getErrorMessage(), **fields)

