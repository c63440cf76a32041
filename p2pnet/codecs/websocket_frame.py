# -*- test-case-name: test.unit.test_websocket_frame -*-
"""RFC 6455 WebSocket framing, sans-IO: frame encoding, masking, close payloads, and a
stream decoder that turns bytes into whole messages and control frames.

No extension is ever negotiated by p2pnet's listeners, so a frame with an RSV bit set is
a protocol error here. The decoder is written for the per-message hot path of the
control gateway: one unfragmented masked text frame costs a few slices and one XOR over
the payload as a single integer.
"""

from __future__ import annotations

__all__ = [
    "CLOSE_NO_STATUS",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_INVALID_DATA",
    "CLOSE_TOO_BIG",
    "MessageDecoder",
    "MessageTooBig",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "WebSocketFrameError",
    "applyMask",
    "decodeClose",
    "encodeClose",
    "encodeFrame",
    "encodeText",
]

# RFC 6455 §5.2 opcodes.
OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# RFC 6455 §7.4.1 status codes this module produces.
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
#: RFC 6455 §7.1.5: the code reported when a Close frame carried no status (never sent).
CLOSE_NO_STATUS = 1005

#: Largest payload of a control frame (RFC 6455 §5.5).
MAX_CONTROL_PAYLOAD = 125

_DATA_OPCODES = frozenset((OP_CONTINUATION, OP_TEXT, OP_BINARY))
_CONTROL_OPCODES = frozenset((OP_CLOSE, OP_PING, OP_PONG))
#: Short unmasked FIN text headers, indexed by payload length (the gateway's hot path).
_TEXT_HEADERS = [bytes((0x80 | OP_TEXT, n)) for n in range(126)]


