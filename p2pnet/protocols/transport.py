# -*- test-case-name: test.unit.test_rendezvous_protocol -*-
"""L{StreamTransport}: what p2pnet's stream protocols use of a TCP or TLS transport.

Twisted types C{Protocol.transport} as C{ITransport | None}, which has no producer
methods and no C{abortConnection}; the TCP transports the reactor hands a connected
protocol have all of them. A protocol that needs them declares::

    transport: StreamTransport  # type: ignore[assignment]

(the ignore is the narrowing of Twisted's attribute), so every call is checked against
this list instead of being typed C{Any}.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IProducer

__all__ = ["StreamTransport"]


class StreamTransport(Protocol):
    """A connected TCP (or TLS over TCP) transport."""

    def write(self, data: bytes) -> None:
        """Queue C{data} for sending."""

    def loseConnection(self) -> None:
        """Close once what is queued has been sent."""

    def abortConnection(self) -> None:
        """Close now, dropping what is queued."""

    def pauseProducing(self) -> None:
        """Stop reading from the socket."""

    def resumeProducing(self) -> None:
        """Read from the socket again."""

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """Let C{producer} be paused while the send buffer is full."""

    def getPeer(self) -> IPv4Address | IPv6Address:
        """The remote address."""

    def getHost(self) -> IPv4Address | IPv6Address:
        """The local address."""
