# -*- test-case-name: test.unit.test_ice_candidate -*-
"""ICE candidate lines: the value of the SDP C{candidate} attribute (RFC 8839 §5.1),
as browsers, aioice and libnice write them. Sans-IO: text in, L{Candidate} out, and back.

The grammar (RFC 8839 §5.1)::

    candidate-attribute = "candidate" ":" foundation SP component-id SP transport SP
                          priority SP connection-address SP port SP "typ" SP cand-type
                          [SP "raddr" SP connection-address] [SP "rport" SP port]
                          *(SP extension-att-name SP extension-att-value)

Extension attributes (C{tcptype} of RFC 6544, Chromium's C{generation}, C{ufrag},
C{network-id}, C{network-cost}...) are kept as name/value pairs in the order they came,
so L{Candidate.toLine} gives back the line it was parsed from (spacing normalised).
The transport keeps the case it was written in (Firefox and libnice write C{UDP},
Chromium and aioice C{udp}); comparisons ignore case as RFC 8839 says.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = ["CANDIDATE_TYPES", "Candidate", "CandidateDecodeError", "parseCandidate"]

#: The candidate types of RFC 8445 §5.1.1 as RFC 8839 writes them.
CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")

_ICE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/")


class CandidateDecodeError(ValueError):
    """The text is not a candidate line (the peer broke RFC 8839)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One ICE candidate as signalled.

    @ivar foundation: 1 to 32 ice-chars (RFC 8839 §5.1).
    @ivar component: component ID, 1 to 256.
    @ivar transport: C{udp} or C{tcp} as written (see L{isUdp}).
    @ivar priority: 1 to 2**32 - 1.
    @ivar host: the connection address: an IP address, or an FQDN (mDNS C{.local}).
    @ivar port: the port (9 for an active TCP candidate, RFC 6544 §4.5).
    @ivar type: C{host}, C{srflx}, C{prflx} or C{relay} (other tokens are kept).
    @ivar relatedAddress: C{raddr}, or C{None}.
    @ivar relatedPort: C{rport}, or C{None}.
    @ivar extensions: the extension attributes, C{(name, value)} in line order.
    """

    foundation: str
    component: int
    transport: str
    priority: int
    host: str
    port: int
    type: str
    relatedAddress: str | None = None
    relatedPort: int | None = None
    extensions: tuple[tuple[str, str], ...] = field(default=())

    @property
    def isUdp(self) -> bool:
        """Whether the transport is UDP (compared without case)."""
        return self.transport.lower() == "udp"

    @property
    def address(self) -> tuple[str, int]:
        """C{(host, port)}: the candidate's transport address."""
        return self.host, self.port

    def extension(self, name: str) -> str | None:
        """The value of the first extension attribute called C{name}, or C{None}."""
        for key, value in self.extensions:
            if key == name:
                return value
        return None

    @property
    def tcptype(self) -> str | None:
        """RFC 6544's C{tcptype} (C{active}, C{passive}, C{so}), or C{None}."""
        return self.extension("tcptype")

    @property
    def generation(self) -> int | None:
        """Chromium's and aioice's C{generation} (the ICE restart count), or C{None}."""
        value = self.extension("generation")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def ufrag(self) -> str | None:
        """The C{ufrag} extension (the ICE generation's username fragment), or C{None}."""
        return self.extension("ufrag")

    def withExtension(self, name: str, value: str) -> Candidate:
        """A copy with C{name} set to C{value} (replaced in place, or appended)."""
        pairs = list(self.extensions)
        for i, (key, _) in enumerate(pairs):
            if key == name:
                pairs[i] = (name, value)
                break
        else:
            pairs.append((name, value))
        return replace(self, extensions=tuple(pairs))

    def toLine(self, prefix: bool = True) -> str:
        """The attribute value, C{candidate:...} (without the prefix when C{prefix} is
        false, as aioice's C{to_sdp} writes it); never C{a=}."""
        parts = [
            self.foundation, str(self.component), self.transport, str(self.priority),
            self.host, str(self.port), "typ", self.type,
        ]
        if self.relatedAddress is not None:
            parts += ["raddr", self.relatedAddress]
        if self.relatedPort is not None:
            parts += ["rport", str(self.relatedPort)]
        for name, value in self.extensions:
            parts += [name, value]
        text = " ".join(parts)
        return "candidate:" + text if prefix else text

    def __str__(self) -> str:
        return self.toLine()


def _number(text: str, what: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise CandidateDecodeError(f"{what} {text!r} is not a number from {low} to {high}")
    return int(text)


def _token(text: str, what: str) -> str:
    if not text or any(c <= " " or c == "\x7f" for c in text):
        raise CandidateDecodeError(f"bad {what} {text!r}")
    return text


def parseCandidate(line: str) -> Candidate:
    """Parse one candidate line: C{a=candidate:...}, C{candidate:...}, or the bare value
    aioice writes.

    @raise CandidateDecodeError: for anything RFC 8839 §5.1 does not allow (a
        missing field, a number out of range, a dangling extension name...).
    """
    text = line.strip()
    if text.startswith("a="):
        text = text[2:]
    if text[:10].lower() == "candidate:":
        text = text[10:]
    fields = text.split()
    if len(fields) < 8:
        raise CandidateDecodeError("a candidate line has at least 8 fields")
    foundation = fields[0]
    if not 1 <= len(foundation) <= 32 or not set(foundation) <= _ICE_CHARS:
        raise CandidateDecodeError(f"bad foundation {foundation!r}")
    component = _number(fields[1], "component", 1, 256)
    transport = _token(fields[2], "transport")
    priority = _number(fields[3], "priority", 1, 2**32 - 1)
    host = _token(fields[4], "connection address")
    port = _number(fields[5], "port", 0, 65535)
    if fields[6] != "typ":
        raise CandidateDecodeError(f"expected 'typ', found {fields[6]!r}")
    kind = _token(fields[7], "candidate type")
    rest = fields[8:]
    if len(rest) % 2:
        raise CandidateDecodeError(f"extension {rest[-1]!r} has no value")
    relatedAddress: str | None = None
    relatedPort: int | None = None
    extensions: list[tuple[str, str]] = []
    for i in range(0, len(rest), 2):
        name, value = rest[i], rest[i + 1]
        if name == "raddr" and relatedAddress is None and not extensions:
            relatedAddress = value
        elif name == "rport" and relatedPort is None and not extensions:
            relatedPort = _number(value, "rport", 0, 65535)
        else:
            extensions.append((name, value))
    return Candidate(foundation, component, transport, priority, host, port, kind,
                     relatedAddress, relatedPort, tuple(extensions))
