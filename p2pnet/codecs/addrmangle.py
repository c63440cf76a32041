# -*- test-case-name: test.unit.test_addrmangle -*-
"""RustDesk's AddrMangle (hbb_common C{AddrMangle}), sans-IO.

RustDesk disguises socket addresses inside messages so that NAT helpers do not rewrite
them. IPv4 is mixed with a 32-bit microsecond timestamp C{tm} and the 128-bit result is
written little-endian with trailing zero bytes stripped; IPv6 is the 16 address bytes
then the port as u16 little-endian (18 bytes). See rustdesk.md §3 and §9.3.

Time is a parameter: callers pass C{tm} (the low 32 bits of microseconds since the
epoch), tests pass a fixed one.
"""

from __future__ import annotations

import ipaddress

__all__ = ["ANY", "decode", "encode", "timestampFor", "unmapV4"]

#: What malformed input decodes to: "no address" (port 0).
ANY = ("0.0.0.0", 0)

_MASK32 = 0xFFFFFFFF


def timestampFor(seconds: float) -> int:
    """C{tm} for a Unix time in seconds: microseconds truncated to 32 bits."""
    return int(seconds * 1_000_000) & _MASK32


def unmapV4(host: str) -> str:
    """C{a.b.c.d} for a v4-mapped C{::ffff:a.b.c.d} (unless it is loopback), else C{host}.

    This is hbb_common's C{try_into_v4}: addresses are compared and mangled as IPv4 when
    they are IPv4 in disguise.
    """
    if ":" not in host:
        return host  # already IPv4 (or not an address at all: left for the caller)
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        if not ip.ipv4_mapped.is_loopback:
            return str(ip.ipv4_mapped)
    return str(ip)


def encode(host: str, port: int, tm: int) -> bytes:
    """Mangle C{(host, port)}; C{tm} is used only for IPv4.

    @raise ValueError: C{host} is not an IP address or C{port} is out of range.
    """
    if not 0 <= port <= 0xFFFF:
        raise ValueError("port out of range")
    ip = ipaddress.ip_address(unmapV4(host))
    if isinstance(ip, ipaddress.IPv6Address):
        return ip.packed + port.to_bytes(2, "little")
    tm &= _MASK32
    value = int.from_bytes(ip.packed, "little")
    # rustdesk.md §3 step 3: (ip + tm) is a 33-bit sum, not reduced mod 2**32.
    v = ((value + tm) << 49) | (tm << 17) | (port + (tm & 0xFFFF))
    return v.to_bytes(16, "little").rstrip(b"\x00")


def decode(data: bytes) -> tuple[str, int]:
    """Unmangle to C{(host, port)}; malformed input gives L{ANY} (port 0 = no address).

    Never raises: the bytes come from the network.
    """
    if len(data) > 16:
        if len(data) != 18:
            return ANY
        host = str(ipaddress.IPv6Address(bytes(data[:16])))
        return host, int.from_bytes(data[16:18], "little")
    n = int.from_bytes(bytes(data).ljust(16, b"\x00"), "little")
    tm = (n >> 17) & _MASK32
    ip = ((n >> 49) - tm) & _MASK32
    # rustdesk.md §3 decode step 4: a 24-bit mask, then truncation to u16.
    port = ((n & 0xFFFFFF) - (tm & 0xFFFF)) & 0xFFFF
    return str(ipaddress.IPv4Address(ip.to_bytes(4, "little"))), port
