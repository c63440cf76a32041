# -*- test-case-name: test.unit.test_turn_fastpath,test.interop.test_fastpath -*-
"""What the kernel fast path forwards (docs/fastpath.md): the allocation table's
observer that keeps the BPF maps equal to the live channels.

The table stays the source of truth. For every allocation that can use the fast path
(a UDP client, a UDP relay, no C{max-bps} limit), each channel whose binding and peer
permission are alive and whose peer is of the client's address family gets two entries:
client ChannelData -> peer, and peer datagrams -> client (the latter once the binding is
confirmed, as the Python path does: the program confirms it itself when it forwards the
client's first ChannelData on it). Each entry carries a deadline, the earliest of the
channel's, the permission's and the allocation's ends, converted to the kernel's
monotonic clock: the program stops forwarding at that instant by itself, and the next
event here (a refresh moves the deadline, the sweep deletes the entry) catches up. The
peer policy is asked again before an entry is written. What the program forwarded is
read back into the allocation's totals (L{FastPathEntries.collect}), so logs, metrics
and C{p2pnet turn sessions} count it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from p2pnet.addresses import family
from p2pnet.codecs.fastpath_maps import Counters, forwardEntry, reverseEntry
from p2pnet.codecs.rtnetlink import Route, RouteError
from p2pnet.fastpath.routes import routeTo
from p2pnet.listen import WILDCARDS
from p2pnet.services.turn_allocation import Allocation, ChannelBinding
from p2pnet.services.turn_table import QuietObserver
from p2pnet.stats import Stats

__all__ = ["COLLECT_INTERVAL", "FastPathEntries", "FastPathKernel"]

#: Seconds between reads of the per-allocation counters (logs and metrics lag this much).
COLLECT_INTERVAL = 5.0

#: One written channel: (forward key, forward value, reverse key, reverse value).
Written = tuple[bytes, bytes, bytes, bytes]


class KernelMap(Protocol):
    def update(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> bool: ...


class FastPathKernel(Protocol):
    """The loaded program (L{p2pnet.fastpath.kernel.KernelFastPath}, or a test's fake)."""

    @property
    def forward(self) -> KernelMap: ...
    @property
    def reverse(self) -> KernelMap: ...
    @property
    def interfaces(self) -> list[str]: ...

    def track(self, allocation: int) -> None: ...
    def counters(self, allocation: int) -> Counters: ...
    def untrack(self, allocation: int) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def close(self) -> None: ...


class FastPathEntries(QuietObserver):
    """Keeps the kernel's maps equal to the table's live channels.

    @param clock: the reactor's time (the table's lifetimes are on it).
    @param kernel: the program's maps and counters.
    @param allowed: the peer policy, asked again before an entry is written.
    @param route: where the kernel sends an address (L{routeTo}).
    @param monotonicNs: the kernel's clock (C{bpf_ktime_get_ns}), in nanoseconds.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, kernel: FastPathKernel, stats: Stats,
                 allowed: Callable[[str], bool],
                 route: Callable[[str, str], Route] = routeTo,
                 monotonicNs: Callable[[], int] = time.monotonic_ns) -> None:
        self.clock = clock
        self.kernel = kernel
        self.stats = stats
        self.allowed = allowed
        self.route = route
        self.monotonicNs = monotonicNs
        self.ids: dict[Allocation, int] = {}
        self.written: dict[Allocation, dict[int, Written]] = {}
        self.reported: dict[Allocation, Counters] = {}
        self._nextId = 1
        self._confirmations: dict[Allocation, Any] = {}
        stats.gauge("turn.fastpath.channels",
                    lambda: sum(len(w) for w in self.written.values()))

    # -- which allocations --------------------------------------------------------------------

    @staticmethod
    def eligible(allocation: Allocation) -> bool:
        """A UDP client on a UDP relay without a bandwidth limit (the kernel enforces
        none: such allocations stay on the Python path)."""
        return (allocation.fiveTuple.protocol == "udp" and allocation.transport == 17
                and allocation.inBucket is None and allocation.outBucket is None)

    # -- table events -----------------------------------------------------------------------

    def allocationCreated(self, allocation: Allocation) -> None:
        if not self.eligible(allocation):
            return
        number = self._nextId
        self._nextId = self._nextId % 0xFFFFFFFF + 1
        self.ids[allocation] = number
        self.written[allocation] = {}
        self.reported[allocation] = Counters(0, 0, 0, 0)
        self.kernel.track(number)

    def allocationChanged(self, allocation: Allocation) -> None:
        self.sync(allocation)

    def permissionExpired(self, allocation: Allocation, peer: str) -> None:
        self.sync(allocation)

    def channelExpired(self, allocation: Allocation, binding: ChannelBinding) -> None:
        self.sync(allocation)

    def allocationEnding(self, allocation: Allocation) -> None:
        if allocation not in self.ids:
            return
        for number in list(self.written[allocation]):
            self._remove(allocation, number)
        self.collect(allocation)
        call = self._confirmations.pop(allocation, None)
        if call is not None and call.active():
            call.cancel()
        self.kernel.untrack(self.ids.pop(allocation))
        del self.written[allocation]
        del self.reported[allocation]

    # -- the entries ------------------------------------------------------------------------

    def sync(self, allocation: Allocation) -> None:
        """Write, rewrite or remove this allocation's entries to match its channels."""
        if allocation not in self.ids:
            return
        now = self.clock.seconds()
        written = self.written[allocation]
        wanted: dict[int, Written] = {}
        nextConfirmation = None
        for number, binding in allocation.channels.items():
            entry = self._entry(allocation, binding, now)
            if entry is None:
                continue
            wanted[number] = entry
            if now < binding.confirmedAt:
                when = binding.confirmedAt
                nextConfirmation = when if nextConfirmation is None else min(
                    nextConfirmation, when)
        for number in [n for n in written if n not in wanted]:
            self._remove(allocation, number)
        for number, entry in wanted.items():
            old = written.get(number)
            if old == entry:
                continue
            if old is not None:  # keys that change are not overwritten: delete them
                if old[0] != entry[0]:
                    self.kernel.forward.delete(old[0])
                if old[2] != entry[2]:
                    self.kernel.reverse.delete(old[2])
            self._write(allocation, number, entry)
        self._scheduleConfirmation(allocation, nextConfirmation, now)

    def _entry(self, allocation: Allocation, binding: ChannelBinding,
               now: float) -> Written | None:
        """The entries of one channel, or C{None} if it is not for the kernel now."""
        peerHost, peerPort = binding.peer
        permission = allocation.permissions.get(peerHost)
        client = allocation.client
        if (permission is None or not binding.alive(now) or not permission.alive(now)
                or family(peerHost) != family(client[0]) or not self.allowed(peerHost)):
            return None
        relayed = allocation.relayed.get(family(peerHost))
        if relayed is None or relayed[0] in WILDCARDS:
            return None
        server = allocation.fiveTuple.server
        try:
            towardsPeer = self.route(peerHost, relayed[0])
            towardsClient = self.route(client[0], "")
        except RouteError:
            self.stats.add("turn.fastpath.no_route")
            return None
        if server[0] in WILDCARDS:
            # A wildcard listener answers from the address the route to the client
            # prefers; so does the program.
            if not towardsClient.source:
                return None
            server = (towardsClient.source, server[1])
        ends = min(binding.expiresAt, permission.expiresAt, allocation.expiresAt)
        deadline = self.monotonicNs() + int((ends - now) * 1e9)
        number = self.ids[allocation]
        fwdKey, fwdValue = forwardEntry(client, server, binding.number, relayed,
                                        binding.peer, number, towardsPeer.ifindex, deadline)
        revKey, revValue = reverseEntry(binding.peer, relayed, client, server,
                                        binding.number, number, towardsClient.ifindex,
                                        deadline, now >= binding.confirmedAt)
        return fwdKey, fwdValue, revKey, revValue

    def _write(self, allocation: Allocation, number: int, entry: Written) -> None:
        fwdKey, fwdValue, revKey, revValue = entry
        self.kernel.reverse.update(revKey, revValue)
        self.kernel.forward.update(fwdKey, fwdValue)
        self.written[allocation][number] = entry

    def _remove(self, allocation: Allocation, number: int) -> None:
        fwdKey, _, revKey, _ = self.written[allocation].pop(number)
        self.kernel.forward.delete(fwdKey)
        self.kernel.reverse.delete(revKey)

    def _scheduleConfirmation(self, allocation: Allocation, when: float | None,
                              now: float) -> None:
        """Sync again when the first unconfirmed binding becomes confirmed."""
        call = self._confirmations.pop(allocation, None)
        if call is not None and call.active():
            call.cancel()
        if when is not None:
            self._confirmations[allocation] = self.clock.callLater(
                max(0.0, when - now), self.sync, allocation)

    # -- counters ---------------------------------------------------------------------------

    def collect(self, allocation: Allocation) -> None:
        """Add what the kernel forwarded for C{allocation} since the last call to its
        totals and to the service's counters."""
        number = self.ids.get(allocation)
        if number is None:
            return
        now = self.kernel.counters(number)
        before = self.reported[allocation]
        delta = Counters(*(a - b for a, b in zip(now, before, strict=True)))
        self.reported[allocation] = now
        allocation.packetsOut += delta.packetsOut
        allocation.bytesOut += delta.bytesOut
        allocation.packetsIn += delta.packetsIn
        allocation.bytesIn += delta.bytesIn
        self.stats.add("turn.fastpath.packets_to_peers", delta.packetsOut)
        self.stats.add("turn.fastpath.bytes_to_peers", delta.bytesOut)
        self.stats.add("turn.fastpath.packets_from_peers", delta.packetsIn)
        self.stats.add("turn.fastpath.bytes_from_peers", delta.bytesIn)

    def collectAll(self) -> None:
        """L{collect} every allocation on the fast path."""
        for allocation in list(self.ids):
            self.collect(allocation)
