# -*- test-case-name: test.unit.test_addresses -*-
"""Address helpers every layer shares: families, normal forms, source keys, routes.

Sans-IO except L{defaultRouteAddress}, which asks the kernel's routing table through a
connected (never sending) UDP socket.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable

__all__ = [
    "ExternalAddresses",
    "IPAddress",
    "defaultRouteAddress",
    "family",
    "isLoopback",
    "normalizeIp",
    "parseIp",
    "routeSource",
    "socketFamily",
    "sourceKey",
    "unmapped",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Texts whose parse L{parseIp} keeps (least recently used dropped first).
PARSE_CACHE = 4096

#: Documentation addresses (RFC 5737, RFC 3849) a connected UDP socket is pointed at to
#: learn the source address of the default route; no packet is sent.
_ROUTE_PROBES = {4: ("192.0.2.1", 9), 6: ("2001:db8::1", 9)}


def family(host: str) -> int:
    """4 or 6 for a textual address as the socket layer gives it (already valid)."""
    return 6 if ":" in host else 4


def socketFamily(host: str) -> socket.AddressFamily:
    """C{AF_INET} or C{AF_INET6} for a textual address."""
    return socket.AF_INET6 if family(host) == 6 else socket.AF_INET


def unmapped(host: str) -> str:
    """An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as plain IPv4, without a scope
    (fe80::1%eth0 is fe80::1 on the wire); any other address unchanged."""
    host = host.partition("%")[0]
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


@functools.lru_cache(maxsize=PARSE_CACHE)
def parseIp(text: str | None) -> IPAddress | None:
    """An address from text that may carry a port, brackets or a scope; IPv4-mapped
    addresses as IPv4. C{None} when it is no address.

    The answers for the last L{PARSE_CACHE} texts are kept: the services ask about the
    same few peers for every message (limits, LAN checks), and C{ipaddress} parsing was
    a tenth of the rendezvous server's time per punch round trip."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    text = text.partition("%")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normalizeIp(text: str | None) -> str | None:
    """An address in normal form (ports and brackets dropped, IPv4-mapped as IPv4)."""
    address = parseIp(text)
    return None if address is None else str(address)


def isLoopback(text: str | None) -> bool:
    """Whether C{text} is a loopback address (127/8, ::1, or IPv4-mapped loopback)."""
    address = parseIp(text)
    return address is not None and address.is_loopback


@functools.lru_cache(maxsize=PARSE_CACHE)
def sourceKey(text: str, ipv6Prefix: int = 64) -> str:
    """The key one source is limited by: an IPv4 address itself, an IPv6 address's
    C{/ipv6Prefix} network (one subscriber usually holds a whole /64, so limiting by
    /128 would give one customer unlimited attempts). Unparseable text is its own key."""
    address = parseIp(text)
    if address is None:
        return text
    if address.version == 4:
        return str(address)
    return str(ipaddress.IPv6Network((address, ipv6Prefix), strict=False))


def routeSource(target: tuple[str, int]) -> str | None:
    """The local address the routing table picks for sending to C{target} (an IP
    address and port), or C{None} when there is no route. Nothing is sent: connecting a
    UDP socket only asks the kernel."""
    kind = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    try:
        with socket.socket(kind, socket.SOCK_DGRAM) as sock:
            sock.connect(target)
            return str(sock.getsockname()[0])
    except OSError:
        return None


def defaultRouteAddress(addressFamily: int) -> str | None:
    """This host's source address towards the Internet for family 4 or 6 (the address a
    wildcard listener's clients see), or C{None} when there is no such route."""
    return routeSource(_ROUTE_PROBES[6 if addressFamily == 6 else 4])


class ExternalAddresses:
    """This host's public addresses behind 1:1 NAT (coturn's C{external-ip}), the one
    place every service asks which address to tell a client for one of its own.

    Each entry is C{PUBLIC} or C{PUBLIC/PRIVATE} (one per private address, and one
    without a private address per family): a socket bound to PRIVATE is announced as
    PUBLIC; an entry without PRIVATE stands for every address of its family.
    """

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self._byPrivate: dict[str, str] = {}
        self._byFamily: dict[int, str] = {}
        for entry in entries:
            public, private = self.parse(entry)
            if private is None:
                if family(public) in self._byFamily:
                    raise ValueError(f"a second IPv{family(public)} address without PRIVATE")
                self._byFamily[family(public)] = public
            else:
                if private in self._byPrivate:
                    raise ValueError(f"{private} is given twice")
                self._byPrivate[private] = public

    @staticmethod
    def parse(text: str) -> tuple[str, str | None]:
        """C{(public, private or None)} from C{PUBLIC[/PRIVATE]}; C{ValueError} for
        anything else (unspecified or mixed-family addresses included)."""
        publicText, _, privateText = text.strip().partition("/")
        public = ipaddress.ip_address(publicText.strip().strip("[]"))
        if public.is_unspecified:
            raise ValueError(f"{public} is not a specific address")
        if not privateText:
            return str(public), None
        private = ipaddress.ip_address(privateText.strip().strip("[]"))
        if private.is_unspecified:
            raise ValueError(f"{private} is not a specific address")
        if private.version != public.version:
            raise ValueError("PUBLIC and PRIVATE must be of one address family")
        return str(public), str(private)

    def public(self, host: str) -> str:
        """The address to announce for a socket bound to C{host} (C{host} itself when
        no entry covers it)."""
        host = unmapped(host)
        return self._byPrivate.get(host) or self._byFamily.get(family(host)) or host

    def privateAddresses(self, addressFamily: int) -> list[str]:
        """The PRIVATE addresses of C{addressFamily} (what to bind), in the order given."""
        return [a for a in self._byPrivate if family(a) == addressFamily]

    def __bool__(self) -> bool:
        return bool(self._byPrivate or self._byFamily)
