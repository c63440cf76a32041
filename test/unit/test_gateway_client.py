"""Tests for L{p2pnet.protocols.gateway_client}, on a Clock with fake transports."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.device_auth import verifyDeviceProof
from p2pnet.protocols.gateway_client import (
    ClientOptions,
    DeviceIdentity,
    GatewayClient,
    GatewayClientProtocol,
    GatewayError,
)


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.closed: tuple[int, str] | None = None

    def sendTextMessage(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def loseConnection(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


def event(name: str, payload: Any) -> str:
    return json.dumps({"type": "event", "event": name, "payload": payload})


class ProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.identity = DeviceIdentity.load(os.path.join(self.mktemp(), "id.json"))
        self.options = ClientOptions(role="node", clientId="node-host", clientMode="node",
                                     token="t", identity=self.identity,
                                     handlers={"echo": lambda c, p: p})
        self.protocol = GatewayClientProtocol(self.clock, self.options)
        self.transport = FakeTransport()
        self.protocol.negotiationStarted(self.transport)  # type: ignore[arg-type]
        self.protocol.negotiationFinished()

    def helloOk(self, tickMs: int = 30000) -> None:
        self.protocol.textMessageReceived(event("connect.challenge", {"nonce": "n", "ts": 5}))
        connect = self.transport.sent[-1]
        self.protocol.textMessageReceived(json.dumps({
            "type": "res", "id": connect["id"], "ok": True,
            "payload": {"type": "hello-ok", "policy": {"tickIntervalMs": tickMs},
                        "auth": {"deviceToken": "dt", "scopes": []}}}))

    def test_signedConnect(self) -> None:
        self.protocol.textMessageReceived(event("connect.challenge",
                                                {"nonce": "nonce-1", "ts": 1234}))
        [connect] = self.transport.sent
        params = connect["params"]
        self.assertEqual((params["minProtocol"], params["maxProtocol"]), (3, 4))
        self.assertEqual(params["commands"], ["echo"])
        device = params["device"]
        self.assertEqual(device["signedAt"], 1234)
        version, _ = verifyDeviceProof(
            deviceId=device["id"], publicKey=device["publicKey"],
            signature=device["signature"], signedAt=1234, nonce=device["nonce"],
            challengeNonce="nonce-1", nowMs=1234, clientId="node-host", clientMode="node",
            role="node", scopes=[], token="t", platform="linux", deviceFamily=None)
        self.assertEqual(version, "v3")

    def test_challengeTimeout(self) -> None:
        self.clock.advance(10)
        self.assertEqual(self.transport.closed, (1008, "connect challenge timeout"))

    def test_challengeWithoutNonce(self) -> None:
        self.protocol.textMessageReceived(event("connect.challenge", {"nonce": " ", "ts": 1}))
        self.assertEqual(self.transport.closed, (1008, "connect challenge missing nonce"))

    def test_challengeWithoutTs(self) -> None:
        self.protocol.textMessageReceived(event("connect.challenge", {"nonce": "n"}))
        self.assertEqual(self.transport.closed, (1008, "connect challenge missing ts"))

    def test_helloOkStoresToken(self) -> None:
        connected: list[Any] = []
        self.protocol.connected.addCallback(connected.append)
        self.helloOk()
        self.assertEqual(connected, [self.protocol])
        self.assertEqual(DeviceIdentity.load(self.identity.path).token("node"), "dt")

    def test_tickWatchdog(self) -> None:
        self.helloOk(tickMs=1000)
        self.clock.advance(1.9)
        self.protocol.textMessageReceived(event("tick", {"ts": 1}))
        self.clock.advance(1.9)
        self.assertIsNone(self.transport.closed)
        self.clock.advance(0.1)
        self.assertEqual(self.transport.closed, (4000, "tick timeout"))

    def test_invokeRequestAnswered(self) -> None:
        self.helloOk()
        self.protocol.textMessageReceived(event("node.invoke.request", {
            "id": "i1", "nodeId": "n1", "command": "echo", "paramsJSON": "[1]"}))
        result = self.transport.sent[-1]
        self.assertEqual(result["method"], "node.invoke.result")
        self.assertEqual(result["params"], {"id": "i1", "nodeId": "n1", "ok": True,
                                            "payloadJSON": "[1]"})
        self.protocol.textMessageReceived(event("node.invoke.request", {
            "id": "i2", "nodeId": "n1", "command": "nope", "paramsJSON": None}))
        self.assertFalse(self.transport.sent[-1]["params"]["ok"])

    def test_requestErrorsAndConnectionLoss(self) -> None:
        self.helloOk()
        failed = self.protocol.request("status")
        rid = self.transport.sent[-1]["id"]
        self.protocol.textMessageReceived(json.dumps({
            "type": "res", "id": rid, "ok": False,
            "error": {"code": "FORBIDDEN", "message": "missing scope: operator.read",
                      "details": {"code": "MISSING_SCOPE"}}}))
        error = self.failureResultOf(failed, GatewayError).value
        self.assertEqual((error.code, error.detailCode), ("FORBIDDEN", "MISSING_SCOPE"))
        pending = self.protocol.request("health")
        self.protocol.connectionLost(Failure(Exception("gone")))
        self.failureResultOf(pending, GatewayError)
        self.failureResultOf(self.protocol.request("health"), GatewayError)

    def test_deviceTokenMismatchForgetsToken(self) -> None:
        self.identity.setToken("node", "old")
        self.protocol.textMessageReceived(event("connect.challenge", {"nonce": "n", "ts": 5}))
        connect = self.transport.sent[-1]
        self.assertEqual(connect["params"]["auth"]["deviceToken"], "old")
        self.protocol.textMessageReceived(json.dumps({
            "type": "res", "id": connect["id"], "ok": False,
            "error": {"code": "INVALID_REQUEST", "message": "unauthorized",
                      "details": {"code": "AUTH_DEVICE_TOKEN_MISMATCH"}}}))
        self.assertIsNone(DeviceIdentity.load(self.identity.path).token("node"))


class IdentityTests(SynchronousTestCase):
    def test_fileRoundTrip(self) -> None:
        path = os.path.join(self.mktemp(), "id.json")
        first = DeviceIdentity.load(path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        again = DeviceIdentity.load(path)
        self.assertEqual((again.deviceId, again.publicKey), (first.deviceId, first.publicKey))
        self.assertEqual(len(first.deviceId), 64)

    def test_createdAtFromTheClockAndKept(self) -> None:
        """The creation time comes from the injected clock and survives later saves."""
        path = os.path.join(self.mktemp(), "id.json")
        clock = Clock()
        clock.advance(1_700_000_000.5)
        DeviceIdentity.load(path, clock)
        clock.advance(1000)
        again = DeviceIdentity.load(path, clock)
        again.setToken("node", "tok", ())
        with open(path) as f:
            self.assertEqual(json.load(f)["createdAtMs"], 1_700_000_000_500)
        bare = os.path.join(self.mktemp(), "id.json")
        DeviceIdentity.load(bare)
        with open(bare) as f:
            self.assertNotIn("createdAtMs", json.load(f))

    def test_mismatchedFile(self) -> None:
        path = os.path.join(self.mktemp(), "id.json")
        DeviceIdentity.load(path)
        with open(path) as f:
            data = json.load(f)
        data["deviceId"] = "0" * 64
        with open(path, "w") as f:
            json.dump(data, f)
        self.assertRaises(ValueError, DeviceIdentity.load, path)


class FakeProtocol:
    def __init__(self, outcome: Any) -> None:
        self.connected: Deferred[Any] = Deferred()
        self.disconnected: Deferred[None] = Deferred()
        self.closed = False
        if isinstance(outcome, Exception):
            self.connected.errback(outcome)
        else:
            self.connected.callback(self)

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = True


class ReconnectTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.outcomes: list[Any] = []
        self.attempts: list[float] = []
        self.made: list[FakeProtocol] = []

        def connect(reactor: Any, url: str, make: Any) -> Deferred[Any]:
            self.attempts.append(self.clock.seconds())
            protocol = FakeProtocol(self.outcomes.pop(0))
            self.made.append(protocol)
            return succeed(protocol)

        self.client = GatewayClient(self.clock, "ws://x/", ClientOptions(), connect=connect,
                                    initialDelay=1, maxDelay=4, jitter=lambda: 1.0)

    def test_backoffAndReset(self) -> None:
        transient = GatewayError("UNAVAILABLE", "closed")
        self.outcomes = [transient, transient, transient, transient, "ok", "ok"]
        self.client.start()
        self.clock.pump([1, 2, 4, 4])
        self.assertEqual(self.attempts, [0, 1, 3, 7, 11])
        self.assertIs(self.client.protocol, self.made[-1])
        self.made[-1].disconnected.callback(None)
        self.assertIsNone(self.client.protocol)
        self.clock.advance(1)
        self.assertEqual(len(self.attempts), 6)

    def test_stopCodes(self) -> None:
        self.outcomes = [GatewayError("NOT_PAIRED", "pairing required",
                                      {"code": "PAIRING_REQUIRED"})]
        waiting = self.client.whenConnected()
        self.client.start()
        self.assertEqual(self.failureResultOf(waiting, GatewayError).value.detailCode,
                         "PAIRING_REQUIRED")
        self.clock.advance(100)
        self.assertEqual(len(self.attempts), 1)

    def test_mismatchRetries(self) -> None:
        self.outcomes = [GatewayError("INVALID_REQUEST", "x",
                                      {"code": "AUTH_DEVICE_TOKEN_MISMATCH"}), "ok"]
        self.client.start()
        self.clock.advance(1)
        self.assertEqual(len(self.attempts), 2)
        self.assertIsNotNone(self.client.protocol)

    def test_stop(self) -> None:
        self.outcomes = ["ok"]
        self.client.start()
        protocol = self.client.protocol
        self.client.stop()
        self.assertTrue(protocol.closed)
        protocol.disconnected.callback(None)
        self.clock.advance(100)
        self.assertEqual(len(self.attempts), 1)
