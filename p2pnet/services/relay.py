# -*- test-case-name: test.unit.test_relay_service -*-
"""The RustDesk relay server (hbbr): pairing by uuid, splicing, limits (rustdesk.md §5).

A leg (L{RelayLeg}, declared by L{p2pnet.protocols.relay}) announces itself with the uuid of
its first C{RequestRelay}; the first leg of a uuid waits up to L{PAIR_TIMEOUT} seconds
for the second, then the two are a L{Pair} and every byte one sends is written to the
other. Reading is paused whenever the other side's transport is full (producer /
consumer) or the pair is over its bandwidth, so memory per pair stays bounded.

Operators see the pairs through L{RelayService.pairs} and end one with
L{RelayService.kill}. Pairings and their ends are logged one line each, at most 20 a
minute; the rest are counted in the next line.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from p2pnet.listen import bindAddresses, listenTCP
from p2pnet.protocols.relay import (
    FIRST_MESSAGE_TIMEOUT,
    RelayLeg,
    RelayStreamFactory,
    Splice,
    relayWebSocketSite,
)
from p2pnet.ratelimit import TokenBucket
from p2pnet.ratelog import RateLimitedLog
from p2pnet.services.listening import ListeningService
from p2pnet.services.rendezvous_keys import relayKey
from p2pnet.stats import Stats

__all__ = [
    "BLACKLIST_FILE",
    "BLOCKLIST_FILE",
    "FIRST_MESSAGE_TIMEOUT",
    "PAIR_TIMEOUT",
    "Pair",
    "RelayPairInfo",
    "RelayService",
    "megabitsToBytes",
    "readAddressList",
]

log = Logger()

#: Seconds the first leg of a uuid waits for the second (rustdesk.md §5 pairing).
PAIR_TIMEOUT = 30.0
#: Seconds between sweeps: idle pairs, list files, blocklisted pairs (rustdesk.md §5: checked every 3 s).
SWEEP_INTERVAL = 3.0
#: The lists in the data directory: one IP per line, text after the first space ignored.
BLACKLIST_FILE = "blacklist.txt"
BLOCKLIST_FILE = "blocklist.txt"
#: A pair's bandwidth budget holds this many seconds' worth of bytes (at least 64 KiB).
BURST_SECONDS = 0.1
#: A pair's rate over the last this many seconds is what L{RelayService.pairs} reports.
RATE_WINDOW = 3.0


def megabitsToBytes(mbps: float) -> float:
    """hbbr's Mb/s (1024 x 1024 bits) in bytes per second; 0 stays 0 (no limit)."""
    return mbps * 1024 * 1024 / 8


