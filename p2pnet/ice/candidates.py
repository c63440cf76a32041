# -*- test-case-name: test.unit.test_ice_candidates -*-
"""Local candidates, their priorities and foundations, ICE credentials (RFC 8445
RFC 8445 §5.1.2, §5.1.1.3, §5.3). Sans-IO: no reactor, no sockets.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from p2pnet.codecs.ice_candidate import Candidate

__all__ = [
    "TYPE_PREFERENCE",
    "FoundationTable",
    "LocalCandidate",
    "candidatePriority",
    "newCredentials",
    "pairPriority",
]

Address = tuple[str, int]

#: RFC 8445 §5.1.2.2: recommended type preferences.
TYPE_PREFERENCE = {"host": 126, "prflx": 110, "srflx": 100, "relay": 0}

#: RFC 8445 §5.3: ice-char = ALPHA / DIGIT / "+" / "/".
_ICE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"


def candidatePriority(kind: str, localPreference: int = 65535, component: int = 1) -> int:
    """RFC 8445 §5.1.2.1: C{2^24 * type preference + 2^8 * local preference +
    (256 - component ID)}.

    @param kind: C{host}, C{prflx}, C{srflx} or C{relay}.
    @param localPreference: 0 to 65535; 65535 for an agent with one address.
    """
    if not 0 <= localPreference <= 65535 or not 1 <= component <= 256:
        raise ValueError("local preference is 0-65535 and the component 1-256")
    return (TYPE_PREFERENCE[kind] << 24) + (localPreference << 8) + (256 - component)


def pairPriority(controlling: int, controlled: int) -> int:
    """RFC 8445 §6.1.2.3: C{2^32 * MIN(G, D) + 2 * MAX(G, D) + (G > D ? 1 : 0)}
    with G the controlling agent's candidate priority and D the controlled agent's."""
    return (min(controlling, controlled) << 32) + 2 * max(controlling, controlled) + (
        1 if controlling > controlled else 0)


def newCredentials(rng: random.Random) -> tuple[str, str]:
    """A fresh C{(ufrag, pwd)}: 8 and 24 ice-chars (RFC 8445 §5.3 wants at least
    24 bits of randomness in the ufrag and 128 in the pwd; these carry 48 and 144)."""
    ufrag = "".join(rng.choice(_ICE_CHARS) for _ in range(8))
    pwd = "".join(rng.choice(_ICE_CHARS) for _ in range(24))
    return ufrag, pwd


class FoundationTable:
    """Foundations as RFC 8445 §5.1.1.3 defines them: candidates share one when
    they have the same type, base IP address, STUN/TURN server IP address and transport.

    Foundations are small numbers handed out in order, so they are stable for the life
    of the agent (across ICE restarts, as RFC 8445 §9 asks) and reveal nothing.
    """

    def __init__(self) -> None:
        self._known: dict[tuple[str, str, str | None, str], str] = {}

    def foundation(self, kind: str, baseHost: str, server: str | None = None,
                   transport: str = "udp") -> str:
        """The foundation for this combination, the same one every time it is asked."""
        key = (kind, baseHost, server, transport.lower())
        found = self._known.get(key)
        if found is None:
            found = self._known[key] = str(len(self._known) + 1)
        return found


@dataclass(frozen=True, slots=True)
class LocalCandidate:
    """A candidate of this agent and the base it is sent from.

    @ivar candidate: the candidate as signalled (RFC 8839 line).
    @ivar base: RFC 8445 §5.1.1: the transport address checks and data leave
        from: the host address for host, server-reflexive and peer-reflexive candidates,
        the relayed address for relayed ones.
    """

    candidate: Candidate
    base: Address

    @property
    def address(self) -> Address:
        """The candidate's own transport address."""
        return self.candidate.address

    @property
    def type(self) -> str:
        """C{host}, C{srflx}, C{prflx} or C{relay}."""
        return self.candidate.type

    @property
    def priority(self) -> int:
        """Its priority."""
        return self.candidate.priority

    @classmethod
    def make(cls, kind: str, address: Address, base: Address, foundation: str,
             localPreference: int = 65535, component: int = 1,
             related: Address | None = None) -> LocalCandidate:
        """A UDP candidate with the RFC 8445 §5.1.2.1 priority."""
        candidate = Candidate(
            foundation, component, "udp", candidatePriority(kind, localPreference, component),
            address[0], address[1], kind,
            related[0] if related else None, related[1] if related else None)
        return cls(candidate, base)
