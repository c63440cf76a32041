# -*- test-case-name: test.interop.test_rendezvous_relays -*-
"""Which relay server the rendezvous server hands out (rustdesk.md §4.9).

Round-robin among the configured relay servers, keeping only those that accept a TCP
connection when more than one is configured. This is the place a smarter choice (by
region, by load, by what a cluster's other nodes report) will go.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["CHECK_RELAY_INTERVAL", "RelaySelector", "splitHostPort"]

log = Logger()

#: Seconds between relay-server reachability checks (rustdesk.md §4.9).
CHECK_RELAY_INTERVAL = 3.0
#: The relay port assumed when an entry names none (rustdesk.md §4.9).
DEFAULT_RELAY_PORT = 21117


def splitHostPort(entry: str, defaultPort: int) -> tuple[str, int]:
    """C{host}, C{host:port}, C{[v6]} or C{[v6]:port} as C{(host, port)}."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else defaultPort
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port)
    return entry, defaultPort


class _Probe(TwistedProtocol):
    def connectionMade(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()


class RelaySelector:
    """Round-robin choice among relay servers, keeping only reachable ones (rustdesk.md §4.9).

    With more than one configured, every L{CHECK_RELAY_INTERVAL} seconds each is probed
    with a TCP connect (port 21117 unless given); the reachable ones are chosen from,
    all of them until the first round of probes finished.

    @param reactor: time and TCP connections (for the probes).
    """

    def __init__(self, reactor: Any, servers: Sequence[str]) -> None:
        self._reactor = reactor
        self.configured = tuple(servers)
        self.active: tuple[str, ...] = self.configured
        self._counter = itertools.count()
        self._loop: LoopingCall | None = None

    def choose(self) -> str:
        """The next relay server, or empty when none is configured."""
        servers = self.active or self.configured
        if not servers:
            return ""
        if len(servers) == 1:
            return servers[0]
        return servers[next(self._counter) % len(servers)]

    def start(self) -> None:
        """Begin the reachability checks (only with more than one server)."""
        if len(self.configured) > 1:
            self._loop = LoopingCall(self.check)
            self._loop.clock = self._reactor
            self._loop.start(CHECK_RELAY_INTERVAL, now=True)

    def stop(self) -> None:
        """End the checks."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def check(self) -> Deferred[None]:
        """Probe every configured server once and update L{active}."""

        def probe(entry: str) -> Deferred[bool]:
            host, port = splitHostPort(entry, DEFAULT_RELAY_PORT)
            endpoint = HostnameEndpoint(self._reactor, host, port, timeout=CHECK_RELAY_INTERVAL)
            return endpoint.connect(Factory.forProtocol(_Probe)).addCallbacks(
                lambda _: True, lambda _: False)

        def update(results: list[tuple[bool, bool]]) -> None:
            reachable = tuple(e for e, (_, ok) in zip(self.configured, results, strict=True) if ok)
            if reachable != self.active:
                log.info("reachable relay servers: {servers}", servers=", ".join(reachable))
            self.active = reachable

        return defer.DeferredList([probe(e) for e in self.configured]).addCallback(update)
