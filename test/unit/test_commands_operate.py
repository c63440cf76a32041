"""The session commands' tables, targets and routing (L{p2pnet.commands.operate}), and
the service-side kill actions, without a gateway."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.cli import buildParser
from p2pnet.commands.operate import (
    _killTarget,
    formatTable,
    pairRows,
    peerRows,
    turnSessionRows,
)
from p2pnet.services.turn import killAllocations

ROW = {"user": "amy", "client": "192.0.2.7:5000", "transport": "udp",
       "relayed": ["198.51.100.1:50000"], "age": 130.2, "expiresIn": 400.0,
       "bytesToPeers": 2500, "packetsToPeers": 3, "bytesFromPeers": 12, "packetsFromPeers": 1,
       "permissions": ["192.0.2.9"], "channels": []}


class TableTests(SynchronousTestCase):
    def test_aligned(self) -> None:
        self.assertEqual(formatTable([("a", "bbb"), ("cc", "d")], ("X", "Y")),
                         "X   Y\na   bbb\ncc  d\n")

    def test_turnSessions(self) -> None:
        lines = turnSessionRows([ROW]).splitlines()
        self.assertEqual(lines[1].split(), ["amy", "192.0.2.7:5000", "udp",
                                            "198.51.100.1:50000", "2m", "2.5", "kB", "12",
                                            "B", "1", "0"])

    def test_peersAndPairs(self) -> None:
        peers = peerRows([{"id": "123456789", "address": ["192.0.2.7", 21116],
                           "lastSeen": 3.2, "transport": "tcp"}])
        self.assertEqual(peers.splitlines()[1].split(), ["123456789", "192.0.2.7:21116", "tcp",
                                                         "3s"])
        pairs = pairRows([{"uuid": "u1", "a": "192.0.2.7", "b": "192.0.2.8", "age": 7200.0,
                           "bytes": 3_000_000, "rate": 1500.0}])
        self.assertEqual(pairs.splitlines()[1].split(),
                         ["u1", "192.0.2.7", "192.0.2.8", "2h00m", "3.0", "MB", "1.5", "kB/s"])


class RoutingTests(SynchronousTestCase):
    """C{p2pnet turn sessions} reaches the session command, C{p2pnet turn HOST} the test."""

    def parse(self, *argv: str) -> Any:
        from p2pnet.commands.operate import OPERATOR_COMMANDS

        args = list(argv)
        if tuple(args[:2]) in OPERATOR_COMMANDS:
            args[:2] = ["-".join(args[:2])]
        return buildParser().parse_args(args)

    def test_routes(self) -> None:
        self.assertEqual(self.parse("turn", "sessions", "--user", "amy").user, "amy")
        self.assertEqual(self.parse("turn", "kill", "--client", "192.0.2.7").client,
                         "192.0.2.7")
        test = self.parse("turn", "192.0.2.1", "--user", "u", "--password", "p")
        self.assertEqual(test.host, "192.0.2.1")
        self.assertEqual(self.parse("relay", "kill", "u1").uuid, "u1")
        self.assertTrue(self.parse("peers", "online", "--json").json)

    def test_killTargets(self) -> None:
        target = self.parse("turn", "kill", "--client", "[2001:db8::1]:5000")
        self.assertEqual(_killTarget(target), {"client": "2001:db8::1", "port": 5000})
        self.assertEqual(_killTarget(self.parse("turn", "kill", "--user", "amy")),
                         {"user": "amy"})
        self.assertRaises(ValueError, _killTarget, self.parse("turn", "kill", "--client", "[::1"))


class FakeTable:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def kill(self, **kw: Any) -> int:
        self.calls.append(kw)
        return 2


class KillParamsTests(SynchronousTestCase):
    def test_targets(self) -> None:
        table = FakeTable()
        self.assertEqual(killAllocations(table, {"user": "amy"}), {"killed": 2})  # type: ignore[arg-type]
        killAllocations(table, {"client": "::ffff:192.0.2.7"})  # type: ignore[arg-type]
        killAllocations(table, {"client": "192.0.2.7", "port": 5000})  # type: ignore[arg-type]
        self.assertEqual(table.calls, [{"user": "amy"}, {"client": "192.0.2.7"},
                                       {"client": ("192.0.2.7", 5000)}])

    def test_refused(self) -> None:
        for params in ({}, {"user": "a", "client": "192.0.2.7"}, {"user": ""},
                       {"client": "nonsense"}, {"client": "192.0.2.7", "port": 0},
                       {"client": "192.0.2.7", "port": True}, {"user": 5}):
            self.assertRaises(ValueError, killAllocations, FakeTable(), params)
