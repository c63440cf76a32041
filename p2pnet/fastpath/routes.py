# -*- test-case-name: test.unit.test_turn_fastpath,test.interop.test_fastpath -*-
"""Which interface, and which source address, the kernel uses towards an address: one
C{RTM_GETROUTE} over rtnetlink (L{p2pnet.codecs.rtnetlink}), for the fast path's
entries. A few microseconds per question, asked when a channel is bound, not per packet.
"""

from __future__ import annotations

import socket

from p2pnet.codecs.rtnetlink import Route, RouteError, encodeRouteRequest, parseRouteReply

__all__ = ["Route", "RouteError", "routeTo"]


def routeTo(destination: str, source: str = "") -> Route:
    """The route from C{source} (any, if empty) to C{destination}.

    @raise RouteError: no route, or the question could not be asked.
    """
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
            sock.settimeout(1.0)
            sock.send(encodeRouteRequest(destination, source))
            reply = sock.recv(65536)
    except OSError as e:
        raise RouteError(f"rtnetlink: {e.strerror or e}") from None
    return parseRouteReply(reply)
