"""Tests for L{p2pnet.ice.candidates} and L{p2pnet.ice.checklist}: priorities and
foundations (RFC 8445 §5.1.2, §5.1.1.3), pairing, pruning, ordering, states."""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.ice_candidate import parseCandidate
from p2pnet.ice.candidates import (
    FoundationTable,
    LocalCandidate,
    candidatePriority,
    newCredentials,
    pairPriority,
)
from p2pnet.ice.checklist import CandidatePair, CheckList, PairState


class PriorityTests(SynchronousTestCase):
    """RFC 8445 §5.1.2.1 and RFC 8445 §6.1.2.3."""

    def test_typePreferences(self) -> None:
        """Host, peer-reflexive, server-reflexive and relayed candidates of component 1
        with local preference 65535: the values libnice and aioice write."""
        self.assertEqual(candidatePriority("host"), 2130706431)
        self.assertEqual(candidatePriority("prflx"), 1862270975)
        self.assertEqual(candidatePriority("srflx"), 1694498815)
        self.assertEqual(candidatePriority("relay"), 16777215)
        self.assertEqual(candidatePriority("host", 65535, 2), 2130706430)
        # 2^24 * 126 + 2^8 * 0 + (256 - 256): the lowest host priority.
        self.assertEqual(candidatePriority("host", 0, 256), 126 << 24)
        self.assertRaises(ValueError, candidatePriority, "host", 65536)

    def test_pairPriority(self) -> None:
        """2^32 * MIN(G, D) + 2 * MAX(G, D) + (G > D ? 1 : 0): the same number for both
        agents, with the controlling agent's candidate as G."""
        g, d = 2130706431, 1694498815
        self.assertEqual(pairPriority(g, d), (d << 32) + 2 * g + 1)
        self.assertEqual(pairPriority(d, g), (d << 32) + 2 * g)
        self.assertEqual(pairPriority(g, g), (g << 32) + 2 * g)

    def test_credentials(self) -> None:
        """ufrag of 8 and pwd of 24 ice-chars (RFC 8445 §5.3: at least 4 and 22)."""
        ufrag, pwd = newCredentials(random.Random(3))
        self.assertEqual((len(ufrag), len(pwd)), (8, 24))
        self.assertTrue(set(ufrag + pwd) <= set(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"))


class FoundationTests(SynchronousTestCase):
    """RFC 8445 §5.1.1.3."""

    def test_sameAndDifferent(self) -> None:
        """Same type, base IP, server and transport share a foundation; any
        difference gives a new one; answers are stable."""
        t = FoundationTable()
        host = t.foundation("host", "192.0.2.1")
        self.assertEqual(t.foundation("host", "192.0.2.1"), host)
        srflx = t.foundation("srflx", "192.0.2.1", "198.51.100.1")
        self.assertEqual(t.foundation("srflx", "192.0.2.1", "198.51.100.1"), srflx)
        others = {host, srflx, t.foundation("srflx", "192.0.2.1", "198.51.100.2"),
                  t.foundation("srflx", "192.0.2.9", "198.51.100.1"),
                  t.foundation("host", "192.0.2.1", transport="tcp"),
                  t.foundation("relay", "192.0.2.1", "198.51.100.1")}
        self.assertEqual(len(others), 6)


def _local(kind: str, address: tuple[str, int], base: tuple[str, int], foundation: str,
           pref: int = 65535) -> LocalCandidate:
    return LocalCandidate.make(kind, address, base, foundation, pref)


REMOTE_HOST = parseCandidate("candidate:1 1 udp 2130706431 192.0.2.20 7000 typ host")
REMOTE_SRFLX = parseCandidate(
    "candidate:2 1 udp 1694498815 203.0.113.20 7001 typ srflx raddr 192.0.2.20 rport 7000")
REMOTE_V6 = parseCandidate("candidate:3 1 udp 2130706175 2001:db8::20 7000 typ host")
REMOTE_TCP = parseCandidate("candidate:4 1 tcp 1518280447 192.0.2.20 9 typ host tcptype active")


class CheckListTests(SynchronousTestCase):
    """Pairing (6.1.2.2), pruning (6.1.2.4), ordering (6.1.2.3), states (6.1.2.6)."""

    def setUp(self) -> None:
        self.host = _local("host", ("192.0.2.1", 5000), ("192.0.2.1", 5000), "1")
        self.srflx = _local("srflx", ("203.0.113.1", 6000), ("192.0.2.1", 5000), "2")
        self.relay = _local("relay", ("198.51.100.1", 4000), ("198.51.100.1", 4000), "3")
        self.v6 = _local("host", ("2001:db8::1", 5000), ("2001:db8::1", 5000), "4", 65534)

    def test_pairingAndPruning(self) -> None:
        """Same family and UDP only; the server-reflexive candidate is replaced by its
        base, so its pairs are redundant with the host's and pruned."""
        checklist = CheckList(controlling=True)
        checklist.addPairs([self.host, self.srflx, self.relay, self.v6],
                           [REMOTE_HOST, REMOTE_SRFLX, REMOTE_V6, REMOTE_TCP])
        keys = {p.key for p in checklist}
        self.assertEqual(keys, {
            (("192.0.2.1", 5000), ("192.0.2.20", 7000)),
            (("192.0.2.1", 5000), ("203.0.113.20", 7001)),
            (("198.51.100.1", 4000), ("192.0.2.20", 7000)),
            (("198.51.100.1", 4000), ("203.0.113.20", 7001)),
            (("2001:db8::1", 5000), ("2001:db8::20", 7000)),
        })
        self.assertTrue(all(p.local.type in ("host", "relay") for p in checklist))

    def test_ordering(self) -> None:
        """Pairs come highest pair priority first; the role changes the numbers."""
        checklist = CheckList(controlling=True)
        checklist.addPairs([self.host, self.relay], [REMOTE_HOST, REMOTE_SRFLX])
        ordered = checklist.ordered()
        priorities = [p.priority(True) for p in ordered]
        self.assertEqual(priorities, sorted(priorities, reverse=True))
        self.assertEqual((ordered[0].local.type, ordered[0].remote.type), ("host", "host"))
        self.assertEqual((ordered[-1].local.type, ordered[-1].remote.type), ("relay", "srflx"))
        self.assertEqual(ordered[0].priority(True),
                         pairPriority(self.host.priority, REMOTE_HOST.priority))
        self.assertEqual(ordered[0].priority(False),
                         pairPriority(REMOTE_HOST.priority, self.host.priority))

    def test_initialStates(self) -> None:
        """One pair per foundation waits, the rest are frozen; a success unfreezes the
        foundation's other pairs; the highest waiting pair is checked first."""
        second = _local("host", ("192.0.2.1", 5002), ("192.0.2.1", 5002), "1", 65000)
        checklist = CheckList(controlling=True)
        checklist.addPairs([self.host, second], [REMOTE_HOST])
        first, other = checklist.ordered()
        self.assertEqual(first.foundation, other.foundation)
        self.assertEqual((first.state, other.state), (PairState.WAITING, PairState.FROZEN))
        self.assertIs(checklist.nextCheck(), first)
        first.state = PairState.IN_PROGRESS
        self.assertIsNone(checklist.nextCheck())  # its foundation is busy
        first.state = PairState.SUCCEEDED
        checklist.unfreeze(first.foundation)
        self.assertEqual(other.state, PairState.WAITING)
        self.assertIs(checklist.nextCheck(), other)

    def test_triggeredFirst(self) -> None:
        """A triggered check goes before every waiting pair."""
        checklist = CheckList(controlling=True)
        checklist.addPairs([self.host, self.relay], [REMOTE_HOST])
        low = checklist.ordered()[-1]
        checklist.trigger(low)
        self.assertIs(checklist.nextCheck(), low)

    def test_limit(self) -> None:
        """RFC 8445 §6.1.2.5: at most C{maxPairs}, the lowest priority dropped."""
        checklist = CheckList(controlling=True, maxPairs=3)
        remotes = [parseCandidate(f"candidate:{i} 1 udp {1000 + i} 192.0.2.{i} 7000 typ host")
                   for i in range(1, 6)]
        checklist.addPairs([self.host], remotes)
        self.assertEqual(len(checklist), 3)
        self.assertEqual({p.remote.priority for p in checklist}, {1003, 1004, 1005})

    def test_stopChecks(self) -> None:
        """Once selected, nothing waiting or frozen is checked any more."""
        checklist = CheckList(controlling=True)
        checklist.addPairs([self.host, self.relay], [REMOTE_HOST, REMOTE_SRFLX])
        checklist.stopChecks()
        self.assertIsNone(checklist.nextCheck())
        self.assertFalse(checklist.hasWork())

    def test_validUsesValidLocal(self) -> None:
        """A pair whose check mapped to a peer-reflexive address orders by it."""
        pair = CandidatePair(self.host, REMOTE_HOST)
        prflx = _local("prflx", ("203.0.113.9", 9), self.host.base, "9")
        pair.validLocal = prflx
        self.assertEqual(pair.priority(True), pairPriority(prflx.priority, REMOTE_HOST.priority))
