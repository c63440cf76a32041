"""Tests for L{p2pnet.services.gateway_pairing}: pending requests and device tokens."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.gateway_frames import ClientInfo
from p2pnet.services.gateway_pairing import (
    MAX_PENDING_PAIRINGS,
    PAIRING_TTL,
    DevicePairing,
    MethodError,
)
from test.gateway_helpers import MemoryStore

CLIENT = ClientInfo("node-host", "1", "linux", "node")


class DevicePairingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore()
        self.announced: list[tuple[str, dict[str, Any]]] = []
        self.ids = iter(range(10**6))
        self.pairing = DevicePairing(self.clock, self.store, lambda: f"r{next(self.ids)}",
                                     lambda e, p: self.announced.append((e, p)))

    def ask(self, deviceId: str) -> str:
        return self.pairing.request(deviceId, "key", "node", (), CLIENT, "not-paired",
                                    "192.0.2.1").requestId

    def test_boundedAndListable(self) -> None:
        """More requests than the table holds: the oldest go, the rest list and expire
        (the table is a BoundedMap, which must not be iterated by values())."""
        for i in range(MAX_PENDING_PAIRINGS + 50):
            self.ask(f"d{i}")
        listing = self.pairing.listing()["pending"]
        self.assertEqual(len(listing), MAX_PENDING_PAIRINGS)
        self.assertEqual(listing[0]["deviceId"], "d50")
        self.clock.advance(PAIRING_TTL + 1)
        self.ask("late")
        self.assertEqual([p["deviceId"] for p in self.pairing.listing()["pending"]], ["late"])

    def test_oneRequestPerDevice(self) -> None:
        self.ask("d")
        second = self.ask("d")
        self.assertEqual([p.requestId for p in self.pairing.requests()], [second])

    def test_approveThenTokens(self) -> None:
        requestId = self.ask("d")
        approved: list[Any] = []
        self.pairing.approve(requestId).addCallback(approved.append)
        self.assertEqual(approved[0].roles, ("node",))
        self.assertEqual([e for e, _ in self.announced],
                         ["device.pair.requested", "device.pair.resolved"])
        self.assertRaises(MethodError, self.pairing.approve, requestId)
        token, written = self.pairing.tokenFor("d", "node", ())
        self.assertIsNotNone(written)
        self.assertEqual(self.pairing.tokenFor("d", "node", ()), (token, None))
        self.assertIsNone(self.pairing.verifyToken("d", "node", (), token.token))
        self.assertEqual(self.pairing.verifyToken("d", "node", (), "x"), "token-mismatch")
        rotated, _ = self.pairing.rotate("d", "node", None)
        self.assertNotEqual(rotated.token, token.token)
        self.assertIsNotNone(self.pairing.revoke("d", "node"))
        self.assertEqual(self.pairing.verifyToken("d", "node", (), rotated.token),
                         "token-revoked")
        self.assertIsNone(self.pairing.revoke("d", "operator"))
