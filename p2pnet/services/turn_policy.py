# -*- test-case-name: test.unit.test_turn_policy -*-
"""Which peer addresses a public TURN server relays to.

A TURN server relays from its own address, so a relay to 127.0.0.1 or 10.0.0.1 reaches
services that trust the server's network (coturn's CVE-2020-26262 was exactly a relay
to loopback). The defaults follow IANA's special-purpose address registries (RFC 6890
and the rows added since): a peer is relayed to only when the most specific registry
row containing it says "Globally Reachable: True". Python's C{ipaddress.is_private} and
friends are not enough: they miss 192.0.0.0/24 (all but .9 and .10), 192.88.99.0/24,
64:ff9b:1::/48, 5f00::/16 and others.

The tables below are the registries' rows as of 2025, each with its RFC, the
"Forwardable" and "Globally Reachable" columns (C{None} where the registry says N/A),
plus the two facts the special-purpose registries leave to other IANA registries: IPv4
multicast (224.0.0.0/4) and the IPv6 space outside 2000::/3 (IANA's IPv6 Address Space
registry: "Reserved by IETF", multicast ff00::/8), which are not relayed to either.

Rows marked C{inner} hold an IPv4 address (IPv4-mapped, NAT64 64:ff9b::/96, 6to4
2002::/16, Teredo 2001::/32): the peer is judged by the IPv4 address it leads to.

The operator opens ranges with C{allow-peer}, closes more with C{deny-peer}, and opens
loopback with C{allow-loopback-peers} (tests and single-host set-ups). Among the
configured networks containing an address, the most specific (longest prefix) decides,
and a deny wins a tie; only when none contains it do the registry defaults apply.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from p2pnet.boundedmap import BoundedMap

__all__ = ["IPV4_SPECIAL", "IPV6_SPECIAL", "PeerPolicy", "RegistryRow", "registryRow"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Decisions cached per address; bounded, least recently used forgotten first.
CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class RegistryRow:
    """One row of an IANA address registry, as the peer policy reads it.

    @ivar network: the address block.
    @ivar name: the registry's name for it.
    @ivar rfc: where the registry row points.
    @ivar forwardable: the "Forwardable" column (C{None}: N/A).
    @ivar globallyReachable: the "Globally Reachable" column (C{None}: N/A); only
        C{True} lets a peer in by default.
    @ivar inner: judge the IPv4 address embedded in this IPv6 block instead.
    """

    network: IPNetwork
    name: str
    rfc: str
    forwardable: bool | None
    globallyReachable: bool | None
    inner: bool = False


def _row(block: str, name: str, rfc: str, forwardable: bool | None,
         reachable: bool | None, inner: bool = False) -> RegistryRow:
    return RegistryRow(ipaddress.ip_network(block), name, rfc, forwardable, reachable, inner)


T, F, NA = True, False, None

#: IANA IPv4 Special-Purpose Address Registry (iana-ipv4-special-registry), and the
#: unicast/multicast split of the IPv4 address space.
IPV4_SPECIAL: tuple[RegistryRow, ...] = (
    _row("0.0.0.0/0", "IPv4 unicast (not special-purpose)", "RFC 791", T, T),
    _row("0.0.0.0/8", '"This network"', "RFC 791 §3.2", F, F),
    _row("0.0.0.0/32", '"This host on this network"', "RFC 1122 §3.2.1.3", F, F),
    _row("10.0.0.0/8", "Private-Use", "RFC 1918", T, F),
    _row("100.64.0.0/10", "Shared Address Space", "RFC 6598", T, F),
    _row("127.0.0.0/8", "Loopback", "RFC 1122 §3.2.1.3", F, F),
    _row("169.254.0.0/16", "Link Local", "RFC 3927", F, F),
    _row("172.16.0.0/12", "Private-Use", "RFC 1918", T, F),
    _row("192.0.0.0/24", "IETF Protocol Assignments", "RFC 6890 §2.1", F, F),
    _row("192.0.0.0/29", "IPv4 Service Continuity Prefix", "RFC 7335", T, F),
    _row("192.0.0.8/32", "IPv4 dummy address", "RFC 7600", F, F),
    _row("192.0.0.9/32", "Port Control Protocol Anycast", "RFC 7723", T, T),
    _row("192.0.0.10/32", "Traversal Using Relays around NAT Anycast", "RFC 8155", T, T),
    _row("192.0.0.170/32", "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050 §2.2", F, F),
    _row("192.0.0.171/32", "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050 §2.2", F, F),
    _row("192.0.2.0/24", "Documentation (TEST-NET-1)", "RFC 5737", F, F),
    _row("192.31.196.0/24", "AS112-v4", "RFC 7535", T, T),
    _row("192.52.193.0/24", "AMT", "RFC 7450", T, T),
    _row("192.88.99.0/24", "Deprecated (6to4 Relay Anycast)", "RFC 7526", NA, NA),
    _row("192.88.99.2/32", "6a44-relay anycast address", "RFC 6751", T, F),
    _row("192.168.0.0/16", "Private-Use", "RFC 1918", T, F),
    _row("192.175.48.0/24", "Direct Delegation AS112 Service", "RFC 7534", T, T),
    _row("198.18.0.0/15", "Benchmarking", "RFC 2544", T, F),
    _row("198.51.100.0/24", "Documentation (TEST-NET-2)", "RFC 5737", F, F),
    _row("203.0.113.0/24", "Documentation (TEST-NET-3)", "RFC 5737", F, F),
    _row("224.0.0.0/4", "Multicast (IANA IPv4 Multicast Address Space)", "RFC 5771", NA, F),
    _row("240.0.0.0/4", "Reserved", "RFC 1112 §4", F, F),
    _row("255.255.255.255/32", "Limited Broadcast", "RFC 8190, RFC 919 §7", F, F),
)

#: IANA IPv6 Special-Purpose Address Registry (iana-ipv6-special-registry), and the
#: IANA IPv6 Address Space registry's split: 2000::/3 Global Unicast, ff00::/8
#: Multicast, the rest "Reserved by IETF".
IPV6_SPECIAL: tuple[RegistryRow, ...] = (
    _row("::/0", "Reserved by IETF (IANA IPv6 Address Space)", "RFC 4291", NA, F),
    _row("2000::/3", "Global Unicast (IANA IPv6 Address Space)", "RFC 4291", T, T),
    _row("ff00::/8", "Multicast (IANA IPv6 Address Space)", "RFC 4291", NA, F),
    _row("::1/128", "Loopback Address", "RFC 4291", F, F),
    _row("::/128", "Unspecified Address", "RFC 4291", F, F),
    _row("::ffff:0:0/96", "IPv4-mapped Address", "RFC 4291", F, F, inner=True),
    _row("64:ff9b::/96", "IPv4-IPv6 Translat.", "RFC 6052", T, T, inner=True),
    _row("64:ff9b:1::/48", "IPv4-IPv6 Translat.", "RFC 8215", T, F),
    _row("100::/64", "Discard-Only Address Block", "RFC 6666", T, F),
    _row("100:0:0:1::/64", "Dummy IPv6 Prefix", "RFC 9780", F, F),
    _row("2001::/23", "IETF Protocol Assignments", "RFC 2928", F, F),
    _row("2001::/32", "TEREDO", "RFC 4380, RFC 8190", T, NA, inner=True),
    _row("2001:1::1/128", "Port Control Protocol Anycast", "RFC 7723", T, T),
    _row("2001:1::2/128", "Traversal Using Relays around NAT Anycast", "RFC 8155", T, T),
    _row("2001:1::3/128", "DNS-SD Service Registration Protocol Anycast", "RFC 9665", T, T),
    _row("2001:2::/48", "Benchmarking", "RFC 5180", T, F),
    _row("2001:3::/32", "AMT", "RFC 7450", T, T),
    _row("2001:4:112::/48", "AS112-v6", "RFC 7535", T, T),
    _row("2001:10::/28", "Deprecated (previously ORCHID)", "RFC 4843", NA, NA),
    _row("2001:20::/28", "ORCHIDv2", "RFC 7343", T, T),
    _row("2001:30::/28", "Drone Remote ID Protocol Entity Tags (DETs) Prefix", "RFC 9374",
         T, T),
    _row("2001:db8::/32", "Documentation", "RFC 3849", F, F),
    _row("2002::/16", "6to4", "RFC 3056", T, NA, inner=True),
    _row("2620:4f:8000::/48", "Direct Delegation AS112 Service", "RFC 7534", T, T),
    _row("3fff::/20", "Documentation", "RFC 9637", F, F),
    _row("5f00::/16", "Segment Routing (SRv6) SIDs", "RFC 9602", T, F),
    _row("fc00::/7", "Unique-Local", "RFC 4193, RFC 8190", T, F),
    _row("fe80::/10", "Link-Local Unicast", "RFC 4291", F, F),
)


def _sorted(rows: tuple[RegistryRow, ...]) -> tuple[RegistryRow, ...]:
    return tuple(sorted(rows, key=lambda r: -r.network.prefixlen))


_V4 = _sorted(IPV4_SPECIAL)
_V6 = _sorted(IPV6_SPECIAL)


def registryRow(address: IPAddress) -> RegistryRow:
    """The most specific registry row containing C{address}."""
    for row in _V4 if address.version == 4 else _V6:
        if address in row.network:
            return row
    raise AssertionError("the tables cover the whole address space")  # pragma: no cover


def _embeddedIPv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)  # NAT64 64:ff9b::/96


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
        self._cache: BoundedMap[str, bool] = BoundedMap(CACHE_SIZE)

    def permitted(self, host: str) -> bool:
        """Whether data may be relayed to peer address C{host} (any textual IP)."""
        decision = self._cache.get(host)
        if decision is None:
            decision = self._cache[host] = self._decide(host)
        return decision

    def _decide(self, host: str) -> bool:
        try:
            address: IPAddress = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        for network, allowed in self._rules:
            if address.version == network.version and address in network:
                return allowed
        row = registryRow(address)
        if row.inner and isinstance(address, ipaddress.IPv6Address):
            # Judged by where it leads, rules included.
            return self._decide(str(_embeddedIPv4(address)))
        if address.is_loopback:
            return self.allowLoopback
        return row.globallyReachable is True
