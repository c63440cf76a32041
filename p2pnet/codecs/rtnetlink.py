# -*- test-case-name: test.unit.test_turn_fastpath -*-
"""rtnetlink's route question and answer (C{RTM_GETROUTE} / C{RTM_NEWROUTE}), sans-IO:
what C{ip route get} asks the kernel, for the TURN fast path's entries
(L{p2pnet.fastpath.routes} sends it).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from typing import NamedTuple

__all__ = ["Route", "RouteError", "encodeRouteRequest", "parseRouteReply"]

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


def encodeRouteRequest(destination: str, source: str = "", sequence: int = 1) -> bytes:
    """The C{RTM_GETROUTE} message asking for the route from C{source} (any, if empty)
    to C{destination}."""
    address = ipaddress.ip_address(destination)
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    bits = 128 if address.version == 6 else 32
    attributes = _attribute(_RTA_DST, address.packed)
    srcLen = 0
    if source:
        attributes += _attribute(_RTA_SRC, ipaddress.ip_address(source).packed)
        srcLen = bits
    body = _RTMSG.pack(family, bits, srcLen, 0, 0, 0, 0, 0, 0) + attributes
    return _HEADER.pack(_HEADER.size + len(body), _RTM_GETROUTE, _NLM_F_REQUEST, sequence,
                        0) + body


def parseRouteReply(reply: bytes) -> Route:
    """The kernel's answer to L{encodeRouteRequest}.

    @raise RouteError: an error answer (no route), or bytes that are not an answer.
    """
    if len(reply) < _HEADER.size:
        raise RouteError("short rtnetlink reply")
    length, kind, _, _, _ = _HEADER.unpack_from(reply)
    if kind == _NLMSG_ERROR:
        if len(reply) < _HEADER.size + 4:
            raise RouteError("short rtnetlink error")
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
        elif attr == _RTA_PREFSRC and len(data) in (4, 16):
            source = str(ipaddress.ip_address(data))
        offset += size + (-size % 4)
    if not ifindex:
        raise RouteError("the route names no interface")
    return Route(ifindex, source, routeType == _RTN_LOCAL)
