"""Tests for L{p2pnet.services.gateway_nodes}: the node registry and pending invokes."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.services.gateway_nodes import NodeRegistry
from p2pnet.stats import Stats


class Session:
    """A caller (or node) that records the responses it is sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.responses: list[tuple[str, Any, dict | None]] = []

    def respond(self, requestId: str, payload: Any = None, error: dict | None = None) -> None:
        self.responses.append((requestId, payload, error))


class NodeRegistryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.stats = Stats()
        self.registry: NodeRegistry[Session] = NodeRegistry(self.clock, self.stats,
                                                            maxPerCaller=2)
        self.node = Session("node")
        self.registry.add("n1", self.node)
        self.op = Session("operator")

    def invoke(self, invokeId: str = "i1", nodeId: str = "n1", caller: Session | None = None,
               timeout: float = 30.0) -> Any:
        return self.registry.invoke(invokeId, nodeId, "system.which", caller or self.op,
                                    "r-" + invokeId, timeout)

    def test_newerConnectionTakesThePlace(self) -> None:
        newer = Session("node again")
        self.registry.add("n1", newer)
        self.assertIs(self.registry.connected["n1"], newer)
        self.registry.disconnected(self.node, "n1")
        self.assertIs(self.registry.connected["n1"], newer)

    def test_resultAnswersOnce(self) -> None:
        pending = self.invoke()
        self.assertIs(self.registry.awaiting("i1", "n1"), pending)
        self.registry.finish(pending, {"ok": True})
        self.assertEqual(self.op.responses, [("r-i1", {"ok": True}, None)])
        self.assertEqual((self.registry.invokes, self.clock.getDelayedCalls()), ({}, []))
        self.assertIsNone(self.registry.awaiting("i1", "n1"))
        self.assertEqual(self.stats.snapshot()["invokes"], 1)

    def test_awaitingChecksTheNode(self) -> None:
        self.invoke()
        self.assertIsNone(self.registry.awaiting("i1", "n2"))
        self.assertIsNone(self.registry.awaiting("i2", "n1"))

    def test_timeout(self) -> None:
        self.invoke(timeout=5.0)
        self.clock.advance(4.9)
        self.assertEqual(self.op.responses, [])
        self.clock.advance(0.1)
        [(requestId, payload, error)] = self.op.responses
        self.assertEqual((requestId, payload, error["code"], error["message"]),
                         ("r-i1", None, "TIMEOUT", "node invoke timed out"))
        self.assertEqual(self.registry.invokes, {})
        self.assertEqual(self.stats.snapshot()["invoke_timeouts"], 1)

    def test_nodeDisconnectFailsItsInvokes(self) -> None:
        other = Session("other node")
        self.registry.add("n2", other)
        self.invoke("i1", "n1")
        self.invoke("i2", "n2")
        self.registry.disconnected(self.node, "n1")
        self.assertNotIn("n1", self.registry.connected)
        [(requestId, _, error)] = self.op.responses
        self.assertEqual((requestId, error["code"], error["message"]),
                         ("r-i1", "UNAVAILABLE", "node disconnected (system.which)"))
        self.assertEqual(list(self.registry.invokes), ["i2"])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_callerDisconnectDropsUnanswered(self) -> None:
        self.invoke("i1")
        self.invoke("i2")
        self.registry.disconnected(self.op, None)
        self.assertEqual((self.op.responses, self.registry.invokes), ([], {}))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(self.registry.canInvoke(self.op))

    def test_limitPerCaller(self) -> None:
        other = Session("other operator")
        first = self.invoke("i1")
        self.invoke("i2")
        self.assertFalse(self.registry.canInvoke(self.op))
        self.assertTrue(self.registry.canInvoke(other))
        self.registry.finish(first, {})
        self.assertTrue(self.registry.canInvoke(self.op))
