# -*- test-case-name: test.unit.test_services_turn -*-
"""What every TURN request handler is given: the request context and the responder.

A handler takes one L{TurnRequest} (the message, the link and address it came from, who
authenticated it and the allocation its 5-tuple names) and answers through the
L{TurnResponder}, which adds SOFTWARE, signs with the request's key, adds FINGERPRINT,
counts error codes and sends. Handlers never encode or write bytes themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from p2pnet.addresses import unmapped
from p2pnet.codecs.stun import Attr, Message, StunDecodeError, decodeErrorCode
from p2pnet.protocols.stun import StunLink
from p2pnet.services.auth import AuthResult
from p2pnet.services.turn_allocation import Allocation
from p2pnet.stats import Stats

__all__ = ["TurnRequest", "TurnResponder"]


@dataclass(slots=True)
class TurnRequest:
    """One TURN request (or indication) as the handlers see it.

    @ivar message: the decoded message.
    @ivar link: the socket or connection it arrived on (and the answer leaves by).
    @ivar source: the client's transport address as the server sees it.
    @ivar auth: who authenticated it (C{None} before authentication and for
        indications).
    @ivar allocation: the allocation its 5-tuple names, if any.
    """

    message: Message
    link: StunLink
    source: tuple[str, int]
    auth: AuthResult | None = None
    allocation: Allocation | None = None

    @property
    def host(self) -> str:
        """The client's IP address, IPv4-mapped addresses as IPv4."""
        return unmapped(self.source[0])

    @property
    def key(self) -> tuple[Any, tuple[str, int]]:
        """The allocation table's key for this request's 5-tuple."""
        return (self.link, self.source)

    @property
    def username(self) -> str:
        """The authenticated user name ("" before authentication)."""
        return self.auth.username if self.auth is not None else ""


class TurnResponder:
    """Signs and sends TURN answers, counting error codes in C{turn.errors.<code>}.

    @param software: the SOFTWARE value (or empty) of the STUN service.
    @param stats: the TURN service's counters.
    """

    def __init__(self, software: bytes, stats: Stats) -> None:
        self.software = software
        self.stats = stats

    def send(self, request: TurnRequest, reply: Message) -> bytes:
        """Sign, fingerprint and send C{reply} to C{request}'s client; the bytes sent."""
        if self.software:
            reply.add(Attr.SOFTWARE, self.software)
        auth = request.auth
        key = auth.key if auth is not None else None
        sha256 = auth.sha256 if auth is not None else False
        data = reply.encode(key, sha256=sha256, fingerprint=True)
        request.link.send(data, request.source)
        return data

    def success(self, request: TurnRequest, *attributes: tuple[int, bytes]) -> bytes:
        """A success response carrying C{attributes}; the bytes sent."""
        reply = request.message.reply()
        for attrType, value in attributes:
            reply.add(attrType, value)
        return self.send(request, reply)

    def error(self, request: TurnRequest, code: int,
              extra: Iterable[tuple[int, bytes]] = ()) -> None:
        """An error response with ERROR-CODE C{code} and C{extra} attributes."""
        reply = request.message.errorReply(code)
        for attrType, value in extra:
            reply.add(attrType, value)
        self.stats.add(f"turn.errors.{code}")
        self.send(request, reply)

    def refused(self, request: TurnRequest, error: Message) -> None:
        """Send the authentication's own error answer (401, 438) as it is."""
        value = error.get(Attr.ERROR_CODE)
        try:
            code = decodeErrorCode(value)[0] if value is not None else 0
        except StunDecodeError:
            code = 0
        self.stats.add(f"turn.errors.{code}")
        request.link.send(error.encode(fingerprint=True), request.source)

    def indication(self, link: StunLink, destination: tuple[str, int],
                   message: Message) -> None:
        """Send an unsigned indication (ConnectionAttempt) with FINGERPRINT."""
        if self.software:
            message.add(Attr.SOFTWARE, self.software)
        link.send(message.encode(fingerprint=True), destination)
