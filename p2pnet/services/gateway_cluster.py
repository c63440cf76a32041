# -*- test-case-name: test.unit.test_gateway_cluster,test.interop.test_cluster_redis -*-
"""C{node.invoke} across the gateways of a cluster (docs/cluster.md).

Each gateway records, in the shared store, the nodes connected to it. An operator's
C{node.invoke} at gateway B for a node connected to gateway A is authorized at B (the
operator's scopes), waits there as any invoke does (its timer, its limits), and goes to
A's inbox; A sends it to its node as if its own operator had asked — A's node pairing
still decides which commands the node may run — and the node's result goes back to B's
inbox, which answers the operator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from p2pnet.ratelog import RateLimitedLog
from p2pnet.services.inbox import Inbox, InboxReader
from p2pnet.stats import Stats

__all__ = ["GatewayCluster", "NodeDirectory", "RemoteCaller"]

log = Logger()


class NodeDirectory(Protocol):
    """Which gateway holds which node (L{p2pnet.store.redis.RedisGatewayNodes})."""

    def up(self, nodeId: str, gateway: str) -> Deferred[None]:
        """C{nodeId} connected to C{gateway}."""

    def down(self, nodeId: str, gateway: str) -> Deferred[None]:
        """C{nodeId} left C{gateway}."""

    def where(self, nodeId: str) -> Deferred[str | None]:
        """The gateway C{nodeId} is connected to, or C{None}."""

    def close(self) -> None:
        """Release the connection."""


class RemoteCaller:
    """The operator at another gateway, as the node registry's caller: its answer goes
    back to that gateway's inbox."""

    def __init__(self, cluster: GatewayCluster, gateway: str) -> None:
        self.cluster = cluster
        self.gateway = gateway

    def respond(self, requestId: str, payload: Any = None, error: dict | None = None) -> None:
        """Send the node's result for invoke C{requestId} back."""
        self.cluster.send(self.gateway, {"kind": "result", "invokeId": requestId,
                                         "payload": payload, "error": error})


class GatewayCluster:
    """This gateway's side of cross-gateway invokes.

    @param invokeHere: runs an invoke that arrived from another gateway on a node
        connected here: C{(nodeId, command, params, timeout, caller, invokeId)}; returns
        an error dict when it cannot.
    @param finished: ends the local pending invoke C{invokeId} with a payload or error.
    """

    def __init__(self, clock: IReactorTime, inbox: Inbox, directory: NodeDirectory,
                 stats: Stats,
                 invokeHere: Callable[[str, str, Any, float, RemoteCaller, str],
                                      dict | None],
                 finished: Callable[[str, Any, dict | None], None]) -> None:
        self.clock = clock
        self.inbox = inbox
        self.directory = directory
        self.stats = stats
        self.invokeHere = invokeHere
        self.finished = finished
        self.badInput = RateLimitedLog(log, clock)
        self.reader = InboxReader(clock, inbox, self._received, lambda f: self._failed(
            "cannot read this gateway's inbox: {error}", f))

    @property
    def name(self) -> str:
        """This gateway's name in the cluster."""
        return self.inbox.node

    def nodeUp(self, nodeId: str) -> None:
        """A node completed its handshake here."""
        self.directory.up(nodeId, self.name).addErrback(
            lambda f: self._failed("cannot record node {node}: {error}", f, node=nodeId))

    def nodeDown(self, nodeId: str) -> None:
        """A node connected here left."""
        self.directory.down(nodeId, self.name).addErrback(
            lambda f: self._failed("cannot forget node {node}: {error}", f, node=nodeId))

    def holder(self, nodeId: str) -> Deferred[str | None]:
        """The other gateway C{nodeId} is connected to, or C{None}."""

        def other(gateway: str | None) -> str | None:
            return gateway if gateway and gateway != self.name else None

        def failed(failure: Any) -> None:
            self._failed("cannot read the node directory: {error}", failure)

        return self.directory.where(nodeId).addCallbacks(other, failed)

    def forwardInvoke(self, gateway: str, invokeId: str, nodeId: str, command: str,
                      params: Any, timeout: float) -> None:
        """Send an invoke waiting here (as C{invokeId}) to the gateway holding the node."""
        self.stats.add("cluster_invokes_forwarded")
        self.send(gateway, {"kind": "invoke", "invokeId": invokeId, "nodeId": nodeId,
                            "command": command, "params": params,
                            "timeoutMs": int(timeout * 1000), "from": self.name})

    def send(self, gateway: str, payload: dict[str, Any]) -> None:
        """Push C{payload} onto C{gateway}'s inbox (a failure is logged, bounded)."""
        self.inbox.send(gateway, payload).addErrback(
            lambda f: self._failed("cannot reach gateway {gateway}: {error}", f,
                                   gateway=gateway))

    def _received(self, payload: dict[str, Any]) -> None:
        try:
            kind = payload["kind"]
            if kind == "invoke":
                caller = RemoteCaller(self, str(payload["from"]))
                error = self.invokeHere(
                    str(payload["nodeId"]), str(payload["command"]), payload.get("params"),
                    int(payload["timeoutMs"]) / 1000, caller, str(payload["invokeId"]))
                if error is not None:
                    caller.respond(str(payload["invokeId"]), None, error)
            elif kind == "result":
                error = payload.get("error")
                self.finished(str(payload["invokeId"]), payload.get("payload"),
                              error if isinstance(error, dict) else None)
        except (KeyError, TypeError, ValueError) as e:
            self.stats.add("cluster_bad_messages")
            self.badInput.warn("gateway-inbox", "bad message from another gateway: {error}",
                               error=str(e))

    def start(self) -> None:
        """Read the inbox until L{stop}."""
        self.reader.start()

    def stop(self) -> None:
        """Stop reading; close the inbox and the directory."""
        self.reader.stop()
        self.directory.close()

    def _failed(self, text: str, failure: Any, **fields: Any) -> None:
        self.stats.add("cluster_errors")
        self.badInput.warn("gateway-cluster", text, error=failure.getErrorMessage(),
                           **fields)
