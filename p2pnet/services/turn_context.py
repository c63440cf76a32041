# -*- test-case-name: test.unit.test_services_turn -*-
"""What every TURN request handler is given: the request context and the responder.

A handler takes one L{TurnRequest} (the message, the link and address it came from, who
authenticated it and the allocation its 5-tuple names) and answers through the
L{TurnResponder}, which hands the reply to the STUN service's one responder. Handlers
read typed attribute values and never encode or write bytes themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from p2pnet.addresses import unmapped
from p2pnet.codecs.stun import Message
from p2pnet.protocols.stun import Reply, StunLink
from p2pnet.services.auth import AuthResult
from p2pnet.services.stun import StunService
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
    """Answers TURN requests through the STUN service's one responder (which adds
    SOFTWARE, signs with the request's key, adds FINGERPRINT, keeps unauthenticated
    error answers small and within the source's error budget), counting error codes in
    C{turn.errors.<code>} too. Attributes are given as typed values.

    @param stun: the STUN service (its C{respond}).
    @param stats: the TURN service's counters.
    """

    def __init__(self, stun: StunService, stats: Stats) -> None:
        self.stun = stun
        self.stats = stats

    def send(self, request: TurnRequest, reply: Message) -> bytes | None:
        """Send C{reply} to C{request}'s client, signed with its key; the bytes sent
        (C{None}: dropped by the error budget)."""
        auth = request.auth
        key = auth.key if auth is not None else None
        sha256 = auth.sha256 if auth is not None else False
        return self.stun.respond(Reply(reply, key, sha256), request.message, request.link,
                                 request.source)

    def success(self, request: TurnRequest, *attributes: tuple[int, Any]) -> bytes | None:
        """A success response carrying typed C{attributes}."""
        reply = request.message.reply()
        for attrType, value in attributes:
            reply.set(attrType, value)
        return self.send(request, reply)

    def error(self, request: TurnRequest, code: int,
              extra: Iterable[tuple[int, Any]] = ()) -> None:
        """An error response with ERROR-CODE C{code} and typed C{extra} attributes."""
        reply = request.message.errorReply(code)
        for attrType, value in extra:
            reply.set(attrType, value)
        self.stats.add(f"turn.errors.{code}")
        self.send(request, reply)

    def indication(self, link: StunLink, destination: tuple[str, int],
                   message: Message) -> None:
        """Send an indication (ConnectionAttempt): unsigned, with SOFTWARE and
        FINGERPRINT."""
        self.stun.responder.send(link, destination, message, message)
