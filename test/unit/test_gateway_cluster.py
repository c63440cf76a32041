"""node.invoke across gateways (L{p2pnet.services.gateway_cluster}) with fakes."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.services.gateway_cluster import GatewayCluster, RemoteCaller
from p2pnet.stats import Stats


class Inbox:
    node = "gw-a"

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    def send(self, node: str, payload: dict[str, Any]) -> defer.Deferred[None]:
        self.sent.append((node, payload))
        return defer.succeed(None)

    def receive(self, timeout: int = 1) -> defer.Deferred[list[dict[str, Any]]]:
        return defer.Deferred()

    def close(self) -> None:
        self.closed = True


class Directory:
    def __init__(self) -> None:
        self.nodes: dict[str, str] = {}
        self.closed = False

    def up(self, nodeId: str, gateway: str) -> defer.Deferred[None]:
        self.nodes[nodeId] = gateway
        return defer.succeed(None)

    def down(self, nodeId: str, gateway: str) -> defer.Deferred[None]:
        if self.nodes.get(nodeId) == gateway:
            del self.nodes[nodeId]
        return defer.succeed(None)

    def where(self, nodeId: str) -> defer.Deferred[str | None]:
        return defer.succeed(self.nodes.get(nodeId))

    def close(self) -> None:
        self.closed = True


class GatewayClusterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.inbox, self.directory, self.stats = Inbox(), Directory(), Stats()
        self.invoked: list[tuple[Any, ...]] = []
        self.results: list[tuple[Any, ...]] = []
        self.refuse: dict | None = None

        def invokeHere(*args: Any) -> dict | None:
            self.invoked.append(args)
            return self.refuse

        self.cluster = GatewayCluster(Clock(), self.inbox, self.directory, self.stats,
                                      invokeHere, lambda *a: self.results.append(a))

    def test_directoryAndHolder(self) -> None:
        self.cluster.nodeUp("n1")
        self.assertIsNone(self.successResultOf(self.cluster.holder("n1")))  # here
        self.directory.nodes["n2"] = "gw-b"
        self.assertEqual(self.successResultOf(self.cluster.holder("n2")), "gw-b")
        self.cluster.nodeDown("n1")
        self.assertNotIn("n1", self.directory.nodes)

    def test_invokeAndResult(self) -> None:
        self.cluster.forwardInvoke("gw-b", "i1", "n2", "kvm.echo", {"x": 1}, 5.0)
        gateway, payload = self.inbox.sent[0]
        self.assertEqual((gateway, payload["kind"], payload["timeoutMs"]), ("gw-b", "invoke",
                                                                             5000))
        # At the other end: run it here, and answer through the caller.
        payload["from"] = "gw-b"
        self.cluster._received(payload)
        nodeId, command, params, timeout, caller, requestId = self.invoked[0]
        self.assertEqual((nodeId, command, params, timeout, requestId),
                         ("n2", "kvm.echo", {"x": 1}, 5.0, "i1"))
        self.assertIsInstance(caller, RemoteCaller)
        caller.respond("i1", {"echo": 1})
        self.assertEqual(self.inbox.sent[-1], ("gw-b", {"kind": "result", "invokeId": "i1",
                                                        "payload": {"echo": 1},
                                                        "error": None}))
        self.cluster._received(self.inbox.sent[-1][1])
        self.assertEqual(self.results, [("i1", {"echo": 1}, None)])

    def test_refusedAndBadMessages(self) -> None:
        self.refuse = {"code": "UNAVAILABLE", "message": "node not connected"}
        self.cluster._received({"kind": "invoke", "invokeId": "i9", "nodeId": "n",
                                "command": "c", "timeoutMs": 1000, "from": "gw-b"})
        self.assertEqual(self.inbox.sent[-1][1]["error"], self.refuse)
        self.cluster._received({"kind": "invoke"})
        self.assertEqual(self.stats.counters["cluster_bad_messages"], 1)
        self.cluster.stop()
        self.assertTrue(self.inbox.closed and self.directory.closed)
