# -*- test-case-name: test.unit.test_ice_core,test.unit.test_ice_candidates -*-
"""Candidate pairs and the checklist (RFC 8445 §6.1.2): forming pairs, pruning,
ordering, pair states, unfreezing and the triggered-check queue. Sans-IO.

A pair is identified by C{(local base, remote address)}: the path its checks and data
take. RFC 8445 §6.1.2.4 prunes pairs that share both, so one path is one pair;
a peer-reflexive local candidate learnt from a check (RFC 8445 §7.2.5.3.1) is kept on the
pair it was learnt from as its C{validLocal}, since it sends from the same base.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from p2pnet.codecs.ice_candidate import Candidate
from p2pnet.ice.candidates import LocalCandidate, pairPriority

__all__ = ["MAX_PAIRS", "CandidatePair", "CheckList", "PairState"]

Address = tuple[str, int]
PairKey = tuple[Address, Address]

#: RFC 8445 §6.1.2.5: the checklist is limited to 100 pairs by default.
MAX_PAIRS = 100


class PairState(Enum):
    """RFC 8445 §6.1.2.6."""

    FROZEN = "frozen"
    WAITING = "waiting"
    IN_PROGRESS = "in-progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(eq=False)
class CandidatePair:
    """A local and a remote candidate, and what the checks found.

    @ivar validLocal: once a check succeeded, the local candidate whose address the
        response mapped to (the pair's own, or a server- or peer-reflexive one).
    @ivar nominated: RFC 8445 §8: both agents agree to use it.
    @ivar nominateOnSuccess: a USE-CANDIDATE check arrived before this pair's own check
        succeeded (RFC 8445 §7.3.1.5).
    """

    local: LocalCandidate
    remote: Candidate
    state: PairState = PairState.FROZEN
    validLocal: LocalCandidate | None = None
    nominated: bool = False
    nominateOnSuccess: bool = False
    lastChecked: float = field(default=0.0)

    @property
    def key(self) -> PairKey:
        """C{(local base, remote address)}."""
        return self.local.base, self.remote.address

    @property
    def foundation(self) -> str:
        """RFC 8445 §6.1.2.6: the local and remote foundations joined."""
        return f"{self.local.candidate.foundation}:{self.remote.foundation}"

    @property
    def valid(self) -> bool:
        """Whether a check on it succeeded (it is in the valid list, RFC 8445 §7.2.5.3.2)."""
        return self.validLocal is not None

    def priority(self, controlling: bool) -> int:
        """RFC 8445 §6.1.2.3, with the valid local candidate once there is one."""
        local = (self.validLocal or self.local).priority
        remote = self.remote.priority
        return pairPriority(local, remote) if controlling else pairPriority(remote, local)

    def __repr__(self) -> str:
        return (f"<CandidatePair {self.local.type} {self.local.base} -> {self.remote.type} "
                f"{self.remote.address} {self.state.value}>")


def _canPair(local: LocalCandidate, remote: Candidate) -> bool:
    """RFC 8445 §6.1.2.2: same component, same address family (UDP only here)."""
    if local.candidate.component != remote.component or not remote.isUdp:
        return False
    if local.type not in ("host", "relay"):
        return False  # RFC 8445 §6.1.2.4: reflexive candidates are replaced by their bases
    return (":" in local.base[0]) == (":" in remote.host)


class CheckList:
    """The pairs of one data stream, highest priority first, and the triggered queue.

    @ivar controlling: the agent's role, which orders the pairs.
    """

    def __init__(self, controlling: bool, maxPairs: int = MAX_PAIRS) -> None:
        self.controlling = controlling
        self.maxPairs = maxPairs
        self._pairs: dict[PairKey, CandidatePair] = {}
        self._triggered: deque[CandidatePair] = deque()

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.ordered())

    def __len__(self) -> int:
        return len(self._pairs)

    def ordered(self) -> list[CandidatePair]:
        """The pairs, highest priority first (RFC 8445 §6.1.2.3)."""
        return sorted(self._pairs.values(), key=lambda p: p.priority(self.controlling),
                      reverse=True)

    def get(self, key: PairKey) -> CandidatePair | None:
        """The pair on this path, or C{None}."""
        return self._pairs.get(key)

    def clear(self) -> None:
        """Forget every pair (an ICE restart, RFC 8445 §9)."""
        self._pairs.clear()
        self._triggered.clear()

    # -- forming pairs --------------------------------------------------------------------

    def addPairs(self, locals_: list[LocalCandidate], remotes: list[Candidate]
                 ) -> list[CandidatePair]:
        """Pair every combination that may pair, pruning redundant ones (sections
        6.1.2.2 and 6.1.2.4) and keeping at most C{maxPairs}; returns the new pairs.

        A new pair is Waiting unless a pair of the same foundation is already Waiting or
        In-Progress (RFC 8445 §6.1.2.6 and RFC 8838 §10), so the first pair of each
        foundation is checked first and the rest follow its result.
        """
        added = []
        candidates = [CandidatePair(lc, rc) for lc in locals_ for rc in remotes
                      if _canPair(lc, rc)]
        candidates.sort(key=lambda p: p.priority(self.controlling), reverse=True)
        for pair in candidates:
            existing = self._pairs.get(pair.key)
            if existing is not None:
                if pair.priority(self.controlling) > existing.priority(self.controlling) \
                        and existing.state == PairState.FROZEN:
                    self._pairs[pair.key] = pair  # keep the higher-priority one
                continue
            self._pairs[pair.key] = pair
            added.append(pair)
        for pair in added:
            active = any(p.foundation == pair.foundation and p is not pair
                         and p.state in (PairState.WAITING, PairState.IN_PROGRESS)
                         for p in self._pairs.values())
            pair.state = PairState.FROZEN if active else PairState.WAITING
        self._limit()
        return [p for p in added if p.key in self._pairs]

    def addPair(self, pair: CandidatePair) -> CandidatePair:
        """Add one pair as it is (a peer-reflexive one from a request), or return the
        one already on that path."""
        existing = self._pairs.get(pair.key)
        if existing is not None:
            return existing
        self._pairs[pair.key] = pair
        self._limit()
        return pair

    def _limit(self) -> None:
        """RFC 8445 §6.1.2.5: drop the lowest-priority Frozen/Waiting pairs beyond the limit."""
        if len(self._pairs) <= self.maxPairs:
            return
        for pair in reversed(self.ordered()):
            if len(self._pairs) <= self.maxPairs:
                break
            if pair.state in (PairState.FROZEN, PairState.WAITING):
                del self._pairs[pair.key]

    # -- choosing what to check -----------------------------------------------------------

    def trigger(self, pair: CandidatePair) -> None:
        """Queue a triggered check (RFC 8445 §7.3.1.4): the pair becomes Waiting."""
        pair.state = PairState.WAITING
        if pair not in self._triggered:
            self._triggered.append(pair)

    def nextCheck(self) -> CandidatePair | None:
        """RFC 8445 §6.1.4.2: the pair to check at this Ta tick, or C{None}: the head of the
        triggered queue; else the highest-priority Waiting pair; else the highest-priority
        Frozen pair whose foundation is not Waiting or In-Progress, unfrozen."""
        while self._triggered:
            pair = self._triggered.popleft()
            if pair.key in self._pairs or pair.valid:
                return pair
        ordered = self.ordered()
        for pair in ordered:
            if pair.state == PairState.WAITING:
                return pair
        busy = {p.foundation for p in ordered
                if p.state in (PairState.WAITING, PairState.IN_PROGRESS)}
        for pair in ordered:
            if pair.state == PairState.FROZEN and pair.foundation not in busy:
                return pair
        return None

    def hasWork(self) -> bool:
        """Whether a check is still to be sent (triggered, Waiting or Frozen pairs)."""
        return bool(self._triggered) or any(
            p.state in (PairState.WAITING, PairState.FROZEN) for p in self._pairs.values())

    def unfreeze(self, foundation: str) -> None:
        """RFC 8445 §7.2.5.3.3: Frozen pairs of a foundation that just succeeded wait."""
        for pair in self._pairs.values():
            if pair.state == PairState.FROZEN and pair.foundation == foundation:
                pair.state = PairState.WAITING

    def stopChecks(self) -> None:
        """RFC 8445 §8.1.2: once a pair is selected no further checks start."""
        self._triggered.clear()
        for pair in self._pairs.values():
            if pair.state in (PairState.FROZEN, PairState.WAITING):
                pair.state = PairState.FAILED

    # -- results --------------------------------------------------------------------------

    def valid(self) -> list[CandidatePair]:
        """The valid list, highest priority first (RFC 8445 §7.2.5.3.2)."""
        return [p for p in self.ordered() if p.valid]

    def pending(self) -> bool:
        """Whether any pair is not yet Succeeded or Failed."""
        return any(p.state not in (PairState.SUCCEEDED, PairState.FAILED)
                   for p in self._pairs.values())

    def higherPending(self, pair: CandidatePair) -> bool:
        """Whether a pair of higher priority than C{pair} may still succeed."""
        bar = pair.priority(self.controlling)
        return any(p.state not in (PairState.SUCCEEDED, PairState.FAILED)
                   and p.priority(self.controlling) > bar for p in self._pairs.values())
