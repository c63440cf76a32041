"""An in-memory network for two sans-IO ICE cores, with optional NATs and loss."""

from __future__ import annotations

import random
from collections.abc import Callable

from p2pnet.ice.core import IceCore, Selected, Transmit

Address = tuple[str, int]


class Network:
    """Delivers what each core transmits to the core owning the destination base.

    @ivar nat: maps a (private) source base to the public address the far side sees;
        packets to that public address are delivered to the base.
    @ivar drop: a predicate on C{Transmit}; true drops the datagram.
    @ivar sent: every C{(sender name, Transmit)} that went out.
    """

    def __init__(self, *cores: tuple[str, IceCore]) -> None:
        self.cores = dict(cores)
        self.now = 0.0
        self.nat: dict[Address, Address] = {}
        self.drop: Callable[[Transmit], bool] = lambda t: False
        self.sent: list[tuple[str, Transmit]] = []
        self.events: dict[str, list[object]] = {name: [] for name in self.cores}

    def owner(self, address: Address) -> tuple[str, Address] | None:
        """The core and base a datagram to C{address} reaches."""
        for private, public in self.nat.items():
            if public == address:
                address = private
        for name, core in self.cores.items():
            if any(lc.base == address for lc in core.locals):
                return name, address
        return None

    def flush(self) -> None:
        """Deliver every pending datagram (and what answering them sends) now."""
        for _ in range(1000):
            moved = False
            for name, core in self.cores.items():
                self.events[name] += core.takeEvents()
                for t in core.takeTransmits():
                    moved = True
                    self.sent.append((name, t))
                    if self.drop(t):
                        continue
                    found = self.owner(t.remote)
                    if found is None:
                        continue
                    target, base = found
                    self.cores[target].receive(t.data, base, self.nat.get(t.local, t.local),
                                               self.now)
            if not moved:
                for name, core in self.cores.items():
                    self.events[name] += core.takeEvents()
                return
        raise AssertionError("the network never went quiet")

    def run(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        """Advance time to each deadline up to C{until}, delivering as it goes."""
        self.flush()
        for _ in range(100000):
            if stop is not None and stop():
                return
            deadlines = [d for d in (c.nextDeadline() for c in self.cores.values())
                         if d is not None]
            if not deadlines or min(deadlines) > until:
                self.now = until
                for core in self.cores.values():
                    core.tick(self.now)
                self.flush()
                return
            self.now = max(self.now, min(deadlines))
            for core in self.cores.values():
                core.tick(self.now)
            self.flush()
        raise AssertionError("too many steps")

    def selected(self, name: str) -> list[Selected]:
        """The Selected events C{name} emitted."""
        return [e for e in self.events[name] if isinstance(e, Selected)]


def exchange(a: IceCore, b: IceCore, now: float = 0.0) -> None:
    """Signal each core's credentials and candidates to the other, with end-of-candidates."""
    for x, y in ((a, b), (b, a)):
        y.setRemoteCredentials(x.ufrag, x.pwd, lite=x.lite, now=now)
        for lc in x.locals:
            if lc.type in ("host", "srflx", "relay"):
                y.addRemoteCandidate(lc.candidate)
        x.endOfLocalCandidates()
        y.endOfRemoteCandidates()


def pair(lite: bool = False, seed: int = 1) -> tuple[IceCore, IceCore]:
    """A controlling full agent and a controlled one (lite when asked), one host
    candidate each."""
    a = IceCore(controlling=True, rng=random.Random(seed))
    b = IceCore(controlling=False, lite=lite, rng=random.Random(seed + 100))
    a.addLocalCandidate("host", ("192.0.2.1", 5000), ("192.0.2.1", 5000))
    b.addLocalCandidate("host", ("192.0.2.2", 6000), ("192.0.2.2", 6000))
    return a, b
