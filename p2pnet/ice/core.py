# -*- test-case-name: test.unit.test_ice_core -*-
"""The sans-IO ICE agent (RFC 8445) for one data stream with one component: time and
packets in, actions out. No reactor, no sockets.

The owner feeds it candidates (L{IceCore.addLocalCandidate}), the remote description
(L{IceCore.setRemoteCredentials}, L{IceCore.addRemoteCandidate},
L{IceCore.endOfRemoteCandidates}), STUN datagrams that arrived on a base
(L{IceCore.receive}) and the time (L{IceCore.tick} at L{IceCore.nextDeadline}); it takes
back datagrams to send (L{IceCore.takeTransmits}: what, from which base, to where) and
events (L{IceCore.takeEvents}: L{Selected}, L{StateChanged}, L{Restarted}).

It is a full agent or, with C{lite=True}, an ICE-lite one (RFC 8445 §2.5: answers checks,
never sends them, always controlled). It runs regular nomination when controlling
(RFC 8445 §8.1.1) and accepts aggressive nomination from RFC 5245 peers when controlled
(the highest-priority nominated pair wins), resolves role conflicts both ways
(RFC 8445 §7.3.1.1), learns peer-reflexive candidates on both sides (RFC 8445 §7.2.5.3.1,
7.3.1.3), restarts (RFC 8445 §9), trickles (RFC 8838) and keeps consent (RFC 7675).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from p2pnet.codecs.ice_candidate import Candidate
from p2pnet.codecs.stun import (
    Attr,
    Message,
    Method,
    StunClass,
    StunDecodeError,
    decode,
    decodeErrorCode,
    decodeXorAddress,
)
from p2pnet.ice.candidates import (
    FoundationTable,
    LocalCandidate,
    candidatePriority,
    newCredentials,
)
from p2pnet.ice.checklist import CandidatePair, CheckList, PairState
from p2pnet.ice.consent import Consent
from p2pnet.ice.roles import Conflict, resolveConflict
from p2pnet.ice.stunchecks import (
    CheckRequest,
    CheckTransactions,
    Outstanding,
    buildCheck,
    buildError,
    buildIndication,
    buildSuccess,
    readRequest,
)

__all__ = ["IceCore", "IceState", "Restarted", "Selected", "StateChanged", "Transmit"]

Address = tuple[str, int]

#: RFC 8445 §14.2: Ta, the pacing of new checks, seconds.
TA = 0.05


class IceState(Enum):
    """The agent's overall state (RFC 8445 §6.1.3, as the W3C names them)."""

    NEW = "new"
    CHECKING = "checking"
    CONNECTED = "connected"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send C{data} from the base C{local} to C{remote}."""

    data: bytes
    local: Address
    remote: Address


@dataclass(frozen=True, slots=True)
class Selected:
    """A pair was selected (or replaced by a better nominated one)."""

    pair: CandidatePair


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The overall state changed."""

    state: IceState


@dataclass(frozen=True, slots=True)
class Restarted:
    """The remote agent restarted, so this one did too (RFC 8445 §9): signal
    the new credentials and the candidates again."""

    ufrag: str
    pwd: str