def readAddressList(path: str) -> frozenset[str]:
    """The addresses in an hbbr list file; a missing file is an empty list."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return frozenset()
    out = set()
    for line in lines:
        word = line.strip().split(" ", 1)[0].strip()
        if not word or word.startswith("#"):
            continue
        try:
            out.add(str(ipaddress.ip_address(word)))
        except ValueError:
            log.warn("{path}: ignoring {word!r}, not an IP address", path=path, word=word)
    return frozenset(out)


def bandwidthBucket(rate: float, now: float) -> TokenBucket:
    """A byte budget of C{rate} bytes/s holding L{BURST_SECONDS} of it (at least 64 KiB)."""
    return TokenBucket(rate, now, max(rate * BURST_SECONDS, 64 * 1024))


@dataclass(frozen=True)
class RelayPairInfo:
    """One relay pair, as operators list them.

    @ivar uuid: the uuid both legs sent.
    @ivar a: the first leg's address (the one that waited); C{b} the second's.
    @ivar age: seconds since the pair formed.
    @ivar bytes: bytes relayed, both directions.
    @ivar rate: bytes per second, both directions, over the last few seconds.
    """

    uuid: str
    a: str
    b: str
    age: float
    bytes: int
    rate: float


class Pair:
    """Two paired legs, their accounting and their bandwidth budget."""

    __slots__ = ("a", "b", "uuid", "service", "bucket", "lastActivity", "bytes", "started",
                 "_resume", "closed", "downgraded", "_rateMark", "_lastRate")

    def __init__(self, service: RelayService, uuid: str, a: RelayLeg, b: RelayLeg,
                 rate: float) -> None:
        now = service.clock.seconds()
        self.service = service
        self.uuid = uuid
        self.a, self.b = a, b
        self.bucket: TokenBucket | None = None
        self.limit(rate)
        self.lastActivity = now
        self.started = now
        self.bytes = 0
        self._resume: IDelayedCall | None = None
        self.closed = False
        self.downgraded = False
        #: (time, bytes) at the start of the current rate window.
        self._rateMark = (now, 0)
        self._lastRate: float | None = None

    def limit(self, rate: float) -> None:
        """Change the pair's bandwidth to C{rate} bytes/s (0: none)."""
        self.bucket = bandwidthBucket(rate, self.service.clock.seconds()) if rate else None

    def rate(self, now: float) -> float:
        """Bytes per second over the current window, or the last one while the current
        one is under a second old."""
        since, count = self._rateMark
        elapsed = now - since
        if elapsed < 1.0 and self._lastRate is not None:
            return self._lastRate
        return (self.bytes - count) / elapsed if elapsed > 0 else 0.0

    def markRate(self, now: float) -> None:
        """Close the current rate window if it is L{RATE_WINDOW} old (every sweep)."""
        since, count = self._rateMark
        if now - since >= RATE_WINDOW:
            self._lastRate = (self.bytes - count) / (now - since)
            self._rateMark = (now, self.bytes)

    def forward(self, source: RelayLeg, data: bytes, first: bool = True,
                last: bool = True) -> None:
        """Send C{data} from C{source} to the other leg (a piece of a message unless
        C{first} and C{last}), then apply the limits."""
        if not data or self.closed:
            return
        target = self.b if source is self.a else self.a
        target.deliver(data, first, last)
        n = len(data)
        self.bytes += n
        service = self.service
        service.stats.add("relayed_bytes", n)
        now = service.clock.seconds()
        self.lastActivity = now
        wait = self.bucket.debit(n, now) if self.bucket is not None else 0.0
        if service.totalBucket is not None:
            wait = max(wait, service.totalBucket.debit(n, now))
        if wait > 0 and self._resume is None:
            service.stats.add("throttled")
            self.a.pauseReading("rate")
            self.b.pauseReading("rate")
            self._resume = service.clock.callLater(wait, self._unthrottle)

    def _unthrottle(self) -> None:
        self._resume = None
        if not self.closed:
            self.a.resumeReading("rate")
            self.b.resumeReading("rate")

    def close(self) -> None:
        """End the relay: close both legs."""
        if self.closed:
            return
        self.closed = True
        if self._resume is not None and self._resume.active():
            self._resume.cancel()
        self._resume = None
        self.service.pairClosed(self)
        self.a.close()
        self.b.close()


