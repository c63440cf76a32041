# -*- test-case-name: test.unit.test_services_turn -*-
"""Relayed transport addresses: which address to relay from, which port, and the sockets.

The L{RelayAllocator} chooses the address relayed sockets bind to (C{relay-ip}, the
private side of C{external-ip}, the address the client reached, or this host's address
of the family), the address announced to the client (the public side of
C{external-ip}, else the bound one), and random ports in C{relay-ports}; it makes the
sockets only through the injected L{RelaySockets}, so unit tests bind nothing. It
closes an allocation's sockets when the table reports the allocation gone.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet import error as netError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from p2pnet.addresses import ExternalAddresses, defaultRouteAddress, family, unmapped
from p2pnet.listen import WILDCARDS
from p2pnet.protocols.stun import StunLink
from p2pnet.protocols.turn import RelayDatagramProtocol, RelayHandler, RelaySockets, portInUse
from p2pnet.ratelog import RateLimitedLog
from p2pnet.services.turn_allocation import Allocation
from p2pnet.services.turn_table import QuietObserver, Reservation

__all__ = ["PORT_ATTEMPTS", "RelayAllocator"]

#: Random ports tried before an Allocate gets 508 Insufficient Capacity.
PORT_ATTEMPTS = 40


class RelayAllocator(QuietObserver):
    """Binds, announces and closes the relayed sockets of allocations.

    @param sockets: makes the sockets (L{p2pnet.protocols.turn.KernelRelaySockets}, or
        L{p2pnet.testing.MemoryRelaySockets} in tests).
    @param relayPorts: the inclusive port range.
    @param relayAddresses: the address to bind per family (C{relay-ip}).
    @param external: public addresses behind 1:1 NAT (C{external-ip}).
    @param listenAddresses: the STUN service's listen addresses (read when needed).
    @param rng: port choice (tests pass a seeded one).
    @param log: where "no relay address" is said once per family.
    @param badInputLog: rate-limited warnings (bind errors).
    @param routeAddress: this host's address towards the Internet for a family
        (L{p2pnet.addresses.defaultRouteAddress}; tests pass their own).
    """

    def __init__(self, sockets: RelaySockets, relayPorts: tuple[int, int], *,
                 relayAddresses: Mapping[int, str] | None = None,
                 external: ExternalAddresses | None = None,
                 listenAddresses: Callable[[], Sequence[str]] = lambda: (),
                 rng: random.Random | None = None, log: Logger | None = None,
                 badInputLog: RateLimitedLog | None = None,
                 routeAddress: Callable[[int], str | None] = defaultRouteAddress) -> None:
        self.sockets = sockets
        self.relayPorts = relayPorts
        self.relayAddresses = dict(relayAddresses or {})
        self.external = external or ExternalAddresses()
        self.listenAddresses = listenAddresses
        self.random = rng or random.SystemRandom()
        self.log = log or Logger()
        self.badInputLog = badInputLog
        self.routeAddress = routeAddress
        self.usedPorts: set[tuple[str, int]] = set()
        self._ports: dict[Any, IListeningPort] = {}
        self._routes: dict[int, str | None] = {}
        self._saidNone: set[int] = set()

    # -- which address ---------------------------------------------------------------------

    def relayHost(self, link: StunLink, addressFamily: int) -> str | None:
        """The address to relay from for a client on C{link}, or C{None} if there is none
        of that family: C{relay-ip}, else the private side of C{external-ip}, else the
        address the client reached when it is specific, else a specific listen address,
        else (wildcard listener) this host's address towards the Internet."""
        configured = self.relayAddresses.get(addressFamily)
        if configured is not None:
            return configured
        local = unmapped(link.local[0])
        private = self.external.privateAddresses(addressFamily)
        if private:
            return local if local in private else private[0]
        if family(local) == addressFamily and local not in WILDCARDS:
            return local
        listen = list(self.listenAddresses())
        specific = [a for a in listen if family(a) == addressFamily and a not in WILDCARDS]
        if specific:
            return specific[0]
        if not any(family(a) == addressFamily for a in listen):
            return None
        if addressFamily not in self._routes:
            self._routes[addressFamily] = self.routeAddress(addressFamily)
        host = self._routes[addressFamily]
        if host is None and addressFamily not in self._saidNone:
            self._saidNone.add(addressFamily)
            self.log.warn(
                "TURN has no IPv{family} relay address: the listener is a wildcard and "
                "this host has no IPv{family} default route; Allocate requests for "
                "IPv{family} get 440. Set relay-ip (or external-ip PUBLIC/PRIVATE).",
                family=addressFamily, event="turn.no_relay_address")
        return host

    def announce(self, host: str, port: int) -> tuple[str, int]:
        """The address told to clients for a socket bound to C{(host, port)}."""
        return (self.external.public(host), port)

    def _record(self, allocation: Allocation, host: str, port: int) -> None:
        addressFamily = family(host)
        allocation.relayed[addressFamily] = (host, port)
        if self.external:
            if allocation.announced is allocation.relayed:
                allocation.announced = dict(allocation.relayed)
            allocation.announced[addressFamily] = self.announce(host, port)

    # -- UDP ---------------------------------------------------------------------------------

    def openUdp(self, allocation: Allocation, host: str, handler: RelayHandler, even: bool,
                reserve: Callable[[Reservation], None] | None) -> bytes | None:
        """Bind a relayed UDP socket on C{host} for C{allocation}.

        @param even: an even port (EVEN-PORT).
        @param reserve: when given, hold the next port too and hand its reservation to it.
        @return: C{None} when no port could be had; the reservation token when one was
            made; else C{b""}.
        """
        low, high = self.relayPorts
        for _ in range(PORT_ATTEMPTS):
            port = self.random.randint(low, high)
            if even:
                port &= ~1
                if port < low or (reserve is not None and port + 1 > high):
                    continue
            if (host, port) in self.usedPorts or (
                    reserve is not None and (host, port + 1) in self.usedPorts):
                continue
            try:
                handle = self.sockets.bindUdp(host, port)
            except OSError as e:
                if portInUse(e):
                    continue
                if self.badInputLog is not None:
                    self.badInputLog.warn("relay", "cannot bind relay {host}: {error}",
                                          host=host, error=str(e))
                return None
            token = b""
            if reserve is not None:
                try:
                    held = self.sockets.bindUdp(host, port + 1)
                except OSError:
                    self.sockets.releaseUdp(handle)
                    continue
                token = os.urandom(8)
                self.usedPorts.add((host, port + 1))
                reserve(Reservation(token, held, host, port + 1, allocation.username,
                                    functools.partial(self._unreserve, held,
                                                      (host, port + 1))))
            self.adoptUdp(allocation, handle, host, port, handler)
            return token
        return None

    def _unreserve(self, handle: Any, address: tuple[str, int]) -> None:
        self.sockets.releaseUdp(handle)
        self.usedPorts.discard(address)

    def adoptUdp(self, allocation: Allocation, handle: Any, host: str, port: int,
                 handler: RelayHandler) -> None:
        """Serve a bound socket as C{allocation}'s relayed address of its family."""
        protocol = RelayDatagramProtocol(handler, allocation)
        listening = self.sockets.adoptUdp(handle, protocol, allocation.dontFragment)
        allocation.relays[family(host)] = protocol
        self._record(allocation, host, port)
        self._ports[protocol] = listening
        self.usedPorts.add((host, port))

    def setDontFragment(self, allocation: Allocation, addressFamily: int) -> None:
        """Send with DF from C{allocation}'s relayed socket of C{addressFamily}."""
        listening = self._ports.get(allocation.relays.get(addressFamily))
        if listening is not None:
            self.sockets.setDontFragment(listening)

    # -- TCP (RFC 6062) ----------------------------------------------------------------------

    def listenTcp(self, allocation: Allocation, host: str, factory: Factory) -> bool:
        """Listen on a random port of the range for peers of a TCP allocation."""
        low, high = self.relayPorts
        for _ in range(PORT_ATTEMPTS):
            port = self.random.randint(low, high)
            if (host, port) in self.usedPorts:
                continue
            try:
                listening = self.sockets.listenTcp(factory, host, port)
            except netError.CannotListenError:
                continue
            allocation.relays[family(host)] = factory
            self._record(allocation, host, port)
            self._ports[factory] = listening
            self.usedPorts.add((host, port))
            return True
        return False

    # -- the end (a TableObserver) -----------------------------------------------------------

    def close(self, allocation: Allocation) -> None:
        """Close every relayed socket of C{allocation} and free its ports."""
        for addressFamily, protocol in list(allocation.relays.items()):
            listening = self._ports.pop(protocol, None)
            if listening is not None:
                listening.stopListening()
            self.usedPorts.discard(allocation.relayed[addressFamily])
        allocation.relays.clear()

    def allocationDeleted(self, allocation: Allocation, why: str) -> None:
        """Close the allocation's sockets."""
        self.close(allocation)
