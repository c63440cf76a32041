# -*- test-case-name: test.unit.test_stun_client -*-
"""The client transaction table of STUN (RFC 8489 §6.2), without timers of its own.

In the pion/stun style the table never reads a clock: every call that depends on time
takes C{now}, and the owner (a Twisted protocol, a test) asks L{TransactionTable.nextDeadline}
when to call L{TransactionTable.expire} next. Over UDP a request is retransmitted after
RTO, 2*RTO, 4*RTO... until Rc requests have been sent, then the client waits Rm*RTO more
and gives up (RFC 8489 §6.2.1). Over TCP/TLS it is sent once and given up after
Ti (RFC 8489 §6.2.2).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_RC",
    "DEFAULT_RM",
    "DEFAULT_RTO",
    "DEFAULT_TI",
    "Transaction",
    "TransactionTable",
]

#: Initial retransmission timeout in seconds (RFC 8489 §6.2.1: SHOULD be 500 ms).
DEFAULT_RTO = 0.5
#: Requests sent in total over UDP before giving up (Rc, RFC 8489 §6.2.1).
DEFAULT_RC = 7
#: Multiple of RTO waited after the last request (Rm, RFC 8489 §6.2.1).
DEFAULT_RM = 16
#: Transaction timeout over a reliable transport (Ti, RFC 8489 §6.2.2).
DEFAULT_TI = 39.5


@dataclass(slots=True, eq=False)
class Transaction:
    """One outstanding client transaction.

    @ivar transactionId: the 12-byte transaction ID the response must carry.
    @ivar data: the encoded request, sent again as it is on each retransmission.
    @ivar destination: where the request goes (and, over UDP, where the answer should
        come from); C{None} on a connected stream.
    @ivar sent: requests sent so far.
    @ivar deadline: time of the next retransmission, or of giving up.
    @ivar wait: the interval that follows the next retransmission.
    @ivar reliable: sent over a stream: never retransmitted.
    @ivar context: whatever the owner wants back with it (a L{Deferred}, a key...).
    """

    transactionId: bytes
    data: bytes
    destination: tuple[str, int] | None
    sent: int
    deadline: float
    wait: float
    reliable: bool
    context: Any = None


class TransactionTable:
    """Outstanding client transactions by transaction ID, and their retransmission schedule.

    @ivar rto: initial retransmission timeout, seconds.
    @ivar rc: requests sent in total over an unreliable transport.
    @ivar rm: multiple of C{rto} waited after the last request.
    @ivar ti: timeout over a reliable transport, seconds.
    """

    def __init__(
        self,
        rto: float = DEFAULT_RTO,
        rc: int = DEFAULT_RC,
        rm: int = DEFAULT_RM,
        ti: float = DEFAULT_TI,
    ) -> None:
        if not rto > 0 or rc < 1 or rm < 1 or not ti > 0:
            raise ValueError("rto and ti must be positive, rc and rm at least 1")
        self.rto = rto
        self.rc = rc
        self.rm = rm
        self.ti = ti
        self._transactions: dict[bytes, Transaction] = {}

    def __len__(self) -> int:
        return len(self._transactions)

    def __iter__(self) -> Iterator[Transaction]:
        return iter(list(self._transactions.values()))

    def start(
        self,
        transactionId: bytes,
        data: bytes,
        destination: tuple[str, int] | None,
        now: float,
        *,
        reliable: bool = False,
        context: Any = None,
    ) -> Transaction:
        """Record a request that the caller sends now, for the first time.

        @raise ValueError: when a transaction with this ID is already outstanding.
        """
        if transactionId in self._transactions:
            raise ValueError("transaction ID already in use")
        if reliable:
            deadline, wait = now + self.ti, 0.0
        elif self.rc == 1:
            deadline, wait = now + self.rm * self.rto, 0.0
        else:
            deadline, wait = now + self.rto, 2 * self.rto
        transaction = Transaction(
            transactionId, data, destination, 1, deadline, wait, reliable, context
        )
        self._transactions[transactionId] = transaction
        return transaction

    def get(self, transactionId: bytes) -> Transaction | None:
        """The outstanding transaction with this ID, or C{None}."""
        return self._transactions.get(transactionId)

    def finish(self, transactionId: bytes) -> Transaction | None:
        """Remove and return the transaction (answered or abandoned), or C{None}."""
        return self._transactions.pop(transactionId, None)

    def nextDeadline(self) -> float | None:
        """When L{expire} next has something to do, or C{None} when nothing is outstanding."""
        return min((t.deadline for t in self._transactions.values()), default=None)

    def expire(self, now: float) -> tuple[list[Transaction], list[Transaction]]:
        """Advance every transaction whose deadline has come.

        @return: C{(retransmit, timedOut)}: requests the caller must send again now, and
            transactions that have given up (already removed from the table).
        """
        retransmit: list[Transaction] = []
        timedOut: list[Transaction] = []
        for t in list(self._transactions.values()):
            if t.deadline > now:
                continue
            if t.reliable or t.sent >= self.rc:
                del self._transactions[t.transactionId]
                timedOut.append(t)
                continue
            # RFC 8489 §6.2.1: retransmit, doubling the interval each time; after
            # the Rc-th request wait Rm times the initial RTO for a response.
            t.sent += 1
            if t.sent < self.rc:
                t.deadline += t.wait
                t.wait *= 2
            else:
                t.deadline += self.rm * self.rto
            retransmit.append(t)
        return retransmit, timedOut
