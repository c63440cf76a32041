"""Tests for L{p2pnet.services.gateway_operator} and its wiring in L{p2pnet.app}."""

from __future__ import annotations

from dataclasses import dataclass

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

    def test_gatewayAlone(self) -> None:
        methods = self.gatewayMethods(("gateway",))
        self.assertNotIn("rendezvous.peers.list", methods)
        self.assertNotIn("relay.pairs.list", methods)
