# -*- test-case-name: test.unit.test_node_handshake -*-
"""Password check and login answers of the controlled side (rustdesk.md §6.7).

The node sends C{Hash{salt, challenge}} with a fresh random challenge per connection
(not One-KVM's empty one); the controller answers C{SHA-256(SHA-256(password || salt)
|| challenge)}, compared in constant time against what the stored salted hash gives.
L{LoginGuard} counts wrong answers per source address and refuses a source that made
too many within a window.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

from p2pnet.boundedmap import BoundedMap
from p2pnet.codecs.proto import message_pb2 as pb

__all__ = [
    "LoginGuard",
    "MAX_FAILURES",
    "FAILURE_WINDOW",
    "TOO_MANY",
    "WRONG_PASSWORD",
    "challengeResponse",
    "newChallenge",
    "peerInfo",
    "verifyResponse",
]

#: The error a controller shows as "wrong password" (client.rs handle_login_error).
WRONG_PASSWORD = "Wrong Password"
#: Sent (then the connection closes) to a source that failed too often.
TOO_MANY = "Too many wrong password attempts"
#: Wrong answers allowed from one source address within L{FAILURE_WINDOW} seconds.
MAX_FAILURES = 5
FAILURE_WINDOW = 60.0
_ALPHABET = string.ascii_letters + string.digits


def newChallenge() -> str:
    """A fresh random 6-character challenge (RustDesk's length)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(6))


def challengeResponse(h1: bytes, challenge: str) -> bytes:
    """C{SHA-256(h1 || challenge)} (rustdesk.md §6.7 step 2, "h2")."""
    return hashlib.sha256(h1 + challenge.encode()).digest()


def verifyResponse(h1: bytes, challenge: str, answer: bytes) -> bool:
    """Whether C{answer} is the right response, compared in constant time."""
    return bool(h1) and hmac.compare_digest(challengeResponse(h1, challenge), answer)


class LoginGuard:
    """Wrong-password attempts per source address, bounded in memory.

    A source with L{MAX_FAILURES} failures whose latest is younger than
    L{FAILURE_WINDOW} seconds is refused until the window has passed since then.
    """

    def __init__(self, maxSources: int = 4096) -> None:
        self._failures: BoundedMap[str, tuple[int, float]] = BoundedMap(maxSources)

    def allowed(self, source: str, now: float) -> bool:
        """Whether C{source} may try a password now."""
        entry = self._failures.peek(source)
        if entry is None:
            return True
        count, last = entry
        if now - last >= FAILURE_WINDOW:
            del self._failures[source]
            return True
        return count < MAX_FAILURES

    def failed(self, source: str, now: float) -> None:
        """Count one wrong answer from C{source}."""
        entry = self._failures.peek(source)
        count = entry[0] if entry is not None and now - entry[1] < FAILURE_WINDOW else 0
        self._failures[source] = (count + 1, now)

    def succeeded(self, source: str) -> None:
        """A right answer clears the count."""
        self._failures.pop(source, None)


def peerInfo(*, hostname: str, width: int, height: int, codec: str,
             version: str = "1.4.5") -> pb.PeerInfo:
    """The C{PeerInfo} of a successful login: one display at the stream's real size and
    exactly the codec the node sends (rustdesk.md §6.7 step 4, §6.9).

    The node advertises platform "Linux" (docs/kvm-node.md: which Map-mode codes it
    understands).
    """
    info = pb.PeerInfo(username="p2pnet", hostname=hostname, platform="Linux",
                       current_display=0, sas_enabled=False, version=version)
    info.displays.add(x=0, y=0, width=width, height=height, name="KVM", online=True,
                      cursor_embedded=True, scale=1.0)
    info.encoding.h264 = codec == "h264"
    info.encoding.h265 = codec == "h265"
    info.resolutions.resolutions.add(width=width, height=height)
    return info
