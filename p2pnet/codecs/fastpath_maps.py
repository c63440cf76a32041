# -*- test-case-name: test.unit.test_turn_fastpath,test.interop.test_fastpath -*-
"""The TURN fast path's BPF map entries as bytes (sans-IO): the C structs of
C{p2pnet/fastpath/turn_fastpath.bpf.c}, packed from typed addresses.

Addresses and ports are in network byte order, as the program reads them from the
packet; an IPv4 address fills the first 4 of 16 bytes. Deadlines are nanoseconds of
C{CLOCK_MONOTONIC} (the kernel's C{bpf_ktime_get_ns}).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

__all__ = ["AF_INET", "AF_INET6", "COUNTERS_SIZE", "Counters", "STATS", "forwardEntry",
           "reverseEntry", "unpackCounters"]

AF_INET, AF_INET6 = 2, 10

#: The program's whole-program counters, by index in its C{stats} array.
STATS = ("forwarded_out", "forwarded_in", "expired", "too_long", "adjust_failed",
         "malformed")

_FWD_KEY = struct.Struct("=16s16s2s2s2sH")
_FWD_VALUE = struct.Struct("=16s16s2s2sIIIQ")
_REV_KEY = struct.Struct("=16s16s2s2sHH")
_REV_VALUE = struct.Struct("=16s16s2s2s2sHIIQ")
_COUNTERS = struct.Struct("=QQQQ")
COUNTERS_SIZE = _COUNTERS.size
FORWARD_VALUE_SIZE = _FWD_VALUE.size
REVERSE_VALUE_SIZE = _REV_VALUE.size


class Counters(NamedTuple):
    """What the kernel forwarded for one allocation."""

    packetsOut: int  # client -> peer
    bytesOut: int
    packetsIn: int  # peer -> client
    bytesIn: int


def _family(host: str) -> int:
    return AF_INET6 if ipaddress.ip_address(host).version == 6 else AF_INET


def _address(host: str) -> bytes:
    return ipaddress.ip_address(host).packed.ljust(16, b"\0")


def _port(port: int) -> bytes:
    return struct.pack("!H", port)


def forwardEntry(client: tuple[str, int], server: tuple[str, int], channel: int,
                 relayed: tuple[str, int], peer: tuple[str, int], allocation: int,
                 ifindex: int, deadlineNs: int) -> tuple[bytes, bytes]:
    """The C{fwd} map's key and value: ChannelData on C{channel} from C{client} to
    C{server} goes from C{relayed} to C{peer}, out of interface C{ifindex}, until
    C{deadlineNs}."""
    key = _FWD_KEY.pack(_address(client[0]), _address(server[0]), _port(client[1]),
                        _port(server[1]), _port(channel), _family(client[0]))
    value = _FWD_VALUE.pack(_address(relayed[0]), _address(peer[0]), _port(relayed[1]),
                            _port(peer[1]), allocation, ifindex, 0, deadlineNs)
    return key, value


def reverseEntry(peer: tuple[str, int], relayed: tuple[str, int], client: tuple[str, int],
                 server: tuple[str, int], channel: int, allocation: int, ifindex: int,
                 deadlineNs: int, confirmed: bool) -> tuple[bytes, bytes]:
    """The C{rev} map's key and value: a datagram from C{peer} to C{relayed} goes to
    C{client} from C{server} as ChannelData on C{channel}, out of interface
    C{ifindex}, until C{deadlineNs}; while not C{confirmed} (the client has not shown it
    knows the binding; the program confirms it at the client's first ChannelData) it is
    left to the Python path, which sends a Data indication."""
    key = _REV_KEY.pack(_address(peer[0]), _address(relayed[0]), _port(peer[1]),
                        _port(relayed[1]), _family(peer[0]), 0)
    value = _REV_VALUE.pack(_address(client[0]), _address(server[0]), _port(client[1]),
                            _port(server[1]), _port(channel), int(confirmed), allocation,
                            ifindex, deadlineNs)
    return key, value


def allocationKey(allocation: int) -> bytes:
    """The C{alloc_counters} map's key."""
    return struct.pack("=I", allocation)


def zeroCounters() -> bytes:
    """A new C{alloc_counters} value."""
    return _COUNTERS.pack(0, 0, 0, 0)


def unpackCounters(value: bytes) -> Counters:
    """An C{alloc_counters} value."""
    return Counters(*_COUNTERS.unpack(value))