class WebSocketFrameError(ValueError):
    """The peer broke RFC 6455; close the connection with L{code}.

    @ivar code: the close status to send (1002 protocol error, 1007 bad data, 1009).
    """

    def __init__(self, message: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class MessageTooBig(WebSocketFrameError):
    """A message (all its fragments together) would exceed the decoder's limit."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"message of {length} bytes exceeds {limit}", CLOSE_TOO_BIG)
        self.length = length
        self.limit = limit


def applyMask(data: bytes, mask: bytes) -> bytes:
    """XOR C{data} with the 4-byte C{mask} repeated (RFC 6455 §5.3); its own inverse."""
    n = len(data)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(
        n, "little"
    )


def _header(opcode: int, length: int, fin: bool, masked: bool) -> bytes:
    first = (0x80 if fin else 0) | opcode
    maskBit = 0x80 if masked else 0
    if length < 126:
        return bytes((first, maskBit | length))
    if length < 0x10000:
        return bytes((first, maskBit | 126)) + length.to_bytes(2, "big")
    return bytes((first, maskBit | 127)) + length.to_bytes(8, "big")


def encodeFrame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = None) -> bytes:
    """One frame: header (shortest length form), the masking key if any, the payload.

    A server sends C{mask=None}; a client passes four random bytes.
    """
    if mask is None:
        return _header(opcode, len(payload), fin, False) + payload
    if len(mask) != 4:
        raise ValueError("a masking key is 4 bytes")
    return _header(opcode, len(payload), fin, True) + mask + applyMask(payload, mask)


def encodeText(text: str) -> bytes:
    """An unmasked, unfragmented text frame: what a server sends most."""
    payload = text.encode("utf-8")
    n = len(payload)
    if n < 126:
        return _TEXT_HEADERS[n] + payload
    return _header(OP_TEXT, n, True, False) + payload


def encodeClose(code: int | None = None, reason: str = "") -> bytes:
    """A Close frame's payload (RFC 6455 §5.5.1): the status, then a UTF-8 reason.

    C{code=None} is an empty payload (no status). The reason is cut to fit 125 bytes at a
    character boundary.
    """
    if code is None:
        return b""
    data = reason.encode("utf-8")
    if len(data) > MAX_CONTROL_PAYLOAD - 2:
        data = data[: MAX_CONTROL_PAYLOAD - 2].decode("utf-8", "ignore").encode("utf-8")
    return code.to_bytes(2, "big") + data


def _validCloseCode(code: int) -> bool:
    # RFC 6455 §7.4: 1004-1006 and 1015 are reserved and never appear on the wire; 1012-1014
    # are registered in the IANA registry since; 3000-4999 are for libraries and apps.
    return 1000 <= code <= 1014 and code not in (1004, 1005, 1006) or 3000 <= code <= 4999


def decodeClose(payload: bytes) -> tuple[int, str]:
    """C{(code, reason)} of a Close frame's payload; no status is C{CLOSE_NO_STATUS}."""
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise WebSocketFrameError("close payload of 1 byte")
    code = int.from_bytes(payload[:2], "big")
    if not _validCloseCode(code):
        raise WebSocketFrameError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketFrameError("close reason is not UTF-8", CLOSE_INVALID_DATA) from None
    return code, reason


class MessageDecoder:
    """Bytes in; whole messages and control frames out (RFC 6455 §5.2 to §5.6).

    L{feed} returns C{(opcode, payload)} pairs: C{OP_TEXT} with a C{str} (fragments
    joined, UTF-8 checked), C{OP_BINARY} with C{bytes}, and the control frames
    C{OP_CLOSE}, C{OP_PING}, C{OP_PONG} with their raw payload bytes. Errors raise
    L{WebSocketFrameError} (L{MessageTooBig} before the oversized payload is buffered).

    @ivar maxMessage: most payload bytes of one message; may be changed between feeds.
    @ivar masked: frames must be masked (a server decoding a client) or must not be.
    """

    def __init__(self, maxMessage: int, masked: bool = True) -> None:
        self.maxMessage = maxMessage
        self.masked = masked
        #: Bytes received but not yet decoded, kept as the chunks they came in; joined
        #: only once L{_need} bytes are there, so a frame trickling in a byte at a time
        #: is copied a bounded number of times, not once per read.
        self._chunks: list[bytes] = []
        self._buffered = 0
        #: Bytes needed before the next frame (or its header) can be decoded.
        self._need = 0
        self._fragments: list[bytes] = []
        self._fragmentsLength = 0
        self._fragmentOpcode: int | None = None

    def feed(self, data: bytes) -> list[tuple[int, bytes | str]]:
        """Everything complete in what was received so far.

        Linear in the bytes received: while the frame being received is incomplete,
        reads are only appended to a list (no copy of what came before).
        """
        if self._chunks:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered < self._need:
                return []
            buffer = b"".join(self._chunks)
            self._chunks = []
            self._buffered = 0
        else:
            buffer = data
        out: list[tuple[int, bytes | str]] = []
        size = len(buffer)
        pos = 0
        need = 2
        while size - pos >= 2:
            first = buffer[pos]
            second = buffer[pos + 1]
            opcode = first & 0x0F
            fin = first & 0x80
            if first & 0x70:
                raise WebSocketFrameError("RSV bit set without an extension")
            if bool(second & 0x80) != self.masked:
                raise WebSocketFrameError(
                    "client frame not masked" if self.masked else "server frame masked"
                )
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if size - start < 2:
                    need = 4
                    break
                length = int.from_bytes(buffer[start : start + 2], "big")
                if length < 126:
                    raise WebSocketFrameError("length not in its shortest form")
                start += 2
            elif length == 127:
                if size - start < 8:
                    need = 10
                    break
                length = int.from_bytes(buffer[start : start + 8], "big")
                if length >> 63:
                    raise WebSocketFrameError("64-bit length with its top bit set")
                if length < 0x10000:
                    raise WebSocketFrameError("length not in its shortest form")
                start += 8
            self._check(opcode, fin, length)
            end = start + (4 if self.masked else 0) + length
            if end > size:
                need = end - pos
                break
            if self.masked:
                payload = applyMask(buffer[start + 4 : end], buffer[start : start + 4])
            else:
                payload = buffer[start:end]
            pos = end
            need = 2
            message = self._frame(opcode, fin, payload)
            if message is not None:
                out.append(message)
        if pos < size:
            rest = buffer[pos:] if pos else buffer
            self._chunks = [rest]
            self._buffered = len(rest)
            self._need = need
        return out

    def _check(self, opcode: int, fin: int, length: int) -> None:
        """The rules that can be checked on a frame's header alone."""
        if opcode in _CONTROL_OPCODES:
            if not fin:
                raise WebSocketFrameError("fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise WebSocketFrameError("control frame above 125 bytes")
            return
        if opcode not in _DATA_OPCODES:
            raise WebSocketFrameError(f"reserved opcode {opcode:#x}")
        if opcode == OP_CONTINUATION:
            if self._fragmentOpcode is None:
                raise WebSocketFrameError("continuation frame outside a message")
        elif self._fragmentOpcode is not None:
            raise WebSocketFrameError("new message before the last one ended")
        total = self._fragmentsLength + length
        if total > self.maxMessage:
            raise MessageTooBig(total, self.maxMessage)

    def _frame(self, opcode: int, fin: int, payload: bytes) -> tuple[int, bytes | str] | None:
        if opcode >= OP_CLOSE:
            if opcode == OP_CLOSE:
                decodeClose(payload)  # raises on a malformed status or reason
            return opcode, payload
        if opcode != OP_CONTINUATION:
            if fin:
                return _message(opcode, payload)
            self._fragmentOpcode = opcode
            self._fragments = [payload]
            self._fragmentsLength = len(payload)
            return None
        self._fragments.append(payload)
        self._fragmentsLength += len(payload)
        if not fin:
            return None
        whole = b"".join(self._fragments)
        kind = self._fragmentOpcode
        self._fragments = []
        self._fragmentsLength = 0
        self._fragmentOpcode = None
        return _message(kind, whole)  # type: ignore[arg-type]


def _message(opcode: int, payload: bytes) -> tuple[int, bytes | str]:
    if opcode == OP_TEXT:
        try:
            return OP_TEXT, payload.decode("utf-8")
        except UnicodeDecodeError:
            raise WebSocketFrameError("text message is not UTF-8", CLOSE_INVALID_DATA) from None
    return opcode, payload
