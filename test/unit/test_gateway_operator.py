"""Tests for L{p2pnet.services.gateway_operator} and its wiring in L{p2pnet.app}."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pnet import Config, buildService
from p2pnet.services.gateway_operator import jsonRow
from p2pnet.testing import UDPMemoryReactor


@dataclass(frozen=True)
class Row:
    id: str
    address: tuple[str, int]


class JsonRowTests(SynchronousTestCase):
    def test_dataclassesAndTuples(self) -> None:
        self.assertEqual(jsonRow([Row("1", ("::1", 5))]),
                         [{"id": "1", "address": ["::1", 5]}])
        self.assertEqual(jsonRow({"a": (1, Row("x", ("h", 1)))}),
                         {"a": [1, {"id": "x", "address": ["h", 1]}]})


class WiringTests(SynchronousTestCase):
    """L{p2pnet.app} hands the gateway the lists of the services it built."""

    def gatewayMethods(self, services: tuple[str, ...]) -> tuple[str, ...]:
        reactor = UDPMemoryReactor()
        root = buildService(Config(services=services, listen=("127.0.0.1",),
                                   data_dir=self.mktemp()), reactor)
        return root.getServiceNamed("gateway").advertisedMethods()

    def test_withRustDesk(self) -> None:
        methods = self.gatewayMethods(("rendezvous", "relay", "gateway"))
        self.assertIn("rendezvous.peers.list", methods)
        self.assertIn("relay.pairs.list", methods)
        self.assertNotIn("turn.allocations.list", methods)

    def test_withTurn(self) -> None:
        methods = self.gatewayMethods(("stun", "turn", "gateway"))
        for method in ("turn.allocations.list", "turn.users.list", "turn.users.add",
                       "turn.users.remove"):
            self.assertIn(method, methods)
        self.assertNotIn("relay.pairs.list", methods)

    def test_gatewayAlone(self) -> None:
        methods = self.gatewayMethods(("gateway",))
        self.assertNotIn("rendezvous.peers.list", methods)
        self.assertNotIn("relay.pairs.list", methods)


class Owner:
    """A sibling service as the operator interfaces see it."""

    def __init__(self) -> None:
        self.running = True
        self.name = "turn"
        self.users: dict[str, str] = {}

    def rows(self, offset: int, limit: int) -> Deferred[list[dict[str, str]]]:
        names = sorted(self.users)[offset:offset + limit]
        return succeed([{"name": n} for n in names])

    def add(self, params: Mapping[str, Any]) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string")
        new = name not in self.users
        self.users[name] = "x"
        return {"name": name, "created": new}


class ActionAndDeferredTests(SynchronousTestCase):
    def setUp(self) -> None:
        from p2pnet.services.gateway import GatewayService
        from p2pnet.services.gateway_operator import OperatorAction, OperatorListing
        from p2pnet.services.gateway_policy import AuthConfig
        from test.gateway_helpers import FakeSink, MemoryStore, connectParams, request

        self.request = request
        self.owner = Owner()
        self.service = GatewayService(clock=Clock(), store=MemoryStore(),
                                      auth=AuthConfig("token", token="t"))
        self.service.provideListing("turn.users.list", OperatorListing(self.owner,
                                                                       self.owner.rows))
        self.service.provideAction("turn.users.add", OperatorAction(self.owner, self.owner.add))
        self.service.startService()
        self.addCleanup(self.service.stopService)

        def connect(scopes: list[str]) -> Any:
            sink = FakeSink()
            session = self.service.openSession(sink, self.service.connectionInfo(
                "127.0.0.1", {}))
            session.opened()
            session.frameReceived(request("c", "connect", connectParams(
                scopes=scopes, clientId="cli", mode="cli", token="t")))
            self.assertTrue(sink.response("c").ok)
            return session, sink

        self.admin = connect(["operator.admin"])
        self.reader = connect(["operator.read"])

    def call(self, who: Any, method: str, params: Any = None) -> Any:
        session, sink = who
        session.frameReceived(self.request(method + "-q", method, params))
        return sink.response(method + "-q")

    def test_addThenList(self) -> None:
        self.assertEqual(self.call(self.admin, "turn.users.add", {"name": "bob"}).payload,
                         {"name": "bob", "created": True})
        self.call(self.admin, "turn.users.add", {"name": "amy"})
        listed = self.call(self.reader, "turn.users.list", {"limit": 1}).payload
        self.assertEqual((listed["items"], listed["nextOffset"]), ([{"name": "amy"}], 1))

    def test_mistakesAndScopes(self) -> None:
        error = self.call(self.admin, "turn.users.add", {"name": ""}).error
        self.assertEqual((error["code"], error["message"]),
                         ("INVALID_REQUEST", "name must be a non-empty string"))
        self.assertEqual(self.call(self.reader, "turn.users.add", {"name": "x"})
                         .error["details"]["missingScope"], "operator.admin")
        self.owner.running = False
        self.assertEqual(self.call(self.admin, "turn.users.add", {"name": "x"})
                         .error["details"]["code"], "SERVICE_NOT_RUNNING")
        self.assertEqual(self.owner.users, {})
