# -*- test-case-name: test.unit.test_ice_core -*-
"""Role conflicts (RFC 8445 §7.3.1.1) as one pure decision. Sans-IO."""

from __future__ import annotations

from enum import Enum

__all__ = ["Conflict", "resolveConflict"]


class Conflict(Enum):
    """What to do with a request whose role attribute was read."""

    NONE = "none"  #: no conflict: answer it
    SWITCH = "switch"  #: change role, then answer it
    REJECT = "reject"  #: answer 487 Role Conflict, keep the role


def resolveConflict(controlling: bool, tieBreaker: int, peerControlling: bool | None,
                    peerTieBreaker: int, canControl: bool = True) -> Conflict:
    """RFC 8445 §7.3.1.1.

    When both claim controlling, the agent with the larger tie-breaker keeps it: ours
    larger or equal answers 487, else we switch to controlled. When both claim
    controlled, ours larger or equal makes us controlling, else 487. An agent that
    cannot take control (ICE-lite, RFC 8445 §2.5) always answers 487 to the second case.
    """
    if peerControlling is None or peerControlling != controlling:
        return Conflict.NONE
    if controlling:
        return Conflict.REJECT if tieBreaker >= peerTieBreaker else Conflict.SWITCH
    if canControl and tieBreaker >= peerTieBreaker:
        return Conflict.SWITCH
    return Conflict.REJECT