class IceCore:
    """One ICE agent's state machine.

    @param controlling: the initial role (an ICE-lite agent is always controlled).
    @param rng: randomness for credentials, the tie-breaker and consent jitter.
    @param nominationDelay: seconds a controlling agent waits after the first valid
        pair for better ones still being checked before it nominates the best.
    """

    def __init__(self, controlling: bool, lite: bool = False, rng: random.Random | None = None,
                 ta: float = TA, nominationDelay: float = 1.0,
                 transactions: CheckTransactions | None = None) -> None:
        self.rng = rng or random.SystemRandom()
        self.lite = lite
        self.controlling = controlling and not lite
        self.ufrag, self.pwd = newCredentials(self.rng)
        self.tieBreaker = self.rng.getrandbits(64)
        self.ta = ta
        self.nominationDelay = nominationDelay
        self.foundations = FoundationTable()
        self.locals: list[LocalCandidate] = []
        self.remotes: list[Candidate] = []
        self.remoteUfrag: str | None = None
        self.remotePwd: str | None = None
        self.remoteLite = False
        self.checklist = CheckList(self.controlling)
        self.transactions = transactions or CheckTransactions()
        self.selected: CandidatePair | None = None
        self.consent: Consent | None = None
        self.state = IceState.NEW
        self.localGatheringDone = False
        self.remoteEnded = False
        self._nextTa = 0.0
        self._firstValid: float | None = None
        self._nominating: CandidatePair | None = None
        self._restartPending = False
        self._chosen = False  # a pair was selected since the start or the last restart
        self._early: list[tuple[Address, Address, CheckRequest]] = []
        self._prflxCount = 0
        self._transmits: list[Transmit] = []
        self._events: list[object] = []

    # -- output ----------------------------------------------------------------------------

    def takeTransmits(self) -> list[Transmit]:
        """Datagrams to send, oldest first (the list is emptied)."""
        out, self._transmits = self._transmits, []
        return out

    def takeEvents(self) -> list[object]:
        """Events since the last call, oldest first (the list is emptied)."""
        out, self._events = self._events, []
        return out

    def _send(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        self._transmits.append(Transmit(data, local, remote))
        if self.consent is not None and self.selected is not None \
                and self.selected.key == (local, remote):
            self.consent.sent(now)

    def _setState(self, state: IceState) -> None:
        if state != self.state and self.state != IceState.CLOSED:
            self.state = state
            self._events.append(StateChanged(state))

    def _setRole(self, controlling: bool) -> None:
        self.controlling = self.checklist.controlling = controlling

    # -- input: candidates and the remote description --------------------------------------

    def addLocalCandidate(self, kind: str, address: Address, base: Address,
                          server: str | None = None, related: Address | None = None,
                          localPreference: int = 65535) -> LocalCandidate:
        """A gathered candidate (host, srflx or relay); returns it with its RFC 8445
        priority and foundation, ready to signal (C{.candidate.toLine()})."""
        foundation = self.foundations.foundation(kind, base[0], server)
        local = LocalCandidate.make(kind, address, base, foundation, localPreference,
                                    related=related)
        for known in self.locals:
            if known.address == local.address and known.base == local.base:
                return known  # RFC 8445 §5.1.3: redundant candidates are dropped
        self.locals.append(local)
        self.checklist.addPairs([local], self.remotes)
        return local

    def endOfLocalCandidates(self) -> None:
        """Gathering is complete (RFC 8838 §13)."""
        self.localGatheringDone = True

    def setRemoteCredentials(self, ufrag: str, pwd: str, lite: bool = False,
                             now: float = 0.0) -> None:
        """The remote agent's ufrag and pwd (and whether it is lite). New credentials
        after the first ones mean it restarted: this agent restarts too (RFC 8838 §9.2)."""
        if self.remoteUfrag is not None and (ufrag, pwd) != (self.remoteUfrag, self.remotePwd):
            if not self._restartPending:
                self.restart(now)
                self._events.append(Restarted(self.ufrag, self.pwd))
        self._restartPending = False
        self.remoteUfrag, self.remotePwd, self.remoteLite = ufrag, pwd, lite
        if lite and not self.lite:
            self._setRole(True)  # RFC 8838 §6.1.1: a full agent facing a lite one controls
        if self.state == IceState.NEW:
            self._setState(IceState.CHECKING)
        early, self._early = self._early, []
        for base, source, request in early:
            self._triggeredByRequest(base, source, request, now)

    def addRemoteCandidate(self, candidate: Candidate) -> None:
        """A remote candidate, from the description or trickled (RFC 8838)."""
        for i, known in enumerate(self.remotes):
            if known.address == candidate.address and known.isUdp == candidate.isUdp:
                if known.type == "prflx" and candidate.type != "prflx":
                    # A peer-reflexive candidate learnt from a check that came before
                    # the signalling: the signalled one replaces it (RFC 8838 §11).
                    self.remotes[i] = candidate
                    for pair in self.checklist.ordered():
                        if pair.remote is known:
                            pair.remote = candidate
                return
        self.remotes.append(candidate)
        self.checklist.addPairs(self.locals, [candidate])

    def endOfRemoteCandidates(self) -> None:
        """The remote sent end-of-candidates (RFC 8838 §13)."""
        self.remoteEnded = True

    def restart(self, now: float = 0.0) -> tuple[str, str]:
        """An ICE restart (RFC 8838 §9): new local credentials, new checks; the selected
        pair keeps carrying data until checks select another. Returns C{(ufrag, pwd)}."""
        self.ufrag, self.pwd = newCredentials(self.rng)
        self._restartPending = True
        self.checklist.clear()
        self.transactions.cancel(lambda o: True)
        self.remotes.clear()
        self.remoteEnded = False
        self._firstValid = self._nominating = None
        self._chosen = False
        self.consent = None
        self._early.clear()
        if self.state != IceState.CLOSED:
            self._setState(IceState.CHECKING)
        return self.ufrag, self.pwd

    def sentData(self, now: float) -> None:
        """The application sent data on the selected pair (it postpones keep-alives)."""
        if self.consent is not None:
            self.consent.sent(now)

    def close(self) -> None:
        """Stop: nothing more is sent or answered."""
        self._setState(IceState.CLOSED)
        self.checklist.clear()
        self.transactions.cancel(lambda o: True)
        self.consent = None

    # -- input: packets --------------------------------------------------------------------

    def receive(self, data: bytes, local: Address, remote: Address, now: float) -> bool:
        """A datagram that arrived on base C{local} from C{remote}; returns whether it
        was a STUN message for ICE (anything else is the application's)."""
        if len(data) < 20 or data[0] >= 0x40 or data[4:8] != b"\x21\x12\xa4\x42":
            return False
        if self.state == IceState.CLOSED:
            return True
        try:
            message = decode(data)
        except StunDecodeError:
            return True
        if message.method != Method.BINDING:
            return True
        if message.cls == StunClass.REQUEST:
            self._request(message, local, remote, now)
        elif message.cls in (StunClass.SUCCESS, StunClass.ERROR):
            self._response(message, local, remote, now)
        return True

    def _localFor(self, base: Address) -> LocalCandidate | None:
        for local in self.locals:
            if local.address == base and local.type in ("host", "relay"):
                return local
        return None

    def _request(self, message: Message, base: Address, source: Address, now: float) -> None:
        """RFC 8445 §7.3: answer a check, then act on it."""
        request = readRequest(message, self.ufrag, self.pwd)
        if isinstance(request, int):
            self._send(buildError(message, request), base, source, now)
            return
        conflict = resolveConflict(self.controlling, self.tieBreaker, request.controlling,
                                   request.tieBreaker, canControl=not self.lite)
        if conflict == Conflict.REJECT:
            self._send(buildError(message, 487, self.pwd), base, source, now)
            return
        if conflict == Conflict.SWITCH:
            self._setRole(not self.controlling)
        self._send(buildSuccess(message, source, self.pwd), base, source, now)
        if self.remoteUfrag is None:
            self._early.append((base, source, request))  # RFC 8445 §7.3.1.4, no answer yet
            return
        self._triggeredByRequest(base, source, request, now)

    def _remoteFor(self, source: Address, priority: int) -> Candidate:
        """The remote candidate at C{source}, or a new peer-reflexive one (7.3.1.3)."""
        for known in self.remotes:
            if known.address == source and known.isUdp:
                return known
        self._prflxCount += 1
        candidate = Candidate(f"prflx{self._prflxCount}", 1, "udp", priority, source[0],
                              source[1], "prflx")
        self.remotes.append(candidate)
        return candidate

    def _triggeredByRequest(self, base: Address, source: Address, request: CheckRequest,
                            now: float) -> None:
        """RFC 8445 §7.3.1.4 and §7.3.1.5: a triggered check, and nomination."""
        local = self._localFor(base)
        if local is None or self.state == IceState.CLOSED:
            return
        pair = self.checklist.get((base, source))
        if pair is None:
            remote = self._remoteFor(source, request.priority or 0)
            pair = self.checklist.addPair(CandidatePair(local, remote, PairState.WAITING))
        if self.lite:
            # RFC 8445 §2.5: a lite agent's pair is valid once it answered; it is selected
            # when the controlling agent nominates it.
            pair.validLocal = pair.local
            pair.state = PairState.SUCCEEDED
            if request.useCandidate:
                pair.nominated = True
                self._updateSelected(now)
            return
        nominate = request.useCandidate and not self.controlling
        if pair.state == PairState.SUCCEEDED:
            if nominate:
                pair.nominated = True
                self._updateSelected(now)
            return
        if nominate:
            pair.nominateOnSuccess = True
        if pair.state != PairState.IN_PROGRESS:
            self.checklist.trigger(pair)

    def _response(self, message: Message, base: Address, source: Address, now: float) -> None:
        """RFC 8445 §7.2.5: the answer to one of our checks."""
        outstanding = self.transactions.match(message)
        if outstanding is None:
            return
        pair: CandidatePair = outstanding.pair
        if outstanding.consent:
            if message.cls == StunClass.SUCCESS and self.consent is not None \
                    and self.selected is pair:
                self.consent.responded(now)
            return
        if (base, source) != (outstanding.local, outstanding.remote):
            self._failed(pair, outstanding, now)  # RFC 8445 §7.2.5.2.1: not symmetric
            return
        if message.cls == StunClass.ERROR:
            value = message.get(Attr.ERROR_CODE)
            try:
                code = decodeErrorCode(value)[0] if value is not None else 0
            except StunDecodeError:
                code = 0
            if code == 487 and not self.lite:
                # RFC 8445 §7.2.5.1: switch roles (unless already done) and check again.
                if self.controlling == outstanding.controlling:
                    self._setRole(not outstanding.controlling)
                self.checklist.trigger(pair)
                if outstanding.useCandidate:
                    self._nominating = None
                return
            self._failed(pair, outstanding, now)
            return
        value = message.get(Attr.XOR_MAPPED_ADDRESS)
        try:
            mapped = decodeXorAddress(value, message.transactionId) if value else None
        except StunDecodeError:
            mapped = None
        if mapped is None:
            self._failed(pair, outstanding, now)
            return
        self._succeeded(pair, mapped, outstanding, now)

    def _succeeded(self, pair: CandidatePair, mapped: Address, outstanding: Outstanding,
                   now: float) -> None:
        """RFC 8445 §7.2.5.3: the valid pair, unfreezing, nomination."""
        valid = next((lc for lc in self.locals if lc.address == mapped
                      and lc.base == pair.local.base), None)
        if valid is None:
            # RFC 8445 §7.2.5.3.1: a peer-reflexive local candidate.
            foundation = self.foundations.foundation("prflx", pair.local.base[0])
            valid = LocalCandidate(Candidate(
                foundation, 1, "udp", outstanding.priority, mapped[0], mapped[1], "prflx",
                pair.local.base[0], pair.local.base[1]), pair.local.base)
            self.locals.append(valid)
        pair.validLocal = valid
        pair.state = PairState.SUCCEEDED
        self.checklist.unfreeze(pair.foundation)
        if self._firstValid is None:
            self._firstValid = now
        if outstanding.useCandidate and self.controlling:
            pair.nominated = True
            self._nominating = None
            self._updateSelected(now)
        elif pair.nominateOnSuccess and not self.controlling:
            pair.nominated = True
            self._updateSelected(now)

    def _failed(self, pair: CandidatePair, outstanding: Outstanding | None, now: float) -> None:
        if not pair.valid:
            pair.state = PairState.FAILED
        if outstanding is not None and outstanding.useCandidate:
            self._nominating = None
            pair.state = PairState.FAILED
            pair.validLocal = None

    def _updateSelected(self, now: float) -> None:
        """The highest-priority nominated valid pair is the selected one (RFC 8445 §8.1.1;
        with aggressive nomination a better pair may be nominated later)."""
        nominated = [p for p in self.checklist.valid() if p.nominated]
        if not nominated or nominated[0] is self.selected:
            return
        self.selected = nominated[0]
        self._chosen = True
        self.consent = Consent(now, self.rng, checks=not self.lite)
        if self.controlling:
            self.checklist.stopChecks()
        self._events.append(Selected(self.selected))
        self._setState(IceState.CONNECTED)

    # -- time ------------------------------------------------------------------------------

    def _checking(self) -> bool:
        return (not self.lite and self.remoteUfrag is not None
                and self.state in (IceState.CHECKING, IceState.CONNECTED))

    def _wantsNomination(self, now: float) -> CandidatePair | None:
        if not self.controlling or self._nominating is not None or self._chosen:
            return None
        valid = self.checklist.valid()
        if not valid:
            return None
        best = valid[0]
        waited = self._firstValid is not None and now >= self._firstValid + self.nominationDelay
        return best if waited or not self.checklist.higherPending(best) else None

    def nextDeadline(self) -> float | None:
        """When L{tick} next has something to do, or C{None}."""
        due = [self.transactions.nextDeadline()]
        if self.consent is not None and self.state == IceState.CONNECTED:
            due.append(self.consent.nextDeadline())
        if self._checking():
            if self.checklist.hasWork():
                due.append(self._nextTa)
            valid = self.checklist.valid()
            if self.controlling and valid and self._firstValid is not None \
                    and self._nominating is None and not self._chosen:
                if self.checklist.higherPending(valid[0]):
                    due.append(max(self._nextTa, self._firstValid + self.nominationDelay))
                else:
                    due.append(self._nextTa)
        return min((d for d in due if d is not None), default=None)

    def tick(self, now: float) -> None:
        """Do what is due at C{now}: retransmissions, the next paced check, nomination,
        consent checks and keep-alives, failure."""
        if self.state == IceState.CLOSED:
            return
        retransmit, timedOut = self.transactions.expire(now)
        for data, outstanding in retransmit:
            self._send(data, outstanding.local, outstanding.remote, now)
        for outstanding in timedOut:
            if not outstanding.consent:
                self._failed(outstanding.pair, outstanding, now)
        self._tickConsent(now)
        if self._checking() and now >= self._nextTa:
            pair = self._wantsNomination(now)
            if pair is not None:
                self._nominating = pair
                self._sendCheck(pair, now, useCandidate=True)
                self._nextTa = now + self.ta
            else:
                pair = self.checklist.nextCheck()
                if pair is not None:
                    self._sendCheck(pair, now)
                    self._nextTa = now + self.ta
        self._checkFailure()

    def _tickConsent(self, now: float) -> None:
        if self.consent is None or self.selected is None or self.state != IceState.CONNECTED:
            return
        check, keepalive = self.consent.due(now)
        if self.consent.lost:
            self._setState(IceState.FAILED)  # RFC 7675 §5.1: stop sending
            return
        local, remote = self.selected.key
        if check and self.remoteUfrag is not None and self.remotePwd is not None:
            self._sendCheck(self.selected, now, consent=True)
        elif keepalive:
            self._send(buildIndication(), local, remote, now)

    def _sendCheck(self, pair: CandidatePair, now: float, useCandidate: bool = False,
                   consent: bool = False) -> None:
        assert self.remoteUfrag is not None and self.remotePwd is not None
        # RFC 8445 §7.1.1: PRIORITY is what a peer-reflexive candidate from this base
        # would have: type preference 110, the local candidate's local preference.
        localPreference = (pair.local.priority >> 8) & 0xFFFF
        priority = candidatePriority("prflx", localPreference, pair.local.candidate.component)
        message, data = buildCheck(self.ufrag, self.remoteUfrag, self.remotePwd, priority,
                                   self.controlling, self.tieBreaker, useCandidate)
        outstanding = Outstanding(pair, pair.local.base, pair.remote.address, useCandidate,
                                  consent, priority, self.remotePwd.encode(), self.controlling)
        self.transactions.start(message, data, outstanding, now, once=consent)
        if not consent and pair.state != PairState.SUCCEEDED:
            pair.state = PairState.IN_PROGRESS
        pair.lastChecked = now
        self._send(data, pair.local.base, pair.remote.address, now)

    def _checkFailure(self) -> None:
        """RFC 8445 §8.1.2 and RFC 8838 §8: with every candidate known on
        both sides and every pair failed, the checks have failed."""
        if self.state != IceState.CHECKING or self._chosen or self.lite:
            return
        if not (self.localGatheringDone and self.remoteEnded) or self.remoteUfrag is None:
            return
        if self.checklist.pending() or self.checklist.hasWork() or self.checklist.valid():
            return
        if len(self.transactions):
            return
        self._setState(IceState.FAILED)
