# -*- test-case-name: test.test_turn_policy -*-
"""Which peer addresses a public TURN server relays to.

A TURN server relays from its own address, so a relay to 127.0.0.1 or 10.0.0.1 reaches
services that trust the server's network (coturn's CVE-2020-26262 was exactly a relay
to loopback). By default every peer in a loopback, private, shared (CGN), link-local,
multicast, reserved or unspecified range is refused; the operator opens ranges with
C{allow-peer}, closes more with C{deny-peer}, and opens loopback with
C{allow-loopback-peers} (tests and single-host set-ups).

Among the configured networks containing an address, the most specific (longest prefix)
decides, and a deny wins a tie; only when none contains it do the defaults apply.
IPv4-mapped, NAT64 (64:ff9b::/96), 6to4 and Teredo IPv6 addresses are judged by the IPv4
address they lead to.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["PeerPolicy"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598, not in is_private
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")

#: Decisions cached per address; bounded, emptied when full.
CACHE_SIZE = 4096


def _embeddedIPv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


class PeerPolicy:
    """Decides whether a peer address may be relayed to.

    @param allow: networks (CIDR text or address) to relay to even inside a refused range.
    @param deny: networks never to relay to.
    @param allowLoopback: relay to 127.0.0.0/8 and ::1 (off on a public server).
    """

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = (),
                 allowLoopback: bool = False) -> None:
        rules: list[tuple[IPNetwork, bool]] = []
        rules += [(ipaddress.ip_network(n, strict=False), True) for n in allow]
        rules += [(ipaddress.ip_network(n, strict=False), False) for n in deny]
        # Most specific first; at equal length deny (False) sorts before allow (True).
        rules.sort(key=lambda rule: (-rule[0].prefixlen, rule[1]))
        self._rules = rules
        self.allowLoopback = allowLoopback
        self._cache: dict[str, bool] = {}

    def permitted(self, host: str) -> bool:
        """Whether data may be relayed to peer address C{host} (any textual IP)."""
        decision = self._cache.get(host)
        if decision is None:
            decision = self._decide(host)
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[host] = decision
        return decision

    def _decide(self, host: str) -> bool:
        try:
            address: IPAddress = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address):
            inner = _embeddedIPv4(address)
            if inner is not None:
                # Judged by where it leads; a rule naming the IPv6 form still wins.
                for network, allowed in self._rules:
                    if network.version == 6 and address in network:
                        return allowed
                return self._decideOne(inner)
        return self._decideOne(address)

    def _decideOne(self, address: IPAddress) -> bool:
        for network, allowed in self._rules:
            if address.version == network.version and address in network:
                return allowed
        if address.is_loopback:
            return self.allowLoopback
        if isinstance(address, ipaddress.IPv4Address) and (
            address in _SHARED or address in _THIS_NETWORK
            or address == ipaddress.IPv4Address("255.255.255.255")
        ):
            return False
        return not (
            address.is_private or address.is_link_local or address.is_multicast
            or address.is_unspecified or address.is_reserved
            or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
        )