class RelayService(ListeningService):
    """hbbr: listeners on the relay port (TCP) and port + 2 (WebSocket), pairing, limits.

    @param reactor: time and, when started, sockets.
    @param key: the key legs must send; empty means no check.
    @param dataDir: where C{blacklist.txt} and C{blocklist.txt} are read (re-read when
        they change), or C{None} for no lists.
    @param bandwidth: per-pair limit, bytes/s (0: none); C{totalBandwidth} for all pairs;
        C{limitSpeed} per pair when either address is blacklisted, or once a pair that ran
        C{downgradeStart} seconds averaged more than C{downgradeThreshold} x C{bandwidth}
        (hbbr's downgrade, rustdesk.md §5).
    """

    name = "relay"
    listeningName = "relay server"

    def __init__(
        self,
        reactor: Any,
        *,
        key: str = "",
        dataDir: str | None = None,
        bandwidth: float = 0.0,
        totalBandwidth: float = 0.0,
        limitSpeed: float = 0.0,
        downgradeThreshold: float = 0.0,
        downgradeStart: float = 1800.0,
        idleTimeout: float = 30.0,
        listen: Iterable[str] = (),
        port: int = 21117,
        maxConnections: int = 10000,
        maxPendingPerIp: int = 64,
    ) -> None:
        super().__init__()
        self.reactor = reactor
        self.clock = reactor
        self.key = key
        self.dataDir = dataDir
        self.bandwidth = bandwidth
        self.limitSpeed = limitSpeed
        self.downgradeThreshold = downgradeThreshold
        self.downgradeStart = downgradeStart
        self.totalBucket = bandwidthBucket(totalBandwidth, reactor.seconds()) \
            if totalBandwidth else None
        self.idleTimeout = idleTimeout
        self.listenAddresses = tuple(listen)
        self.port = port
        self.maxConnections = maxConnections
        self.maxPendingPerIp = maxPendingPerIp
        self.waiting: dict[str, tuple[RelayLeg, IDelayedCall]] = {}
        #: Set by L{startDrain}: no new pairs, the running ones continue.
        self.draining = False
        self.activePairs: set[Pair] = set()
        self.connections = 0
        self._pendingPerIp: dict[str, int] = {}
        self.blacklist: frozenset[str] = frozenset()
        self.blocklist: frozenset[str] = frozenset()
        self._listStamps: dict[str, tuple[float, int] | None] = {}
        self._sweep = LoopingCall(self.sweep)
        self._sweep.clock = reactor
        self.badInput = RateLimitedLog(log, reactor)
        self.events = RateLimitedLog(log, reactor, burst=20)
        self.stats = Stats()
        self.stats.gauge("pairs", lambda: len(self.activePairs))
        self.stats.gauge("waiting", lambda: len(self.waiting))
        self.stats.gauge("connections", lambda: self.connections)
        self.reloadLists()

    @classmethod
    def fromConfig(cls, context: Any) -> RelayService:
        """The service configured by an L{p2pnet.app.AppContext}."""
        config = context.config
        key = relayKey(config.relay_key, None, context.dataDir) if config.relay_key else ""
        return cls(
            context.reactor,
            key=key,
            dataDir=context.dataDir,
            bandwidth=megabitsToBytes(config.relay_bandwidth),
            totalBandwidth=megabitsToBytes(config.relay_total_bandwidth),
            limitSpeed=megabitsToBytes(config.relay_limit_speed),
            downgradeThreshold=config.relay_downgrade_threshold,
            downgradeStart=config.relay_downgrade_start,
            idleTimeout=config.relay_idle_timeout,
            listen=config.listen,
            port=config.relay_port,
            maxConnections=config.max_connections,
            maxPendingPerIp=config.max_connections_per_ip,
        )

    # -- listeners --------------------------------------------------------------------------

    def listen(self) -> None:
        """TCP on the relay port (C{tcp}) and WebSocket on port + 2 (C{ws}), on every
        listen address."""
        hosts = bindAddresses(self.listenAddresses)
        self.listenEverywhere("tcp", hosts, self.port, lambda host, port: listenTCP(
            self.reactor, RelayStreamFactory(self), host, port, "relay-port"))
        self.listenEverywhere("ws", hosts, self.port + 2 if self.port else 0,
                              lambda host, port: listenTCP(
                                  self.reactor, relayWebSocketSite(self, self.reactor), host, port,
                                  "relay-port", "WebSocket (relay-port + 2)"))

    def listeningNote(self) -> str:
        """Whether legs need the key, for the log line."""
        return ", key required" if self.key else ""

    def startService(self) -> None:
        super().startService()
        self._sweep.start(SWEEP_INTERVAL, now=False)

    def stopService(self) -> Deferred[None]:
        closed = super().stopService()
        if self._sweep.running:
            self._sweep.stop()
        for pair in list(self.activePairs):
            pair.close()
        for leg, call in list(self.waiting.values()):
            if call.active():
                call.cancel()
            leg.close()
        self.waiting.clear()
        return closed

    # -- lists --------------------------------------------------------------------------------

    def _stamp(self, path: str) -> tuple[float, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def reloadLists(self) -> None:
        """Re-read C{blacklist.txt} / C{blocklist.txt} if they changed since last read."""
        if self.dataDir is None:
            return
        for name in (BLACKLIST_FILE, BLOCKLIST_FILE):
            path = os.path.join(self.dataDir, name)
            stamp = self._stamp(path)
            if name in self._listStamps and self._listStamps[name] == stamp:
                continue
            self._listStamps[name] = stamp
            addresses = readAddressList(path)
            if name == BLACKLIST_FILE:
                self.blacklist = addresses
            else:
                self.blocklist = addresses
            if stamp is not None or addresses:
                log.info("relay {name}: {n} addresses", name=name, n=len(addresses))

    # -- connections and pairing --------------------------------------------------------------

    def legConnected(self, host: str) -> bool:
        """A new connection from C{host}: C{False} to refuse it (blocklist, limits)."""
        if host in self.blocklist:
            self.stats.add("refused_blocklist")
            return False
        if self.connections >= self.maxConnections:
            self.stats.add("refused_limit")
            self.badInput.warn("relay-limit", "relay connection from {host} refused: "
                               "too many connections", host=host)
            return False
        if self._pendingPerIp.get(host, 0) >= self.maxPendingPerIp:
            self.stats.add("refused_limit")
            self.badInput.warn("relay-ip-limit", "relay connection from {host} refused: "
                               "too many unpaired connections", host=host)
            return False
        self.connections += 1
        self._pendingPerIp[host] = self._pendingPerIp.get(host, 0) + 1
        return True

    def _unpend(self, host: str) -> None:
        left = self._pendingPerIp.get(host, 1) - 1
        if left > 0:
            self._pendingPerIp[host] = left
        else:
            self._pendingPerIp.pop(host, None)

    def legLost(self, leg: RelayLeg, pair: Splice | None, pending: bool) -> None:
        """A counted connection closed; forget it wherever it is."""
        self.connections -= 1
        if pending:
            self._unpend(leg.host)
        entry = self.waiting.get(leg.uuid)
        if entry is not None and entry[0] is leg:
            del self.waiting[leg.uuid]
            if entry[1].active():
                entry[1].cancel()
        if pair is not None:
            pair.close()

    def keyAccepted(self, licenceKey: str) -> bool:
        """Whether a leg's key passes (constant-time comparison; no key set = all pass)."""
        if not self.key:
            return True
        return hmac.compare_digest(licenceKey.encode(), self.key.encode())

    def requestRelay(self, leg: RelayLeg, uuid: str, licenceKey: str) -> bool:
        """A leg's first RequestRelay (rustdesk.md §5): wait for its partner or pair; C{False} refuses."""
        if not self.keyAccepted(licenceKey):
            self.stats.add("refused_key")
            self.badInput.warn("relay-key", "relay authentication failed from {host}: "
                               "invalid key", host=leg.host)
            return False
        if not uuid:
            self.stats.add("refused_no_uuid")
            return False
        waiting = self.waiting.pop(uuid, None)
        if waiting is None and self.draining:
            # Draining: the second leg of a pair already waiting is still paired, a new
            # uuid is refused, so the client's retry goes to another relay.
            self.stats.add("refused_draining")
            return False
        if waiting is None:
            call = self.clock.callLater(PAIR_TIMEOUT, self._unpaired, uuid, leg)
            self.waiting[uuid] = (leg, call)
            return True
        first, call = waiting
        if call.active():
            call.cancel()
        self._unpend(first.host)
        self._unpend(leg.host)
        blacklisted = first.host in self.blacklist or leg.host in self.blacklist
        rate = self.limitSpeed if blacklisted else self.bandwidth
        pair = Pair(self, uuid, first, leg, rate)
        self.activePairs.add(pair)
        self.stats.add("paired")
        self.events.info("relay-paired", "relay paired {a} and {b}{slow}", a=first.host,
                         b=leg.host, slow=" (blacklisted: limited)" if blacklisted else "")
        first.startSplicing(leg, pair)
        leg.startSplicing(first, pair)
        first.flushPending()
        leg.flushPending()
        return True

    def _unpaired(self, uuid: str, leg: RelayLeg) -> None:
        entry = self.waiting.get(uuid)
        if entry is not None and entry[0] is leg:
            del self.waiting[uuid]
            self.stats.add("unpaired_timeout")
            leg.close()

    def pairClosed(self, pair: Pair) -> None:
        """Forget a finished pair."""
        if pair in self.activePairs:
            self.activePairs.discard(pair)
            self.events.info("relay-closed", "relay pair closed after {bytes} bytes",
                             bytes=pair.bytes)

    def sweep(self) -> None:
        """Every few seconds: re-read the lists, end idle and blocklisted pairs, downgrade."""
        self.reloadLists()
        now = self.clock.seconds()
        for pair in list(self.activePairs):
            pair.markRate(now)
            if now - pair.lastActivity >= self.idleTimeout:
                self.stats.add("idle_timeout")
                pair.close()
            elif pair.a.host in self.blocklist or pair.b.host in self.blocklist:
                self.stats.add("ended_blocklist")
                pair.close()
            else:
                self._maybeDowngrade(pair, now)

    def _maybeDowngrade(self, pair: Pair, now: float) -> None:
        elapsed = now - pair.started
        if pair.downgraded or not self.downgradeThreshold or not self.bandwidth or \
                elapsed <= self.downgradeStart:
            return
        if pair.bytes / elapsed > self.downgradeThreshold * self.bandwidth:
            pair.downgraded = True
            pair.limit(self.limitSpeed)
            self.stats.add("downgraded")
            log.info("relay pair {a} - {b} downgraded to the limited speed",
                     a=pair.a.host, b=pair.b.host)

    # -- operators ------------------------------------------------------------------------

    def pairs(self) -> list[RelayPairInfo]:
        """Every active pair, oldest first (for the operator method C{relay.pairs.list})."""
        now = self.clock.seconds()
        return [RelayPairInfo(p.uuid, p.a.host, p.b.host, now - p.started, p.bytes,
                              p.rate(now))
                for p in sorted(self.activePairs, key=lambda p: (p.started, p.uuid))]

    def reconfigure(self, context: Any) -> None:
        """A reload: read the black and block lists now (the sweep re-reads them too)."""
        self.reloadLists()

    def startDrain(self) -> None:
        """Stop pairing new uuids; pairs and legs already waiting continue."""
        self.draining = True

    def remaining(self) -> int:
        """Pairs and waiting legs a drain waits for."""
        return len(self.activePairs) + len(self.waiting)

    def killFromParams(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The operator's kill (C{relay.pairs.kill}): C{params["uuid"]} names the pair.
        Answers C{{"uuid", "killed"}}; C{ValueError} without a uuid."""
        uuid = params.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            raise ValueError("uuid must be a non-empty string")
        return {"uuid": uuid, "killed": self.kill(uuid)}

    def kill(self, uuid: str) -> bool:
        """End the pair of C{uuid} (both connections close); C{False} if there is none."""
        for pair in list(self.activePairs):
            if pair.uuid == uuid:
                self.stats.add("killed")
                log.info("relay pair {uuid} ({a} - {b}) ended by an operator", uuid=uuid,
                         a=pair.a.host, b=pair.b.host)
                pair.close()
                return True
        return False
