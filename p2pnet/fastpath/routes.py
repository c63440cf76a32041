# -*- test-case-name: test.unit.test_turn_fastpath,test.interop.test_fastpath -*-
"""Which interface, and which source address, the kernel uses towards an address: one
C{RTM_GETROUTE} over rtnetlink (what C{ip route get} asks), for the fast path's entries.

A few microseconds per question, asked when a channel is bound, not per packet.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from typing import NamedTuple

__all__ = ["Route", "RouteError", "routeTo"]

_RTM_NEWROUTE, _RTM_GETROUTE = 24, 26
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_RTA_DST, _RTA_SRC, _RTA_OIF, _RTA_PREFSRC = 1, 2, 4, 7
_RTN_LOCAL = 2
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg
_ATTR = struct.Struct("=HH")


class RouteError(Exception):
    """The kernel has no route (or rtnetlink failed)."""


class Route(NamedTuple):
    """The kernel's answer for one destination."""

    ifindex: int  # the interface packets leave through (loopback for a local address)
    source: str  # the source address it would choose (C{""} if it named none)
    local: bool  # the destination is an address of this host


def _attribute(kind: int, data: bytes) -> bytes:
    length = _ATTR.size + len(data)
    return _ATTR.pack(length, kind) + data + b"\0" * (-length % 4)


def routeTo(destination: str, source: str = "") -> Route:
    """The route from C{source} (any, if empty) to C{destination}.

    @raise RouteError: no route, or the question could not be asked.
    """
    address = ipaddress.ip_address(destination)
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    bits = 128 if address.version == 6 else 32
    attributes = _attribute(_RTA_DST, address.packed)
    srcLen = 0
    if source:
        attributes += _attribute(_RTA_SRC, ipaddress.ip_address(source).packed)
        srcLen = bits
    body = _RTMSG.pack(family, bits, srcLen, 0, 0, 0, 0, 0, 0) + attributes
    message = _HEADER.pack(_HEADER.size + len(body), _RTM_GETROUTE, _NLM_F_REQUEST, 1, 0)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
            sock.settimeout(1.0)
            sock.send(message + body)
            reply = sock.recv(65536)
    except OSError as e:
        raise RouteError(f"rtnetlink: {e.strerror or e}") from None
    return _parse(reply, family)


def _parse(reply: bytes, family: int) -> Route:
    if len(reply) < _HEADER.size:
        raise RouteError("short rtnetlink reply")
    length, kind, _, _, _ = _HEADER.unpack_from(reply)
    if kind == _NLMSG_ERROR:
        (code,) = struct.unpack_from("=i", reply, _HEADER.size)
        raise RouteError(f"no route: {errno.errorcode.get(-code, code)}"
                         if code else "no route")
    if kind != _RTM_NEWROUTE or len(reply) < _HEADER.size + _RTMSG.size:
        raise RouteError("unexpected rtnetlink reply")
    routeType = _RTMSG.unpack_from(reply, _HEADER.size)[7]
    offset = _HEADER.size + _RTMSG.size
    ifindex, source = 0, ""
    while offset + _ATTR.size <= min(length, len(reply)):
        size, attr = _ATTR.unpack_from(reply, offset)
        if size < _ATTR.size:
            break
        data = reply[offset + _ATTR.size:offset + size]
        if attr == _RTA_OIF and len(data) >= 4:
            (ifindex,) = struct.unpack_from("=I", data)
        elif attr == _RTA_PREFSRC:
            source = str(ipaddress.ip_address(data))
        offset += size + (-size % 4)
    if not ifindex:
        raise RouteError("the route names no interface")
    return Route(ifindex, source, routeType == _RTN_LOCAL)
