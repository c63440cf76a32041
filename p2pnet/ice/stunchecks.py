# -*- test-case-name: test.unit.test_ice_core -*-
"""Connectivity-check messages (RFC 8445 §7.1, §7.2, §7.3; RFC 7675 §5.1)
and their client transactions. Sans-IO.

A check is a STUN Binding request with USERNAME C{remoteUfrag:localUfrag}, PRIORITY,
ICE-CONTROLLING or ICE-CONTROLLED (the 64-bit tie-breaker), USE-CANDIDATE when it
nominates, MESSAGE-INTEGRITY keyed with the remote password and FINGERPRINT (RFC 8445
RFC 8445 §7.2.2). The answer carries XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY keyed with the
answering agent's password, and FINGERPRINT.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass
from typing import Any

from p2pnet.codecs.stun import (
    Attr,
    Message,
    Method,
    StunClass,
    StunDecodeError,
    decodeUInt32,
    encodeUInt32,
    newTransactionId,
)
from p2pnet.protocols.stun_transactions import Transaction, TransactionTable

__all__ = [
    "CheckRequest",
    "CheckTransactions",
    "buildCheck",
    "buildIndication",
    "buildSuccess",
    "readRequest",
]

Address = tuple[str, int]


def encodeTieBreaker(value: int) -> bytes:
    """ICE-CONTROLLING / ICE-CONTROLLED: a 64-bit tie-breaker (RFC 8445 §16.1)."""
    return struct.pack("!Q", value)


def decodeTieBreaker(value: bytes) -> int:
    """The tie-breaker of an ICE-CONTROLLING/-CONTROLLED value."""
    if len(value) != 8:
        raise StunDecodeError("ICE-CONTROLLING/-CONTROLLED must be 8 bytes")
    return struct.unpack("!Q", value)[0]


def buildCheck(localUfrag: str, remoteUfrag: str, remotePwd: str, priority: int,
               controlling: bool, tieBreaker: int, useCandidate: bool = False,
               transactionId: bytes | None = None) -> tuple[Message, bytes]:
    """A connectivity check (RFC 8445 §7.2.2): the message and its bytes."""
    message = Message(Method.BINDING, StunClass.REQUEST, transactionId or newTransactionId())
    message.add(Attr.USERNAME, f"{remoteUfrag}:{localUfrag}".encode())
    message.add(Attr.PRIORITY, encodeUInt32(priority))
    message.add(Attr.ICE_CONTROLLING if controlling else Attr.ICE_CONTROLLED,
                encodeTieBreaker(tieBreaker))
    if useCandidate:
        message.add(Attr.USE_CANDIDATE, b"")
    return message, message.encode(remotePwd.encode(), fingerprint=True)


def buildSuccess(request: Message, source: Address, localPwd: str) -> bytes:
    """The success response to a check: XOR-MAPPED-ADDRESS of where it came from
    (RFC 8445 §7.3.1.3), signed with the local password, fingerprinted."""
    response = request.reply()
    response.add(Attr.XOR_MAPPED_ADDRESS, request.xorMapped(*source))
    return response.encode(localPwd.encode(), fingerprint=True)


def buildError(request: Message, code: int, localPwd: str | None = None) -> bytes:
    """An error response (400, 401, 487), signed when C{localPwd} is given."""
    response = request.errorReply(code)
    key = localPwd.encode() if localPwd is not None else None
    return response.encode(key, fingerprint=True)


def buildIndication() -> bytes:
    """A keep-alive: a Binding indication with FINGERPRINT (RFC 8445 §11)."""
    return Message(Method.BINDING, StunClass.INDICATION).encode(fingerprint=True)


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """What a verified incoming check says.

    @ivar remoteUfrag: the part of USERNAME after the colon.
    @ivar priority: PRIORITY, or C{None} (then the request is answered 400).
    @ivar controlling: C{True} for ICE-CONTROLLING, C{False} for ICE-CONTROLLED,
        C{None} when neither came (an RFC 7675 consent check from a lite peer...).
    @ivar tieBreaker: the value of that attribute.
    @ivar useCandidate: USE-CANDIDATE was present.
    """

    remoteUfrag: str
    priority: int | None
    controlling: bool | None
    tieBreaker: int
    useCandidate: bool


def readRequest(message: Message, localUfrag: str, localPwd: str) -> CheckRequest | int:
    """Check an incoming Binding request (RFC 8445 §7.3, RFC 8489 §9.1.3).

    @return: the L{CheckRequest}, or the error code to answer: 400 when USERNAME,
        MESSAGE-INTEGRITY or PRIORITY is missing or malformed, 401 when the ufrag is not
        ours or the integrity does not verify.
    """
    username = message.get(Attr.USERNAME)
    if username is None or not message.hasIntegrity():
        return 400
    ours, sep, theirs = username.decode("utf-8", "replace").partition(":")
    if not sep or not hmac.compare_digest(ours.encode(), localUfrag.encode()):
        return 401
    if not message.checkIntegrity(localPwd.encode()):
        return 401
    try:
        value = message.get(Attr.PRIORITY)
        priority = decodeUInt32(value) if value is not None else None
        controlling: bool | None = None
        tieBreaker = 0
        for attr, role in ((Attr.ICE_CONTROLLING, True), (Attr.ICE_CONTROLLED, False)):
            value = message.get(attr)
            if value is not None:
                controlling, tieBreaker = role, decodeTieBreaker(value)
                break
    except StunDecodeError:
        return 400
    if priority is None:
        return 400
    return CheckRequest(theirs, priority, controlling, tieBreaker,
                        message.get(Attr.USE_CANDIDATE) is not None)


@dataclass(slots=True, eq=False)
class Outstanding:
    """What an outstanding check was for.

    @ivar pair: the pair checked (an object of the caller's).
    @ivar local: the base it left from; @ivar remote: where it went.
    @ivar useCandidate: it nominated. @ivar consent: an RFC 7675 consent check.
    @ivar priority: the PRIORITY it carried (a peer-reflexive candidate's priority).
    @ivar key: the remote password it was signed with.
    @ivar controlling: the role it claimed.
    """

    pair: Any
    local: Address
    remote: Address
    useCandidate: bool
    consent: bool
    priority: int
    key: bytes
    controlling: bool = False


class CheckTransactions:
    """Outstanding checks by transaction ID, retransmitted as RFC 8489 §6.2.1 says
    (RFC 8445 §14.3: RTO of at least 500 ms). C{now} is always a parameter.

    @param rto: initial retransmission timeout; @param rc: requests sent in total.
    """

    def __init__(self, rto: float = 0.5, rc: int = 5, rm: int = 8) -> None:
        self._table = TransactionTable(rto=rto, rc=rc, rm=rm)

    def __len__(self) -> int:
        return len(self._table)

    def start(self, message: Message, data: bytes, outstanding: Outstanding, now: float,
              once: bool = False) -> None:
        """Record a check the caller sends now; C{once} for no retransmission."""
        t = self._table.start(message.transactionId, data, outstanding.remote, now,
                              context=outstanding)
        if once:
            t.sent = self._table.rc
            t.deadline = now + self._table.rto * self._table.rm

    def match(self, message: Message) -> Outstanding | None:
        """The outstanding check a response answers (removed), or C{None}.

        RFC 8489 §9.1.4: a response whose integrity does not verify with the key
        the request was signed with is dropped (C{None}, the check stays outstanding); an
        error response may only be trusted unsigned for 400 (the peer could not check).
        """
        t: Transaction | None = self._table.get(message.transactionId)
        if t is None or message.method != Method.BINDING:
            return None
        outstanding: Outstanding = t.context
        if message.hasIntegrity():
            if not message.checkIntegrity(outstanding.key):
                return None
        elif message.cls == StunClass.SUCCESS:
            return None
        self._table.finish(message.transactionId)
        return outstanding

    def cancel(self, predicate: Any) -> None:
        """Stop retransmitting every check whose L{Outstanding} matches C{predicate};
        a late response to one is then ignored."""
        for t in self._table:
            if predicate(t.context):
                self._table.finish(t.transactionId)

    def nextDeadline(self) -> float | None:
        """When L{expire} next has something to do."""
        return self._table.nextDeadline()

    def expire(self, now: float) -> tuple[list[tuple[bytes, Outstanding]], list[Outstanding]]:
        """C{(retransmit, timedOut)}: C{(data, outstanding)} to send again now, and the
        checks that gave up."""
        retransmit, timedOut = self._table.expire(now)
        return ([(t.data, t.context) for t in retransmit], [t.context for t in timedOut])
