# -*- test-case-name: test.unit.test_cluster,test.interop.test_cluster_redis -*-
"""The node table of a cluster: each node writes its load to the shared store every
L{BEAT_INTERVAL} seconds (an entry expires after L{BEAT_TTL} without one), and removes it
when it stops; C{p2pnet cluster --store URL} lists the table (docs/cluster.md).

The load is read from the sibling services' counters (TURN allocations, RustDesk peers
online here, relay pairs, gateway clients), so this module imports no service.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from p2pnet.ratelog import RateLimitedLog
from p2pnet.stats import Stats

__all__ = ["BEAT_INTERVAL", "BEAT_TTL", "ClusterMember", "NodeTable", "nodeLoad"]

log = Logger()

#: Seconds between a node's writes of its load.
BEAT_INTERVAL = 10.0
#: Seconds an entry lives without a new write (a node that died leaves the table).
BEAT_TTL = 30.0

#: The load a node reports: key -> (service, its counter).
LOAD = {
    "allocations": ("turn", "turn.allocations"),
    "peersOnline": ("rendezvous", "peers_online"),
    "relayPairs": ("relay", "pairs"),
    "gatewayClients": ("gateway", "clients_connected"),
}


class NodeTable(Protocol):
    """Where the node table lives (L{p2pnet.store.redis.RedisNodes})."""

    def beat(self, name: str, state: dict[str, Any], ttl: float) -> Deferred[None]:
        """Record C{name}'s state for C{ttl} seconds."""

    def leave(self, name: str) -> Deferred[None]:
        """Forget C{name}."""

    def nodes(self) -> Deferred[dict[str, dict[str, Any]]]:
        """Every node that wrote lately, by name."""

    def close(self) -> None:
        """Release the connection."""


def nodeLoad(services: Mapping[str, Any]) -> dict[str, int]:
    """The counters of L{LOAD} from C{services} (absent services count 0)."""
    out = {}
    for key, (name, counter) in LOAD.items():
        stats = getattr(services.get(name), "stats", None)
        out[key] = int(stats.snapshot().get(counter, 0)) if isinstance(stats, Stats) else 0
    return out


class ClusterMember(Service):
    """Writes this node's entry while it runs, and keeps the others' from the last beat.

    @param siblings: the appliance's services by name, read at every beat.
    @param turnAddresses: where clients reach this node's TURN service, by address
        family (C{{"4": [host, port]}}); read at every beat.
    @ivar known: the node table as read after the last beat.
    """

    name: str | None = "cluster"

    def __init__(self, reactor: Any, table: NodeTable, nodeName: str,
                 siblings: Callable[[], Mapping[str, Any]],
                 turnAddresses: Callable[[], dict[str, list[Any]]] = dict) -> None:
        self.reactor = reactor
        self.table = table
        self.nodeName = nodeName
        self.siblings = siblings
        self.turnAddresses = turnAddresses
        self.known: dict[str, dict[str, Any]] = {}
        self.startedAt = 0.0
        self.failures = RateLimitedLog(log, reactor)
        self._loop: LoopingCall | None = None

    def state(self) -> dict[str, Any]:
        """What this node writes: its services, load, and when it started and wrote."""
        now = self.reactor.seconds()
        services = self.siblings()
        table = getattr(services.get("turn"), "table", None)
        users = table.perUser() if table is not None else {}
        return {"services": sorted(n for n, s in services.items() if s.running),
                "load": nodeLoad(services), "startedAt": int(self.startedAt),
                "updatedAt": int(now), "turn": self.turnAddresses(), "users": users}

    def beat(self) -> None:
        """Write the entry now and read the others' (a failure is logged at a bounded
        rate)."""
        d: Deferred[Any] = self.table.beat(self.nodeName, self.state(), BEAT_TTL)
        d.addCallback(lambda _: self.table.nodes())
        d.addCallback(self._read)
        d.addErrback(lambda f: self.failures.warn(
            "cluster-beat", "cannot exchange node entries with the store: {error}",
            error=f.getErrorMessage()))

    def _read(self, nodes: dict[str, dict[str, Any]]) -> None:
        self.known = nodes

    def heldElsewhere(self, username: str) -> int:
        """Ports C{username} holds at the other nodes, as they wrote at most
        L{BEAT_TTL} seconds ago (the cluster-wide user quota counts them)."""
        now = self.reactor.seconds()
        return sum(int((state.get("users") or {}).get(username, 0))
                   for name, state in self.known.items()
                   if name != self.nodeName and now - state.get("updatedAt", 0) <= BEAT_TTL)

    def leastLoaded(self, addressFamily: int, allocations: int) -> tuple[str, int] | None:
        """The TURN address of the family C{addressFamily} of the other node holding the
        fewest allocations, if it holds fewer than C{allocations} (this node's count)
        and wrote within L{BEAT_TTL} seconds."""
        now = self.reactor.seconds()
        best: tuple[int, tuple[str, int]] | None = None
        for name, state in self.known.items():
            address = (state.get("turn") or {}).get(str(addressFamily))
            if name == self.nodeName or not address or \
                    now - state.get("updatedAt", 0) > BEAT_TTL:
                continue
            load = int(state.get("load", {}).get("allocations", 0))
            if load < allocations and (best is None or load < best[0]):
                best = (load, (str(address[0]), int(address[1])))
        return None if best is None else best[1]

    def startService(self) -> None:
        """Beat now and every L{BEAT_INTERVAL} seconds."""
        super().startService()
        self.startedAt = self.reactor.seconds()
        self._loop = LoopingCall(self.beat)
        self._loop.clock = self.reactor
        self._loop.start(BEAT_INTERVAL, now=True)

    def stopService(self) -> Deferred[None]:
        """Stop beating and leave the table."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        d = self.table.leave(self.nodeName)
        d.addErrback(lambda f: None)
        return d.addBoth(lambda _: self.table.close())
