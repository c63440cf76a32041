"""Tests for L{p2pnet.protocols.stun}: the one responder, and the UDP read bound."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.stun import Attr, Message, Method, StunClass, decode, longTermKey
from p2pnet.protocols.stun import UDP_READ_PER_TURN, StunDatagramProtocol, StunResponder
from p2pnet.testing import FakeDatagramTransport

KEY = longTermKey("alice", "example.org", "secret")


class RecordingLink:
    """A L{StunLink} that keeps what it is asked to send."""

    kind = "udp"
    addressIndex = portIndex = 0
    local = ("192.0.2.1", 3478)

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def send(self, data: bytes, destination: tuple[str, int]) -> None:
        self.sent.append((data, destination))


def request(**encodeArgs: object) -> Message:
    return decode(Message(Method.BINDING, StunClass.REQUEST).encode(**encodeArgs))  # type: ignore[arg-type]


class ResponderTests(SynchronousTestCase):
    """L{StunResponder}: the one place answers are signed and sent."""

    def types(self, data: bytes) -> list[int]:
        return [t for t, _ in decode(data).attributes]

    def test_success(self) -> None:
        """A success answer gets SOFTWARE and FINGERPRINT, and goes where it is told."""
        link = RecordingLink()
        asked = request()
        data = StunResponder(b"p2pnet").send(link, ("198.51.100.1", 9), asked.reply(), asked)
        self.assertEqual(link.sent, [(data, ("198.51.100.1", 9))])
        self.assertEqual(self.types(data), [Attr.SOFTWARE, Attr.FINGERPRINT])

    def test_signed(self) -> None:
        """With a key the answer carries MESSAGE-INTEGRITY (or -SHA256) that verifies."""
        asked = request()
        for sha256, attr in ((False, Attr.MESSAGE_INTEGRITY),
                             (True, Attr.MESSAGE_INTEGRITY_SHA256)):
            data = StunResponder(b"").encode(asked.errorReply(437), asked, KEY, sha256)
            answer = decode(data)
            self.assertEqual(self.types(data), [Attr.ERROR_CODE, attr, Attr.FINGERPRINT])
            self.assertTrue(answer.checkIntegrity(KEY))

    def test_unauthenticatedErrorSmall(self) -> None:
        """An error answer without a key carries no SOFTWARE, and FINGERPRINT only when
        the request had one."""
        responder = StunResponder(b"p2pnet")
        plain = request()
        self.assertEqual(self.types(responder.encode(plain.errorReply(400), plain)),
                         [Attr.ERROR_CODE])
        printed = request(fingerprint=True)
        self.assertEqual(self.types(responder.encode(printed.errorReply(400), printed)),
                         [Attr.ERROR_CODE, Attr.FINGERPRINT])

    def test_classic(self) -> None:
        """RFC 3489 answers get nothing added (their clients do not know FINGERPRINT)."""
        asked = Message(Method.BINDING, StunClass.REQUEST, bytes(12), cookie=b"\1\2\3\4")
        data = StunResponder(b"p2pnet").encode(asked.reply(), asked)
        self.assertEqual(len(data), 20)


class ReadBoundTests(SynchronousTestCase):
    def test_udpReadPerTurn(self) -> None:
        """A STUN UDP socket reads at most 32 KiB per reactor turn."""
        transport = FakeDatagramTransport()
        transport.maxThroughput = 256 * 1024  # type: ignore[attr-defined]
        protocol = StunDatagramProtocol(None)  # type: ignore[arg-type]
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        self.assertEqual(transport.maxThroughput, UDP_READ_PER_TURN)  # type: ignore[attr-defined]
        self.assertEqual(UDP_READ_PER_TURN, 32 * 1024)
