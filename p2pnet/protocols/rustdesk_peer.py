# -*- test-case-name: test.unit.test_node_session -*-
"""The peer stream between a RustDesk controller and a controlled peer (rustdesk.md
rustdesk.md §2.1, §2.2, §6.6): BytesCodec frames, each a C{Message}, sealed with secretbox once
the handshake set a key.

L{PeerStream} is thin: it frames, decrypts, parses and hands each C{Message} to its
handler (the node's session or the viewer); the handler decides everything else. A
relay leg first writes its C{RequestRelay} frame (C{preamble}); after it the same bytes
flow as on a direct connection (hbbr copies them raw, rustdesk.md §5).
"""

from __future__ import annotations

from typing import Any, Protocol

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure

from p2pnet.codecs.proto import message_pb2 as pb
from p2pnet.codecs.rustdesk_crypto import CryptoError, SecretStream
from p2pnet.codecs.rustdesk_frame import FrameDecoder, FrameError, encodeFrame

__all__ = ["PeerHandler", "PeerStream", "pendingBytes"]


class PeerHandler(Protocol):
    """What a L{PeerStream} reports to."""

    def streamStarted(self, stream: PeerStream) -> None:
        """The connection is up (after the preamble was written)."""

    def messageReceived(self, message: pb.Message) -> None:
        """One decoded message."""

    def streamEnded(self, reason: str) -> None:
        """The connection closed (C{reason}: why, for the log)."""


def pendingBytes(transport: Any) -> int:
    """Bytes a Twisted TCP transport holds that the kernel has not taken yet."""
    buffered = getattr(transport, "dataBuffer", b"")
    offset = getattr(transport, "offset", 0)
    temp = getattr(transport, "_tempDataLen", 0)
    if hasattr(transport, "value") and not hasattr(transport, "dataBuffer"):
        return 0  # a StringTransport: everything counts as taken
    return max(len(buffered) - offset, 0) + temp


class PeerStream(TwistedProtocol):
    """One peer connection: frames in, C{Message}s out, and back.

    @param handler: gets every message (see L{PeerHandler}).
    @param maxPayload: largest frame accepted (a viewer accepts video keyframes, the
        node only input and control messages).
    @param preamble: bytes written first (a relay leg's framed C{RequestRelay}).
    @ivar bytesIn: payload bytes received (for the viewer's bitrate).
    """

    transport: Any  # a TCP transport (abortConnection, producer methods)

    def __init__(self, handler: PeerHandler, maxPayload: int = 64 * 1024,
                 preamble: bytes = b"") -> None:
        self.handler = handler
        self.preamble = preamble
        self._decoder = FrameDecoder(maxPayload)
        self._secret: SecretStream | None = None
        self._ended = False
        self.bytesIn = 0

    @property
    def encrypted(self) -> bool:
        """A key is set: frames are sealed both ways."""
        return self._secret is not None

    def setKey(self, key: bytes) -> None:
        """Seal and open every later frame with C{key} (counters start at 1, rustdesk.md §2.2)."""
        self._secret = SecretStream(key)

    def connectionMade(self) -> None:
        if self.preamble:
            self.transport.write(self.preamble)
        self.handler.streamStarted(self)

    def dataReceived(self, data: bytes) -> None:
        if self._ended:
            return
        try:
            payloads = self._decoder.feed(data)
        except FrameError as e:
            self.abort(f"bad framing: {e}")
            return
        for payload in payloads:
            if self._ended:
                return
            self.bytesIn += len(payload)
            try:
                if self._secret is not None:
                    payload = self._secret.open(payload)
                message = pb.Message.FromString(payload)
            except CryptoError:
                self.abort("decryption error")
                return
            except (DecodeError, RuntimeError, ValueError):
                self.abort("undecodable message")
                return
            self.handler.messageReceived(message)

    def send(self, message: pb.Message) -> None:
        """Frame (and seal, once keyed) one message."""
        if self._ended:
            return
        payload = message.SerializeToString()
        if self._secret is not None and payload:
            payload = self._secret.seal(payload)
        self.transport.write(encodeFrame(payload))

    def pendingBytes(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        return pendingBytes(self.transport)

    def abort(self, reason: str) -> None:
        """Drop the connection now (bad input, timeouts)."""
        if not self._ended:
            self._ended = True
            self.handler.streamEnded(reason)
        self.transport.abortConnection()

    def close(self, reason: str = "closed") -> None:
        """Close after writing what is buffered."""
        if not self._ended:
            self._ended = True
            self.handler.streamEnded(reason)
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self._ended:
            self._ended = True
            self.handler.streamEnded("connection lost")
