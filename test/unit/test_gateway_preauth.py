"""Attack tests of the gateway's front door (issue 14 items 11 and 17), in memory.

Everything a client may send before hello-ok goes through the real server protocol
(L{p2pnet.protocols.gateway_server.GatewayWebSocket} on a L{WebSocketConnection} over a
C{StringTransport}): nothing raises out of a handler, every refusal ends with a close
frame, and the log stays bounded. Then the client address behind proxies (RFC 9110
gateway.md §5.3) and the limits keyed by source.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from p2pnet.codecs.gateway_frames import decodeFrame
from p2pnet.codecs.websocket_frame import OP_TEXT, encodeFrame
from p2pnet.protocols.gateway_server import GatewayWebSocket, _headers
from p2pnet.protocols.websocket import WebSocketConnection
from p2pnet.services.gateway import MAX_PREAUTH_PAYLOAD, GatewayService
from p2pnet.services.gateway_policy import AuthConfig
from test.gateway_helpers import Device, MemoryStore

TOKEN = "fuzz-token"


def serverFrames(data: bytes) -> list[tuple[int, bytes]]:
    """The unmasked frames a server wrote: C{(opcode, payload)}."""
    frames = []
    while data:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if length == 126:
            length, offset = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, offset = int.from_bytes(data[2:10], "big"), 10
        frames.append((opcode, data[offset : offset + length]))
        data = data[offset + length :]
    return frames


class Wire:
    """One WebSocket of a L{GatewayService}, as the listener builds it, on memory."""

    def __init__(self, service: GatewayService, remote: str,
                 headers: dict[str, str] | None = None) -> None:
        info = service.connectionInfo(remote, headers or {})
        self.socket = GatewayWebSocket(service, info)
        self.wire = WebSocketConnection(self.socket, MAX_PREAUTH_PAYLOAD)
        self.transport = StringTransport()
        self.transport.registerProducer(object(), True)  # what the HTTP channel leaves
        self.wire.makeConnection(self.transport)
        self.socket.negotiationFinished()

    def send(self, text: str) -> None:
        self.wire.dataReceived(encodeFrame(OP_TEXT, text.encode("utf-8"), mask=os.urandom(4)))

    def frames(self) -> list[tuple[int, bytes]]:
        return serverFrames(self.transport.value())

    def texts(self) -> list[dict[str, Any]]:
        return [json.loads(p) for op, p in self.frames() if op == 1]

    def close(self) -> tuple[int, str] | None:
        closes = [p for op, p in self.frames() if op == 8]
        if not closes:
            return None
        return int.from_bytes(closes[0][:2], "big"), closes[0][2:].decode("utf-8")

    def lose(self) -> None:
        self.wire.connectionLost(Failure(ConnectionDone()))


class FrontDoor(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.service = GatewayService(clock=self.clock, store=MemoryStore(),
                                      auth=AuthConfig("token", token=TOKEN))
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def wire(self, remote: str = "127.0.0.1", headers: dict[str, str] | None = None) -> Wire:
        wire = Wire(self.service, remote, headers)
        self.addCleanup(wire.lose)
        return wire


def validConnect(nonce: str, nowMs: int, withDevice: bool) -> dict[str, Any]:
    params: dict[str, Any] = {
        "minProtocol": 4, "maxProtocol": 4,
        "client": {"id": "cli", "version": "1", "platform": "linux", "mode": "cli",
                   "displayName": "d", "deviceFamily": "f", "modelIdentifier": "m",
                   "instanceId": "i"},
        "role": "operator", "scopes": ["operator.read"], "caps": [], "commands": [],
        "permissions": {}, "pathEnv": "/bin", "locale": "en", "userAgent": "ua",
        "auth": {"token": TOKEN},
    }
    if withDevice:
        params["device"] = Device().block(nonce, nowMs, params)
    return {"type": "req", "id": "c1", "method": "connect", "params": params}


#: Every JSON path of a connect frame a client controls before hello-ok.
PATHS = [
    ("type",), ("id",), ("method",), ("params",),
    *[("params", k) for k in ("minProtocol", "maxProtocol", "client", "role", "scopes",
                              "caps", "commands", "permissions", "pathEnv", "device",
                              "auth", "locale", "userAgent")],
    *[("params", "client", k) for k in ("id", "version", "platform", "mode", "displayName",
                                        "deviceFamily", "modelIdentifier", "instanceId")],
    *[("params", "device", k) for k in ("id", "publicKey", "signature", "signedAt",
                                        "nonce")],
    *[("params", "auth", k) for k in ("token", "bootstrapToken", "deviceToken",
                                      "password")],
    ("params", "scopes", 0), ("params", "permissions", "x"), ("params", "caps", 0),
]

DELETE = object()

hostile = st.recursive(
    st.one_of(
        st.none(), st.booleans(),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.sampled_from([2**63, -(2**63) - 1, 10**4000 // 10**3990, 2**53 + 1]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=40),
        st.sampled_from(["\ud800", "a\udfff", "\udc00\ud800", "", " ", "operator",
                         "node", "cli", "x" * 300, "\x00", "BEGIN", "é"]),
    ),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5) | st.just("\ud800"), children, max_size=3),
    max_leaves=6,
)


def mutate(frame: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = frame
    for step in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(step, {})
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            node = node[step]
        else:
            return
    last = path[-1]
    if isinstance(node, dict):
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list):
        if value is DELETE:
            node.clear()
        elif isinstance(last, int) and last < len(node):
            node[last] = value
        else:
            node.append(value)


class FuzzTests(FrontDoor):
    """Every pre-auth field replaced by hostile JSON, through the real protocol."""

    def attempt(self, path: tuple[Any, ...], value: Any, withDevice: bool,
                remote: str) -> None:
        before = len(self.events)
        wire = self.wire(remote)
        [challenge] = wire.texts()
        frame = validConnect(challenge["payload"]["nonce"], int(self.clock.seconds() * 1000),
                             withDevice)
        mutate(frame, path, value)
        # ensure_ascii: a lone surrogate travels as the escape "\ud800", as a hostile
        # client sends it; the WebSocket text itself stays valid UTF-8.
        wire.send(json.dumps(frame, ensure_ascii=True))
        texts = wire.texts()[1:]
        hello = [t for t in texts if t.get("payload", {}).get("type") == "hello-ok"]
        closed = wire.close()
        self.assertTrue(hello or closed, (path, value, texts))
        if closed is not None:
            self.assertNotEqual(closed[0], 1011, (path, value))
            for text in texts:
                decodeFrame(json.dumps(text))  # every answer is a valid frame
        wire.lose()
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertLessEqual(len(self.events) - before, 3, self.events[before:])

    @settings(max_examples=400, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(PATHS), st.one_of(hostile, st.just(DELETE)), st.booleans(),
           st.sampled_from(["127.0.0.1", "203.0.113.9", "2001:db8::7"]))
    def test_hostileField(self, path: tuple[Any, ...], value: Any, withDevice: bool,
                          remote: str) -> None:
        self.attempt(path, value, withDevice, remote)

    def test_everyFieldNull(self) -> None:
        for path in PATHS:
            for withDevice in (False, True):
                self.attempt(path, None, withDevice, "127.0.0.1")

    def test_nullClient(self) -> None:
        """Issue 14 item 11: C{"client": null} is a schema error, not a TypeError."""
        wire = self.wire()
        wire.send(json.dumps({"type": "req", "id": "1", "method": "connect", "params": {
            "minProtocol": 4, "maxProtocol": 4, "client": None}}))
        [_, answer] = wire.texts()
        self.assertEqual(answer["error"]["code"], "INVALID_REQUEST")
        self.assertIn("/client: must be object", answer["error"]["message"])
        self.assertEqual(wire.close()[0], 1008)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_loneSurrogateId(self) -> None:
        """Issue 14 item 11: an C{id} of C{"\\ud800"} closes 1008, one log line at most."""
        before = len(self.events)
        wire = self.wire()
        wire.send('{"type":"req","id":"\\ud800","method":"connect","params":{}}')
        self.assertEqual(wire.close(), (1008, "invalid request frame"))
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertLessEqual(len(self.events) - before, 1)

    def test_loneSurrogateAfterAuth(self) -> None:
        """After hello-ok the same frame gets an error answer without the bad id."""
        wire = self.wire()
        wire.send(json.dumps(validConnect("", 0, False)))
        wire.send('{"type":"req","id":"\\udfff","method":"health"}')
        answer = wire.texts()[-1]
        self.assertEqual((answer["id"], answer["ok"]), ("invalid", False))
        self.assertIsNone(wire.close())

    def test_surrogatePairIsText(self) -> None:
        """An escaped pair is one valid character and passes."""
        wire = self.wire()
        frame = validConnect("", 0, False)
        frame["id"] = "\U0001f600"
        wire.send(json.dumps(frame, ensure_ascii=True))
        self.assertEqual(wire.texts()[-1]["id"], "\U0001f600")

    def test_handlerErrorIsOneLineAndClose(self) -> None:
        """Should a handler still raise, the peer gets 1011 and the log one line."""
        wire = self.wire()

        def broken(*args: object) -> None:
            raise TypeError("boom")

        wire.socket.session.frameReceived = broken  # type: ignore[method-assign]
        before = len(self.events)
        for _ in range(3):
            wire.send('{"type":"req","id":"1","method":"connect"}')
        self.assertEqual(wire.close(), (1011, "internal error"))
        self.assertEqual(len(self.events) - before, 1)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.service.stats.snapshot()["handler_errors"], 1)

    def test_methodBugIsAnswerAndBoundedLog(self) -> None:
        """After hello-ok too: a handler that raises answers UNAVAILABLE, counts, and a
        hundred calls write a handful of lines, not a traceback each."""

        def broken(context: object) -> None:
            raise ZeroDivisionError("boom")

        self.service.methods.register("status", broken)
        wire = self.wire()
        wire.send(json.dumps(validConnect("", 0, False)))
        before = len(self.events)
        for i in range(100):
            wire.send(json.dumps({"type": "req", "id": f"s{i}", "method": "status"}))
        answer = wire.texts()[-1]
        self.assertEqual((answer["id"], answer["error"]["code"]), ("s99", "UNAVAILABLE"))
        self.assertEqual(self.service.stats.snapshot()["handler_errors"], 100)
        self.assertLessEqual(len(self.events) - before, 5)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertIsNone(wire.close())

    def test_logBoundedAcrossConnections(self) -> None:
        """A hundred refused handshakes cost a handful of lines, not a hundred."""
        before = len(self.events)
        for _ in range(100):
            wire = Wire(self.service, "203.0.113.5")
            wire.send(json.dumps({"type": "req", "id": "1", "method": "connect",
                                  "params": {"minProtocol": 4, "maxProtocol": 4,
                                             "client": None}}))
            wire.lose()
        self.assertLessEqual(len(self.events) - before, 6)


class ForwardedTests(FrontDoor):
    """X-Forwarded-For as RFC 9110 §5.3 combines it, and limits per source."""

    def setUp(self) -> None:
        super().setUp()
        import ipaddress

        self.service.auth = AuthConfig(
            "token", token=TOKEN, trustedProxies=(ipaddress.ip_network("10.0.0.2/32"),))

    def request(self, lines: list[bytes]) -> Any:
        class Fake:
            requestHeaders = Headers({b"X-Forwarded-For": lines, b"Host": [b"gw"]})

        return Fake()

    def test_allLinesJoined(self) -> None:
        headers = _headers(self.request([b"6.6.6.6", b"198.51.100.4"]),
                           frozenset({"x-forwarded-for", "host"}))
        self.assertEqual(headers["x-forwarded-for"], "6.6.6.6, 198.51.100.4")

    def test_clientCannotChooseItsAddress(self) -> None:
        """Behind HAProxy C{option forwardfor} (it appends its own line), a client's
        own first line is not the address the gateway sees."""
        headers = _headers(self.request([b"6.6.6.6", b"198.51.100.4"]),
                           frozenset({"x-forwarded-for"}))
        info = self.service.connectionInfo("10.0.0.2", headers)
        self.assertEqual(info.clientIp, "198.51.100.4")

    def test_lockedOutClientStaysLockedOut(self) -> None:
        """The reproduction of issue 14 item 17: locked out, then a first line of its
        own choosing does not get the client in."""
        for _ in range(11):
            headers = _headers(self.request([b"198.51.100.4"]), frozenset({"x-forwarded-for"}))
            wire = self.wire("10.0.0.2", headers)
            frame = validConnect("", 0, False)
            frame["params"]["auth"] = {"token": "wrong"}
            wire.send(json.dumps(frame))
            wire.lose()
        headers = _headers(self.request([b"203.0.113.1", b"198.51.100.4"]),
                           frozenset({"x-forwarded-for"}))
        wire = self.wire("10.0.0.2", headers)
        wire.send(json.dumps(validConnect("", 0, False)))
        answer = wire.texts()[-1]
        self.assertEqual(answer["error"]["details"]["code"], "AUTH_RATE_LIMITED")

    def test_ipv6LimitedPerSlash64(self) -> None:
        """Ten wrong tokens from ten addresses of one /64 lock the whole /64 out."""
        self.service.auth = AuthConfig("token", token=TOKEN)
        for i in range(10):
            wire = self.wire(f"2001:db8:1:2::{i + 1:x}")
            frame = validConnect("", 0, False)
            frame["params"]["auth"] = {"token": "wrong"}
            wire.send(json.dumps(frame))
            wire.lose()
        wire = self.wire("2001:db8:1:2:ffff::1")
        wire.send(json.dumps(validConnect("", 0, False)))
        self.assertEqual(wire.texts()[-1]["error"]["details"]["code"], "AUTH_RATE_LIMITED")
        other = self.wire("2001:db8:1:3::1")
        other.send(json.dumps(validConnect("", 0, False)))
        self.assertNotIn("error", other.texts()[-1])

    def test_failedAuthLoggedWithoutSecret(self) -> None:
        before = len(self.events)
        wire = self.wire("198.51.100.9")
        frame = validConnect("", 0, False)
        frame["params"]["auth"] = {"token": "hunter2-secret"}
        wire.send(json.dumps(frame))
        lines = [e for e in self.events[before:] if "refused" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1)
        from twisted.logger import formatEvent

        text = formatEvent(lines[0])
        self.assertIn("198.51.100.9", text)
        self.assertIn("token_mismatch", text)
        self.assertNotIn("hunter2", text)

    def test_preauthCapPerSlash64(self) -> None:
        """At most 32 unauthenticated sockets per /64 (the upgrade answers 503 past it)."""
        for i in range(32):
            self.assertTrue(self.service.canOpen(f"2001:db8:5:6::{i + 1:x}"))
            self.wire(f"2001:db8:5:6::{i + 1:x}")
        self.assertFalse(self.service.canOpen("2001:db8:5:6:1::1"))
        self.assertTrue(self.service.canOpen("2001:db8:5:7::1"))
