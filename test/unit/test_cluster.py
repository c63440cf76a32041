"""The node table (L{p2pnet.cluster}) and its listing (L{p2pnet.commands.cluster}) on a
clock, with a fake table."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.cluster import BEAT_INTERVAL, BEAT_TTL, ClusterMember
from p2pnet.commands.cluster import nodeRows
from p2pnet.stats import Stats


class FakeTable:
    def __init__(self) -> None:
        self.beats: list[tuple[str, dict[str, Any], float]] = []
        self.left: list[str] = []
        self.closed = False

    def beat(self, name: str, state: dict[str, Any], ttl: float) -> Deferred[None]:
        self.beats.append((name, state, ttl))
        return succeed(None)

    def leave(self, name: str) -> Deferred[None]:
        self.left.append(name)
        return succeed(None)

    def close(self) -> None:
        self.closed = True


class Turn:
    running = True

    def __init__(self) -> None:
        self.stats = Stats()
        self.allocations = 3
        self.stats.gauge("turn.allocations", lambda: self.allocations)


class MemberTests(SynchronousTestCase):
    def test_beatsAndLeaves(self) -> None:
        clock, table, turn = Clock(), FakeTable(), Turn()
        clock.advance(1000)
        member = ClusterMember(clock, table, "alpha", lambda: {"turn": turn})
        member.startService()
        name, state, ttl = table.beats[0]
        self.assertEqual((name, ttl), ("alpha", BEAT_TTL))
        self.assertEqual(state["services"], ["turn"])
        self.assertEqual(state["load"], {"allocations": 3, "peersOnline": 0, "relayPairs": 0,
                                         "gatewayClients": 0})
        turn.allocations = 5
        clock.advance(BEAT_INTERVAL)
        self.assertEqual(table.beats[-1][1]["load"]["allocations"], 5)
        self.assertEqual(table.beats[-1][1]["updatedAt"], 1010)
        member.stopService()
        self.assertEqual((table.left, table.closed), (["alpha"], True))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_rows(self) -> None:
        text = nodeRows({"beta": {"services": ["stun", "turn"], "load": {"allocations": 7},
                                  "startedAt": 100, "updatedAt": 195}}, 200.0)
        self.assertEqual(text.splitlines()[1].split(),
                         ["beta", "stun,turn", "7", "0", "0", "0", "100s", "5s", "ago"])

    def test_leastLoaded(self) -> None:
        clock, table = Clock(), FakeTable()
        clock.advance(1000)
        member = ClusterMember(clock, table, "alpha", dict)
        member.known = {
            "alpha": {"turn": {"4": ["192.0.2.1", 3478]}, "load": {"allocations": 1},
                      "updatedAt": 1000},
            "beta": {"turn": {"4": ["192.0.2.2", 3478]}, "load": {"allocations": 4},
                     "updatedAt": 995},
            "gamma": {"turn": {"4": ["192.0.2.3", 3478], "6": ["2001:db8::3", 3478]},
                      "load": {"allocations": 2}, "updatedAt": 990},
            "stale": {"turn": {"4": ["192.0.2.4", 3478]}, "load": {"allocations": 0},
                      "updatedAt": 900},
        }
        self.assertEqual(member.leastLoaded(4, 5), ("192.0.2.3", 3478))
        self.assertEqual(member.leastLoaded(6, 5), ("2001:db8::3", 3478))
        self.assertIsNone(member.leastLoaded(4, 2))  # nobody holds fewer than 2

    def test_heldElsewhere(self) -> None:
        clock = Clock()
        clock.advance(1000)
        member = ClusterMember(clock, FakeTable(), "alpha", dict)
        member.known = {"alpha": {"users": {"bob": 5}, "updatedAt": 1000},
                        "beta": {"users": {"bob": 2, "amy": 1}, "updatedAt": 999},
                        "old": {"users": {"bob": 9}, "updatedAt": 900}}
        self.assertEqual((member.heldElsewhere("bob"), member.heldElsewhere("eve")), (2, 0))

