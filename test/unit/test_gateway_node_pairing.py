"""Tests for L{p2pnet.services.gateway_node_pairing}: node pairing and pending work."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.gateway_frames import ClientInfo
from p2pnet.services.gateway_node_pairing import (
    MAX_WORK_ITEMS,
    NodePairing,
    NodeWork,
    approvalScopes,
)
from p2pnet.services.gateway_pairing import MethodError
from test.gateway_helpers import MemoryStore

CLIENT = ClientInfo("node-host", "2026.9.6", "linux", "node", displayName="vm")


class ApprovalScopesTests(SynchronousTestCase):
    def test_scopes(self) -> None:
        self.assertEqual(approvalScopes(()), ["operator.pairing"])
        self.assertEqual(approvalScopes(("system.which",)),
                         ["operator.pairing", "operator.write"])
        for command in ("system.run", "system.execApprovals.set", "system.execApprovals.x"):
            self.assertEqual(approvalScopes(("system.which", command)),
                             ["operator.pairing", "operator.admin"])


class ReconcileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.retargeted: list[Any] = []
        ids = iter(range(10**6))
        self.pairing = NodePairing(self.clock, self.store, lambda: f"n{next(ids)}",
                                   lambda e, p: self.events.append((e, p)),
                                   lambda n, c: self.retargeted.append((n, c)))

    def test_silentApproval(self) -> None:
        granted = self.pairing.reconcile("node", CLIENT, ("a", "b"), "127.0.0.1", silent=True)
        self.assertEqual(granted, ("a", "b"))
        self.assertEqual(self.store.nodes["node"].commands, ("a", "b"))
        self.assertEqual(self.events, [])

    def test_newCommandsWaitForApproval(self) -> None:
        self.pairing.reconcile("node", CLIENT, ("a",), None, silent=True)
        granted = self.pairing.reconcile("node", CLIENT, ("a", "c"), "192.0.2.1", silent=False)
        self.assertEqual(granted, ("a",))
        [(event, payload)] = self.events
        self.assertEqual((event, payload["commands"]), ("node.pair.requested", ["a", "c"]))
        # Asking again replaces the earlier request.
        self.pairing.reconcile("node", CLIENT, ("a", "c"), "192.0.2.1", silent=False)
        self.assertEqual(len(self.pairing.requests()), 1)

    def test_requestsExpire(self) -> None:
        self.pairing.reconcile("node", CLIENT, ("a",), None, silent=False)
        self.clock.advance(301)
        self.assertEqual(self.pairing.requests(), [])


class NodeWorkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        ids = iter(range(10**6))
        self.work = NodeWork(self.clock, lambda: f"w{next(ids)}")

    def test_dedupeExpireBound(self) -> None:
        first, deduped = self.work.enqueue("n", "status.request", "normal", None, None)
        self.assertFalse(deduped)
        self.assertEqual(self.work.enqueue("n", "status.request", "high", None, {})[0], first)
        self.work.enqueue("n", "short", "normal", 1000, {"x": 1})
        self.clock.advance(2)
        self.assertEqual([i["type"] for i in self.work.items("n")], ["status.request"])
        for i in range(MAX_WORK_ITEMS - 1):
            self.work.enqueue("n", f"t{i}", "normal", None, None)
        self.assertRaises(MethodError, self.work.enqueue, "n", "more", "normal", None, None)
        self.assertEqual(self.work.remove("n", [first["id"], "nope"]), MAX_WORK_ITEMS - 1)


class PendingWorkThroughGatewayTests(SynchronousTestCase):
    """C{node.pending.enqueue} by an operator, C{pull}/C{ack}/C{drain} by the node."""

    def setUp(self) -> None:
        from p2pnet.services.gateway import GatewayService
        from p2pnet.services.gateway_policy import AuthConfig
        from test.gateway_helpers import Device, FakeSink, connectParams, request

        self.request = request
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.service = GatewayService(clock=self.clock, store=MemoryStore(),
                                      auth=AuthConfig("token", token="t"))
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.device = Device()

        def connect(params: dict[str, Any], device: Device | None = None) -> Any:
            sink = FakeSink()
            session = self.service.openSession(sink, self.service.connectionInfo(
                "127.0.0.1", {}))
            session.opened()
            if device is not None:
                nonce = sink.events("connect.challenge")[0].payload["nonce"]
                params = dict(params, device=device.block(
                    nonce, int(self.clock.seconds() * 1000), params))
            session.frameReceived(request("c", "connect", params))
            self.assertTrue(sink.response("c").ok, sink.response("c"))
            return session, sink

        nodeParams = connectParams(role="node", clientId="node-host", mode="node", token="t")
        nodeParams["commands"] = ["system.which"]
        self.node = connect(nodeParams, self.device)
        self.op = connect(connectParams(scopes=["operator.write"], clientId="cli", mode="cli",
                                        token="t"))

    def call(self, who: Any, method: str, params: Any = None) -> Any:
        session, sink = who
        session.frameReceived(self.request(method + "-q", method, params))
        return sink.response(method + "-q")

    def test_queueThenPullAckDrain(self) -> None:
        queued = self.call(self.op, "node.pending.enqueue",
                           {"nodeId": self.device.id, "type": "status.request",
                            "payload": {"why": "test"}}).payload
        self.assertEqual((queued["deduped"], queued["queued"]["type"]),
                         (False, "status.request"))
        self.call(self.op, "node.pending.enqueue", {"nodeId": self.device.id, "type": "b"})
        pulled = self.call(self.node, "node.pending.pull", {}).payload
        self.assertEqual([(a["command"], a["paramsJSON"]) for a in pulled["actions"]],
                         [("status.request", '{"why": "test"}'), ("b", None)])
        acked = self.call(self.node, "node.pending.ack",
                          {"ids": [pulled["actions"][0]["id"]]}).payload
        self.assertEqual(acked["remainingCount"], 1)
        drained = self.call(self.node, "node.pending.drain", {"maxItems": 5}).payload
        self.assertEqual(([i["type"] for i in drained["items"]], drained["hasMore"]),
                         (["b"], False))
        self.assertEqual(self.call(self.node, "node.pending.pull", {}).payload["actions"], [])
        # Operators may not take a node's work; nodes may not queue it.
        self.assertFalse(self.call(self.op, "node.pending.drain", {}).ok)
        self.assertFalse(self.call(self.node, "node.pending.enqueue",
                                   {"nodeId": self.device.id, "type": "x"}).ok)
        unknown = self.call(self.op, "node.pending.enqueue", {"nodeId": "nope", "type": "x"})
        self.assertEqual(unknown.error["message"], "unknown nodeId")
