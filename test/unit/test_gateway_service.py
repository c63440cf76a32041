"""Tests for L{p2pnet.services.gateway}: the handshake and methods, on a Clock."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.application.service import MultiService, Service
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.gateway_frames import CloseCode, Event, FrameError, Response, decodeFrame
from p2pnet.services.gateway import GatewayService, GatewaySession
from p2pnet.services.gateway_operator import OperatorListing
from p2pnet.services.gateway_policy import AuthConfig
from p2pnet.stats import Stats
from test.gateway_helpers import Device, FakeSink, MemoryStore, connectParams, request

TOKEN = "s3cret-token"
REMOTE = "203.0.113.7"
LOCAL = "127.0.0.1"


class Harness(SynchronousTestCase):
    """A service on a Clock with helpers to open sessions and connect."""

    auth = AuthConfig("token", token=TOKEN)

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = MemoryStore()
        self.counter = 0
        self.service = self.makeService()
        self.service.startService()
        self.addCleanup(self.stop)

    def makeService(self, **kwargs: Any) -> GatewayService:
        def newId() -> str:
            self.counter += 1
            return f"id-{self.counter}"

        kwargs.setdefault("auth", self.auth)
        return GatewayService(clock=self.clock, store=self.store, newId=newId,
                              stateDir="/state", **kwargs)

    def stop(self) -> None:
        if self.service.running:
            self.service.stopService()

    def open(self, remote: str = REMOTE, headers: dict | None = None
             ) -> tuple[GatewaySession, FakeSink]:
        sink = FakeSink()
        info = self.service.connectionInfo(remote, headers or {})
        session = self.service.openSession(sink, info)
        session.opened()
        return session, sink

    def nonce(self, sink: FakeSink) -> str:
        return sink.events("connect.challenge")[0].payload["nonce"]

    def connect(self, params: dict, remote: str = REMOTE, headers: dict | None = None,
                device: Device | None = None) -> tuple[GatewaySession, FakeSink, Response]:
        session, sink = self.open(remote, headers)
        if device is not None:
            params = dict(params, device=device.block(
                self.nonce(sink), int(self.clock.seconds() * 1000), params))
        session.frameReceived(request("c1", "connect", params))
        return session, sink, sink.response("c1")

    def call(self, session: GatewaySession, sink: FakeSink, method: str,
             params: Any = None) -> Response:
        self.counter += 1
        rid = f"r{self.counter}"
        session.frameReceived(request(rid, method, params))
        return sink.response(rid)

    def hangUp(self, session: GatewaySession) -> None:
        session.connectionLost()

    def assertRejected(self, response: Response, sink: FakeSink, code: str,
                       closeCode: int = CloseCode.POLICY) -> dict:
        self.assertFalse(response.ok, response)
        self.assertEqual(sink.closed[0], closeCode)
        self.assertLessEqual(len(sink.closed[1].encode()), 120)
        details = response.error.get("details", {})
        self.assertEqual(details.get("code"), code, response.error)
        return response.error


class HandshakeTests(Harness):
    def test_challengeOnOpen(self) -> None:
        _, sink = self.open()
        [challenge] = sink.frames
        self.assertEqual(challenge.event, "connect.challenge")
        self.assertIsNone(challenge.seq)
        self.assertEqual(challenge.payload["ts"], 1_700_000_000_000)
        self.assertTrue(challenge.payload["nonce"])

    def test_timeoutClosesWith1000(self) -> None:
        _, sink = self.open()
        self.clock.advance(9.9)
        self.assertIsNone(sink.closed)
        self.clock.advance(0.1)
        self.assertEqual(sink.closed, (1000, ""))

    def test_configurableTimeout(self) -> None:
        self.service = self.makeService(handshakeTimeout=3)
        _, sink = self.open()
        self.clock.advance(3)
        self.assertEqual(sink.closed, (1000, ""))

    def test_timerClearedByHelloOk(self) -> None:
        session, sink, response = self.connect(connectParams(token=TOKEN))
        self.assertTrue(response.ok)
        self.assertIsNone(session.timer)
        self.clock.advance(20)
        self.assertIsNone(sink.closed)

    def test_storeNotReadYetCloses1012(self) -> None:
        """A shared store not read yet: 1012 (come back), not a refusal that would make
        the device forget its token; once read, the same connect is admitted."""
        self.store.ready = False
        session, sink = self.open()
        session.frameReceived(request("c1", "connect", connectParams(token=TOKEN)))
        self.assertEqual(sink.closed, (1012, "gateway starting"))
        self.assertEqual([f for f in sink.frames if isinstance(f, Response)], [])
        self.store.ready = True
        _, _, response = self.connect(connectParams(token=TOKEN))
        self.assertTrue(response.ok)

    def test_badJsonCloses1000(self) -> None:
        session, sink = self.open()
        session.badFrame(FrameError("x", badJson=True))
        self.assertEqual(sink.closed, (1000, ""))

    def test_nonRequestFrame(self) -> None:
        session, sink = self.open()
        session.frameReceived(Event("hello"))
        self.assertEqual(sink.closed, (1008, "invalid request frame"))
        session, sink = self.open()
        session.badFrame(FrameError("not an object"))
        self.assertEqual(sink.closed, (1008, "invalid request frame"))

    def test_firstRequestMustBeConnect(self) -> None:
        session, sink = self.open()
        session.frameReceived(request("1", "health"))
        self.assertEqual(sink.response("1").error["message"],
                         "invalid handshake: first request must be connect")
        self.assertEqual(sink.closed, (1008, "invalid handshake: first request must be connect"))

    def test_invalidParams(self) -> None:
        session, sink = self.open()
        params = connectParams()
        params["client"]["id"] = "x" * 300
        params["bogus"] = 1
        session.frameReceived(request("1", "connect", params))
        message = sink.response("1").error["message"]
        self.assertTrue(message.startswith("invalid connect params: "))
        self.assertEqual(sink.closed[0], 1008)
        self.assertTrue(message.startswith(sink.closed[1]))
        self.assertLessEqual(len(sink.closed[1].encode()), 120)

    def test_protocolMismatch(self) -> None:
        params = connectParams(token=TOKEN)
        params.update(minProtocol=5, maxProtocol=6)
        _, sink, response = self.connect(params)
        error = self.assertRejected(response, sink, "PROTOCOL_MISMATCH", 1002)
        self.assertEqual(error["details"]["expectedProtocol"], 4)
        self.assertEqual(sink.closed, (1002, "protocol mismatch"))

    def test_protocolMismatchBeforeAuth(self) -> None:
        params = connectParams(token="wrong")
        params.update(minProtocol=1, maxProtocol=2)
        _, sink, _ = self.connect(params)
        self.assertEqual(sink.closed[0], 1002)

    def test_protocolNegotiated(self) -> None:
        params = connectParams(token=TOKEN)
        params.update(minProtocol=3, maxProtocol=3)
        self.assertEqual(self.connect(params)[2].payload["protocol"], 3)
        params.update(minProtocol=3, maxProtocol=9)
        self.assertEqual(self.connect(params)[2].payload["protocol"], 4)

    def test_invalidRole(self) -> None:
        _, sink, response = self.connect(connectParams(role="admin", token=TOKEN))
        self.assertEqual(response.error["message"], "invalid role")
        self.assertEqual(sink.closed, (1008, "invalid role"))

    def test_onlyOneConnect(self) -> None:
        session, sink, _ = self.connect(connectParams(token=TOKEN))
        response = self.call(session, sink, "connect", connectParams(token=TOKEN))
        self.assertEqual(response.error["message"], "connect is only valid as the first request")

    def test_helloOkShape(self) -> None:
        _, _, response = self.connect(connectParams(token=TOKEN))
        hello = response.payload
        self.assertEqual(hello["type"], "hello-ok")
        self.assertEqual(hello["server"]["connId"], "id-1")
        self.assertIn("node.invoke", hello["features"]["methods"])
        self.assertIn("tick", hello["features"]["events"])
        self.assertEqual(hello["policy"], {"maxPayload": 25 * 1024 * 1024,
                                           "maxBufferedBytes": 50 * 1024 * 1024,
                                           "tickIntervalMs": 30000})
        self.assertEqual(hello["auth"], {"method": "token", "role": "operator", "scopes": []})
        self.assertNotIn("stateDir", hello["snapshot"])
        self.assertEqual(hello["snapshot"]["stateVersion"], {"presence": 1, "health": 0})

    def test_adminSeesStateDir(self) -> None:
        _, _, response = self.connect(
            connectParams(scopes=["operator.admin"], clientId="cli", mode="cli", token=TOKEN),
            remote=LOCAL)
        self.assertEqual(response.payload["snapshot"]["stateDir"], "/state")
        self.assertEqual(response.payload["snapshot"]["authMode"], "token")


class DeviceLessTests(Harness):
    def test_operatorScopesCleared(self) -> None:
        session, sink, response = self.connect(
            connectParams(scopes=["operator.admin"], token=TOKEN))
        self.assertEqual(response.payload["auth"]["scopes"], [])
        self.assertTrue(self.call(session, sink, "health").ok)
        status = self.call(session, sink, "status")
        self.assertEqual(status.error["code"], "FORBIDDEN")
        self.assertEqual(status.error["details"], {
            "code": "MISSING_SCOPE", "missingScope": "operator.read",
            "requiredScopes": ["operator.read"]})

    def test_localCliKeepsScopes(self) -> None:
        session, sink, response = self.connect(
            connectParams(scopes=["operator.read"], clientId="cli", mode="cli", token=TOKEN),
            remote=LOCAL)
        self.assertEqual(response.payload["auth"]["scopes"], ["operator.read"])
        self.assertTrue(self.call(session, sink, "status").ok)

    def test_proxiedCliScopesCleared(self) -> None:
        _, _, response = self.connect(
            connectParams(scopes=["operator.read"], clientId="cli", mode="cli", token=TOKEN),
            remote=LOCAL, headers={"x-forwarded-for": "1.2.3.4"})
        self.assertEqual(response.payload["auth"]["scopes"], [])

    def test_nodeNeedsDevice(self) -> None:
        _, sink, response = self.connect(connectParams(role="node", token=TOKEN))
        self.assertEqual(response.error["code"], "NOT_PAIRED")
        self.assertRejected(response, sink, "DEVICE_IDENTITY_REQUIRED")

    def test_wrongToken(self) -> None:
        _, sink, response = self.connect(connectParams(token="nope"))
        error = self.assertRejected(response, sink, "AUTH_TOKEN_MISMATCH")
        self.assertEqual(error["details"]["authReason"], "token_mismatch")
        self.assertFalse(error["details"]["canRetryWithDeviceToken"])

    def test_noCredentials(self) -> None:
        _, sink, response = self.connect(connectParams())
        self.assertRejected(response, sink, "DEVICE_IDENTITY_REQUIRED")

    def test_controlUiNeedsDevice(self) -> None:
        _, sink, response = self.connect(
            connectParams(clientId="openclaw-control-ui", mode="ui", token=TOKEN),
            remote=LOCAL, headers={"origin": "http://localhost:5173"})
        self.assertRejected(response, sink, "CONTROL_UI_DEVICE_IDENTITY_REQUIRED")


class PasswordAndNoneTests(Harness):
    auth = AuthConfig("password", password="pw")

    def test_password(self) -> None:
        self.assertTrue(self.connect(connectParams(password="pw"))[2].ok)
        _, sink, response = self.connect(connectParams(password="x"))
        self.assertRejected(response, sink, "AUTH_PASSWORD_MISMATCH")
        _, sink, response = self.connect(connectParams(token="pw"))
        self.assertRejected(response, sink, "AUTH_PASSWORD_MISSING")

    def test_none(self) -> None:
        self.service = self.makeService(auth=AuthConfig("none"))
        self.assertEqual(self.connect(connectParams(), remote=LOCAL)[2].payload["auth"]["method"],
                         "none")
        _, sink, response = self.connect(connectParams(), remote=REMOTE)
        self.assertFalse(response.ok)


class RateLimitTests(Harness):
    def test_lockout(self) -> None:
        for _ in range(10):
            self.connect(connectParams(token="nope"))
        _, sink, response = self.connect(connectParams(token=TOKEN))
        error = self.assertRejected(response, sink, "AUTH_RATE_LIMITED")
        self.assertTrue(error["retryable"])
        self.assertEqual(error["retryAfterMs"], 300_000)
        self.assertEqual(error["details"]["recommendedNextStep"], "wait_then_retry")
        self.assertTrue(self.connect(connectParams(token=TOKEN), remote="198.51.100.1")[2].ok)
        self.clock.advance(300)
        self.assertTrue(self.connect(connectParams(token=TOKEN))[2].ok)

    def test_missingNotCounted(self) -> None:
        for _ in range(15):
            self.connect(connectParams(scopes=[], clientId="cli", mode="cli"))
        self.assertTrue(self.connect(connectParams(token=TOKEN))[2].ok)

    def test_loopbackExempt(self) -> None:
        for _ in range(12):
            self.connect(connectParams(token="nope"), remote=LOCAL)
        self.assertTrue(self.connect(connectParams(token=TOKEN), remote=LOCAL)[2].ok)

    def test_loopbackLimitedWhenConfigured(self) -> None:
        self.service = self.makeService(limitLoopback=True)
        for _ in range(10):
            self.connect(connectParams(token="nope"), remote=LOCAL)
        self.assertFalse(self.connect(connectParams(token=TOKEN), remote=LOCAL)[2].ok)

    def test_browserLimiterIgnoresExemption(self) -> None:
        self.service = self.makeService(allowedOrigins=("http://a.example", "http://b.example"))
        for _ in range(10):
            self.connect(connectParams(token="nope"), remote=LOCAL,
                         headers={"origin": "http://a.example"})
        _, sink, response = self.connect(connectParams(token=TOKEN), remote=LOCAL,
                                         headers={"origin": "http://a.example"})
        self.assertRejected(response, sink, "AUTH_RATE_LIMITED")
        self.assertTrue(self.connect(connectParams(token=TOKEN), remote=LOCAL,
                                     headers={"origin": "http://b.example"})[2].ok)

    def test_failuresCounted(self) -> None:
        self.connect(connectParams(token="nope"))
        self.assertEqual(
            self.service.stats.snapshot()['auth_failures{reason="token_mismatch"}'], 1)


class OriginTests(Harness):
    def test_remoteBrowserRejected(self) -> None:
        _, sink, response = self.connect(connectParams(token=TOKEN),
                                         headers={"origin": "https://evil.example"})
        error = self.assertRejected(response, sink, "CONTROL_UI_ORIGIN_NOT_ALLOWED")
        self.assertEqual(error["details"]["reason"], "origin not allowed")

    def test_allowedOrigin(self) -> None:
        self.service = self.makeService(allowedOrigins=("https://ui.example",))
        self.assertTrue(self.connect(connectParams(token=TOKEN),
                                     headers={"origin": "https://ui.example"})[2].ok)

    def test_localLoopbackOrigin(self) -> None:
        self.assertTrue(self.connect(connectParams(token=TOKEN), remote=LOCAL,
                                     headers={"origin": "http://localhost:3000"})[2].ok)

    def test_forgedLoopbackOriginThroughProxy(self) -> None:
        _, sink, response = self.connect(
            connectParams(token=TOKEN), remote=LOCAL,
            headers={"origin": "http://localhost:3000", "x-forwarded-for": "1.2.3.4"})
        self.assertRejected(response, sink, "CONTROL_UI_ORIGIN_NOT_ALLOWED")

    def test_webchatAlwaysChecked(self) -> None:
        _, sink, response = self.connect(connectParams(clientId="webchat-ui", mode="webchat",
                                                       token=TOKEN))
        error = self.assertRejected(response, sink, "CONTROL_UI_ORIGIN_NOT_ALLOWED")
        self.assertEqual(error["details"]["reason"], "origin missing or invalid")


class TrustedProxyTests(Harness):
    auth = AuthConfig("trusted-proxy", trustedProxies=(ipaddress.ip_network("10.0.0.0/8"),),
                      userHeader="x-user")

    def test_userFromProxy(self) -> None:
        session, _, response = self.connect(
            connectParams(), remote="10.0.0.5",
            headers={"x-user": "alice", "x-forwarded-for": "198.51.100.4"})
        self.assertEqual(response.payload["auth"]["method"], "trusted-proxy")
        self.assertEqual(session.info.clientIp, "198.51.100.4")

    def test_untrustedSource(self) -> None:
        _, sink, response = self.connect(connectParams(), remote=REMOTE,
                                         headers={"x-user": "alice"})
        self.assertRejected(response, sink, "DEVICE_IDENTITY_REQUIRED")

    def test_clientIpFailsClosed(self) -> None:
        session, _ = self.open("10.0.0.5", {"x-forwarded-for": "10.0.0.9"})
        self.assertIsNone(session.info.clientIp)


class DeviceTests(Harness):
    def setUp(self) -> None:
        super().setUp()
        self.device = Device()

    def test_remoteNodeNeedsPairingThenApproval(self) -> None:
        params = connectParams(role="node", clientId="node-host", mode="node", token=TOKEN)
        admin, adminSink, _ = self.connect(
            connectParams(scopes=["operator.pairing"], clientId="cli", mode="cli", token=TOKEN),
            remote=LOCAL)
        _, sink, response = self.connect(params, device=self.device)
        error = self.assertRejected(response, sink, "PAIRING_REQUIRED")
        self.assertEqual(response.error["code"], "NOT_PAIRED")
        requestId = error["details"]["requestId"]
        self.assertIn(requestId, sink.closed[1])
        [requested] = adminSink.events("device.pair.requested")
        self.assertEqual(requested.payload["deviceId"], self.device.id)
        listed = self.call(admin, adminSink, "device.pair.list").payload
        self.assertEqual([p["requestId"] for p in listed["pending"]], [requestId])
        approved = self.call(admin, adminSink, "device.pair.approve", {"requestId": requestId})
        self.assertEqual(approved.payload["device"]["roles"], ["node"])
        _, _, response = self.connect(params, device=self.device)
        self.assertTrue(response.ok, response)
        self.assertEqual(len(response.payload["auth"]["deviceToken"]), 43)

    def test_pairingNeedsPairingScope(self) -> None:
        reader, sink, _ = self.connect(
            connectParams(scopes=["operator.read"], clientId="cli", mode="cli", token=TOKEN),
            remote=LOCAL)
        self.assertEqual(self.call(reader, sink, "device.pair.approve", {"requestId": "x"})
                         .error["details"]["missingScope"], "operator.pairing")

    def test_rejectPairing(self) -> None:
        admin, adminSink, _ = self.connect(
            connectParams(scopes=["operator.admin"], clientId="cli", mode="cli", token=TOKEN),
            remote=LOCAL)
        params = connectParams(role="node", clientId="node-host", mode="node", token=TOKEN)
        response = self.connect(params, device=self.device)[2]
        requestId = response.error["details"]["requestId"]
        self.assertTrue(self.call(admin, adminSink, "device.pair.reject",
                                  {"requestId": requestId}).ok)
        self.assertEqual(self.call(admin, adminSink, "device.pair.approve",
                                   {"requestId": requestId}).error["code"],
                         "APPROVAL_NOT_FOUND")

    def test_pairingExpires(self) -> None:
        params = connectParams(role="node", clientId="node-host", mode="node", token=TOKEN)
        self.connect(params, device=self.device)
        self.assertEqual(len(self.service.pairings), 1)
        self.clock.advance(301)
        self.assertEqual(len(self.service.pairings), 0)

    def test_localNodeAutoApproved(self) -> None:
        params = connectParams(role="node", clientId="node-host", mode="node", token=TOKEN)
        _, _, response = self.connect(params, remote=LOCAL, device=self.device)
        self.assertTrue(response.ok, response)
        self.assertIn(self.device.id, self.store.devices)
        token = response.payload["auth"]["deviceToken"]
        # Reconnecting reuses the token.
        _, _, again = self.connect(params, remote=LOCAL, device=self.device)
        self.assertEqual(again.payload["auth"]["deviceToken"], token)

    def test_localScopeUpgradeNeedsApproval(self) -> None:
        params = connectParams(scopes=["operator.read"], token=TOKEN)
        self.assertTrue(self.connect(params, remote=LOCAL, device=self.device)[2].ok)
        params = connectParams(scopes=["operator.read", "operator.admin"], token=TOKEN)
        _, sink, response = self.connect(params, remote=LOCAL, device=self.device)
        error = self.assertRejected(response, sink, "PAIRING_REQUIRED")
        self.assertEqual(error["details"]["reason"], "scope-upgrade")
        self.assertEqual(self.service.pairings[error["details"]["requestId"]].scopes,
                         ("operator.read", "operator.admin"))

    def test_browserNotAutoPaired(self) -> None:
        _, sink, response = self.connect(connectParams(token=TOKEN), remote=LOCAL,
                                         headers={"origin": "http://localhost"},
                                         device=self.device)
        self.assertRejected(response, sink, "PAIRING_REQUIRED")

    def test_nonceRules(self) -> None:
        params = connectParams(token=TOKEN)
        session, sink = self.open()
        block = self.device.block("  ", int(self.clock.seconds() * 1000), params)
        session.frameReceived(request("c", "connect", dict(params, device=block)))
        self.assertRejected(sink.response("c"), sink, "DEVICE_AUTH_NONCE_REQUIRED")
        session, sink = self.open()
        block = self.device.block("other", int(self.clock.seconds() * 1000), params)
        session.frameReceived(request("c", "connect", dict(params, device=block)))
        self.assertRejected(sink.response("c"), sink, "DEVICE_AUTH_NONCE_MISMATCH")

    def test_staleSignature(self) -> None:
        params = connectParams(token=TOKEN)
        session, sink = self.open()
        block = self.device.block(self.nonce(sink), int(self.clock.seconds() * 1000) - 120_001,
                                  params)
        session.frameReceived(request("c", "connect", dict(params, device=block)))
        self.assertRejected(sink.response("c"), sink, "DEVICE_AUTH_SIGNATURE_EXPIRED")

    def test_signatureOverOtherScopes(self) -> None:
        session, sink = self.open()
        signed = connectParams(scopes=["operator.admin"], token=TOKEN)
        block = self.device.block(self.nonce(sink), int(self.clock.seconds() * 1000), signed)
        session.frameReceived(request("c", "connect", dict(connectParams(token=TOKEN),
                                                          device=block)))
        self.assertRejected(sink.response("c"), sink, "DEVICE_AUTH_SIGNATURE_INVALID")

    def pairLocally(self, role: str = "node", scopes: list[str] | None = None) -> str:
        params = connectParams(role=role, scopes=scopes, clientId="node-host", mode="node",
                               token=TOKEN)
        session, _, response = self.connect(params, remote=LOCAL, device=self.device)
        self.hangUp(session)
        return response.payload["auth"]["deviceToken"]

    def adminAndNode(self, scope: str) -> tuple[GatewaySession, FakeSink, FakeSink, dict]:
        """Pair the device as a node, then connect an operator holding C{scope} and the
        node with its device token: the operator, its sink, the node's sink and the
        node's connect params."""
        token = self.pairLocally()
        admin, adminSink, _ = self.connect(
            connectParams(scopes=[scope], clientId="cli", mode="cli", token=TOKEN),
            remote=LOCAL)
        params = connectParams(role="node", clientId="node-host", mode="node",
                               deviceToken=token)
        _, nodeSink, _ = self.connect(params, device=self.device)
        return admin, adminSink, nodeSink, params

    def test_deviceTokenWithoutSharedSecret(self) -> None:
        token = self.pairLocally()
        params = connectParams(role="node", clientId="node-host", mode="node",
                               deviceToken=token)
        _, _, response = self.connect(params, device=self.device)
        self.assertEqual(response.payload["auth"]["method"], "device-token")

    def test_deviceTokenViaTokenFallback(self) -> None:
        token = self.pairLocally()
        params = connectParams(role="node", clientId="node-host", mode="node", token=token)
        self.assertEqual(self.connect(params, device=self.device)[2].payload["auth"]["method"],
                         "device-token")

    def test_explicitDeviceTokenMismatch(self) -> None:
        self.pairLocally()
        params = connectParams(role="node", clientId="node-host", mode="node",
                               deviceToken="wrong")
        _, sink, response = self.connect(params, device=self.device)
        self.assertRejected(response, sink, "AUTH_DEVICE_TOKEN_MISMATCH")

    def test_fallbackKeepsSharedReason(self) -> None:
        self.pairLocally()
        params = connectParams(role="node", clientId="node-host", mode="node", token="wrong")
        _, sink, response = self.connect(params, device=self.device)
        error = self.assertRejected(response, sink, "AUTH_TOKEN_MISMATCH")
        self.assertTrue(error["details"]["canRetryWithDeviceToken"])
        self.assertEqual(error["details"]["recommendedNextStep"], "retry_with_device_token")

    def test_explicitDeviceTokenWinsOverWrongShared(self) -> None:
        token = self.pairLocally()
        params = connectParams(role="node", clientId="node-host", mode="node",
                               token="wrong", deviceToken=token)
        self.assertTrue(self.connect(params, device=self.device)[2].ok)

    def test_revokedTokenRejected(self) -> None:
        admin, adminSink, nodeSink, params = self.adminAndNode("operator.admin")
        revoked = self.call(admin, adminSink, "device.token.revoke",
                            {"deviceId": self.device.id, "role": "node"})
        self.assertTrue(revoked.ok)
        self.assertEqual(nodeSink.closed, (4001, "device removed"))
        _, sink, response = self.connect(params, device=self.device)
        self.assertRejected(response, sink, "AUTH_DEVICE_TOKEN_MISMATCH")

    def test_rotateClosesAndIssuesNewToken(self) -> None:
        admin, adminSink, nodeSink, params = self.adminAndNode("operator.admin")
        rotated = self.call(admin, adminSink, "device.token.rotate",
                            {"deviceId": self.device.id, "role": "node"}).payload
        self.assertNotEqual(rotated["token"], params["auth"]["deviceToken"])
        self.assertEqual(nodeSink.closed, (4001, "device removed"))
        self.assertTrue(self.connect(
            connectParams(role="node", clientId="node-host", mode="node",
                          deviceToken=rotated["token"]), device=self.device)[2].ok)

    def test_withdrawnElsewhereCloses(self) -> None:
        """A token revoked at another gateway of the cluster closes the device's
        session here, as a revoke here would; other devices and roles stay."""
        admin, adminSink, nodeSink, _ = self.adminAndNode("operator.admin")
        self.service.closeWithdrawn({(self.device.id, "operator")})
        self.assertIsNone(nodeSink.closed)
        self.service.closeWithdrawn({("someone-else", None)})
        self.assertIsNone(nodeSink.closed)
        self.service.closeWithdrawn({(self.device.id, "node")})
        self.assertEqual(nodeSink.closed, (4001, "device removed"))
        self.assertIsNone(adminSink.closed)

    def test_rotateOtherDeviceNeedsAdmin(self) -> None:
        self.pairLocally()
        other = Device()
        params = connectParams(scopes=["operator.pairing"], token=TOKEN)
        pairer, sink, _ = self.connect(params, remote=LOCAL, device=other)
        unknown = self.call(pairer, sink, "device.token.rotate",
                            {"deviceId": "nope", "role": "node"}).error
        denied = self.call(pairer, sink, "device.token.rotate",
                           {"deviceId": self.device.id, "role": "node"}).error
        self.assertEqual(unknown, denied)
        own = self.call(pairer, sink, "device.token.rotate",
                        {"deviceId": other.id, "role": "operator",
                         "scopes": ["operator.admin"]}).error
        self.assertEqual(own, denied)
        self.assertTrue(self.call(pairer, sink, "device.token.rotate",
                                  {"deviceId": other.id, "role": "operator"}).ok)

    def test_removeDevice(self) -> None:
        admin, adminSink, nodeSink, _ = self.adminAndNode("operator.pairing")
        self.assertTrue(self.call(admin, adminSink, "device.pair.remove",
                                  {"deviceId": self.device.id}).ok)
        self.assertEqual(nodeSink.closed, (4001, "device removed"))
        self.assertEqual(self.store.devices, {})

    def test_localBackendSkipsPairing(self) -> None:
        params = connectParams(scopes=["operator.admin"], clientId="gateway-client",
                               mode="backend", token=TOKEN)
        _, _, response = self.connect(params, remote=LOCAL, device=self.device)
        self.assertTrue(response.ok)
        self.assertEqual(self.store.devices, {})


class MoreDeviceTests(Harness):
    def setUp(self) -> None:
        super().setUp()
        self.device = Device()

    def test_pairedAdminMayAskLess(self) -> None:
        params = connectParams(scopes=["operator.admin", "operator.read"], token=TOKEN)
        self.assertTrue(self.connect(params, remote=LOCAL, device=self.device)[2].ok)
        _, _, response = self.connect(connectParams(scopes=["operator.read"], token=TOKEN),
                                      device=self.device)
        self.assertEqual(response.payload["auth"]["scopes"], ["operator.read"])

    def test_changedMetadataNeedsRepairing(self) -> None:
        params = connectParams(scopes=["operator.read"], token=TOKEN)
        self.assertTrue(self.connect(params, remote=LOCAL, device=self.device)[2].ok)
        params["client"]["platform"] = "ios"
        _, sink, response = self.connect(params, device=self.device)
        error = self.assertRejected(response, sink, "PAIRING_REQUIRED")
        self.assertEqual(error["details"]["reason"], "metadata-upgrade")

    def test_deviceTokenLockoutSeparateFromShared(self) -> None:
        params = connectParams(role="node", clientId="node-host", mode="node", token=TOKEN)
        self.assertTrue(self.connect(params, remote=LOCAL, device=self.device)[2].ok)
        wrong = connectParams(role="node", clientId="node-host", mode="node",
                              deviceToken="wrong")
        for _ in range(10):
            self.connect(wrong, device=self.device)
        _, sink, response = self.connect(wrong, device=self.device)
        self.assertRejected(response, sink, "AUTH_RATE_LIMITED")
        self.assertTrue(self.connect(params, device=self.device)[2].ok)

    def test_unresolvedClientsShareOneBudget(self) -> None:
        self.service = self.makeService(auth=AuthConfig(
            "token", token=TOKEN, trustedProxies=(ipaddress.ip_network("10.0.0.0/8"),)))
        for i in range(32):
            session, _ = self.open(f"10.0.0.{i + 1}")
            self.assertIsNone(session.info.clientIp)
        self.assertFalse(self.service.canOpen(None))
        self.assertTrue(self.service.canOpen("198.51.100.1"))


class NodeTests(Harness):
    def setUp(self) -> None:
        super().setUp()
        self.device = Device()
        params = connectParams(role="node", clientId="node-host", mode="node", token=TOKEN)
        params["commands"] = ["system.which", "kvm.snapshot"]
        params["caps"] = ["system"]
        self.node, self.nodeSink, hello = self.connect(params, remote=LOCAL, device=self.device)
        self.assertTrue(hello.ok, hello)
        self.op, self.opSink, _ = self.connect(
            connectParams(scopes=["operator.write"], clientId="cli", mode="cli", token=TOKEN),
            remote=LOCAL)

    def invoke(self, **params: Any) -> str:
        self.counter += 1
        rid = f"inv{self.counter}"
        body = {"nodeId": self.device.id, "command": "system.which",
                "params": {"name": "ls"}, "idempotencyKey": "k1"}
        body.update(params)
        self.op.frameReceived(request(rid, "node.invoke", body))
        return rid

    def test_listAndDescribe(self) -> None:
        reader, sink, _ = self.connect(
            connectParams(scopes=["operator.read"], clientId="cli", mode="cli", token=TOKEN),
            remote=LOCAL)
        nodes = self.call(reader, sink, "node.list").payload["nodes"]
        self.assertEqual([n["nodeId"] for n in nodes], [self.device.id])
        self.assertEqual(nodes[0]["commands"], ["system.which", "kvm.snapshot"])
        self.assertTrue(self.call(reader, sink, "node.describe",
                                  {"nodeId": self.device.id}).payload["connected"])
        self.assertFalse(self.call(reader, sink, "node.describe", {"nodeId": "x"}).ok)

    def test_invokeFlow(self) -> None:
        rid = self.invoke()
        [req] = self.nodeSink.events("node.invoke.request")
        self.assertIsNone(req.seq)
        self.assertEqual(req.payload["paramsJSON"], '{"name": "ls"}')
        self.assertEqual(req.payload["command"], "system.which")
        result = self.call(self.node, self.nodeSink, "node.invoke.result", {
            "id": req.payload["id"], "nodeId": self.device.id, "ok": True,
            "payloadJSON": '{"path": "/bin/ls"}'})
        self.assertEqual(result.payload, {"ok": True})
        answer = self.opSink.response(rid)
        self.assertEqual(answer.payload["payload"], {"path": "/bin/ls"})
        self.assertEqual(answer.payload["nodeId"], self.device.id)
        late = self.call(self.node, self.nodeSink, "node.invoke.result", {
            "id": req.payload["id"], "nodeId": self.device.id, "ok": True})
        self.assertEqual(late.payload, {"ok": True, "ignored": True})

    def test_invokeError(self) -> None:
        rid = self.invoke()
        [req] = self.nodeSink.events("node.invoke.request")
        self.call(self.node, self.nodeSink, "node.invoke.result", {
            "id": req.payload["id"], "nodeId": self.device.id, "ok": False,
            "error": {"code": "NOT_FOUND", "message": "no such binary"}})
        self.assertEqual(self.opSink.response(rid).error["message"], "no such binary")

    def test_nodeIdMismatch(self) -> None:
        self.invoke()
        [req] = self.nodeSink.events("node.invoke.request")
        result = self.call(self.node, self.nodeSink, "node.invoke.result", {
            "id": req.payload["id"], "nodeId": "someone-else", "ok": True})
        self.assertEqual(result.error["message"], "nodeId mismatch")

    def test_invokeTimeout(self) -> None:
        rid = self.invoke(timeoutMs=5000)
        self.clock.advance(4.9)
        self.assertFalse([f for f in self.opSink.frames if getattr(f, "id", None) == rid])
        self.clock.advance(0.1)
        self.assertEqual(self.opSink.response(rid).error["code"], "TIMEOUT")

    def test_invokeDisconnect(self) -> None:
        rid = self.invoke()
        self.hangUp(self.node)
        self.assertEqual(self.opSink.response(rid).error["message"],
                         "node disconnected (system.which)")
        self.assertNotIn(self.device.id, self.service.nodes.connected)

    def test_operatorDisconnectCancelsTimers(self) -> None:
        self.invoke()
        self.hangUp(self.op)
        self.assertEqual(self.service.nodes.invokes, {})
        self.assertEqual(self.clock.getDelayedCalls().__len__(),
                         len([c for c in self.clock.getDelayedCalls() if c.active()]))

    def test_notConnectedAndNotAllowed(self) -> None:
        rid = self.invoke(nodeId="ghost")
        self.assertEqual(self.opSink.response(rid).error["details"], {"code": "NOT_CONNECTED"})
        rid = self.invoke(command="system.run")
        self.assertEqual(self.opSink.response(rid).error["details"],
                         {"code": "COMMAND_NOT_ALLOWED"})
        rid = self.invoke(idempotencyKey=None)
        self.assertEqual(self.opSink.response(rid).error["message"], "idempotencyKey is required")

    def test_invokeNeedsWrite(self) -> None:
        reader, sink, _ = self.connect(
            connectParams(scopes=["operator.read"], clientId="cli", mode="cli", token=TOKEN),
            remote=LOCAL)
        self.assertEqual(self.call(reader, sink, "node.invoke", {}).error["details"]
                         ["missingScope"], "operator.write")

    def test_nodeRoleGates(self) -> None:
        self.assertEqual(self.call(self.node, self.nodeSink, "status").error["message"],
                         "unauthorized role: node")
        self.assertEqual(self.call(self.op, self.opSink, "node.event", {"event": "x"})
                         .error["message"], "unauthorized role: operator")
        for _ in range(9):
            self.node.frameReceived(request("x", "status"))
        self.assertIsNone(self.nodeSink.closed)
        self.node.frameReceived(request("x", "status"))
        self.assertEqual(self.nodeSink.closed, (1008, "repeated unauthorized calls"))

    def test_unknownMethodNeedsAdmin(self) -> None:
        self.assertEqual(self.call(self.op, self.opSink, "bogus.method").error["details"]
                         ["missingScope"], "operator.admin")
        admin, sink, _ = self.connect(
            connectParams(scopes=["operator.admin"], clientId="cli", mode="cli", token=TOKEN),
            remote=LOCAL)
        self.assertEqual(self.call(admin, sink, "bogus.method").error["message"],
                         "unknown method: bogus.method")

    def test_nodeEvent(self) -> None:
        reader, sink, _ = self.connect(
            connectParams(scopes=["operator.read"], clientId="cli", mode="cli", token=TOKEN),
            remote=LOCAL)
        self.assertTrue(self.call(self.node, self.nodeSink, "node.event",
                                  {"event": "kvm.status", "payloadJSON": '{"on": true}'}).ok)
        [event] = sink.events("node.event")
        self.assertEqual(event.payload, {"nodeId": self.device.id, "event": "kvm.status",
                                         "payload": {"on": True}})
        self.assertEqual(self.nodeSink.events("node.event"), [])

    def test_badFrameAfterConnect(self) -> None:
        self.op.badFrame(FrameError("nope", frameId="z"))
        self.assertEqual(self.opSink.response("z").error["message"],
                         "invalid request frame: nope")
        self.op.frameReceived(Response("q", True))
        self.assertEqual(self.opSink.response("q").error["code"], "INVALID_REQUEST")
        self.assertIsNone(self.opSink.closed)


class BroadcastTests(Harness):
    def test_tickAtInterval(self) -> None:
        _, sink, _ = self.connect(connectParams(token=TOKEN))
        self.clock.advance(29.9)
        self.assertEqual(sink.events("tick"), [])
        self.clock.advance(0.1)
        self.clock.advance(30)
        ticks = sink.events("tick")
        self.assertEqual(len(ticks), 2)
        self.assertEqual(ticks[1].seq, ticks[0].seq + 1)
        self.assertEqual(ticks[0].payload["ts"], 1_700_000_030_000)

    def test_presence(self) -> None:
        watcher, sink, _ = self.connect(connectParams(token=TOKEN))
        other, _, hello = self.connect(connectParams(token=TOKEN), remote="198.51.100.2")
        self.assertEqual(len(hello.payload["snapshot"]["presence"]), 2)
        self.hangUp(other)
        third, _, _ = self.connect(connectParams(token=TOKEN), remote="198.51.100.3")
        self.hangUp(third)
        self.clock.advance(0.9)
        self.assertEqual(sink.events("presence"), [])
        self.clock.advance(0.1)
        [event] = sink.events("presence")
        self.assertEqual(len(event.payload["presence"]), 1)
        self.assertEqual(event.stateVersion["presence"], 5)

    def test_shutdown(self) -> None:
        _, sink, _ = self.connect(connectParams(token=TOKEN))
        _, preSink = self.open()
        self.service.stopService()
        self.assertEqual(sink.events("shutdown")[0].payload, {"reason": "gateway stopping"})
        self.assertEqual(sink.closed, (1012, "service restart"))
        self.assertEqual(preSink.closed, (1012, "service restart"))
        self.assertTrue(self.store.closed)

    def test_preauthBudgetReleased(self) -> None:
        sessions = [self.open()[0] for _ in range(32)]
        self.assertFalse(self.service.canOpen(REMOTE))
        self.assertTrue(self.service.canOpen("198.51.100.9"))
        self.hangUp(sessions[0])
        self.assertTrue(self.service.canOpen(REMOTE))
        sessions[1].frameReceived(request("c", "connect", connectParams(token=TOKEN)))
        self.assertEqual(self.service.preauth.count(REMOTE), 30)


class Sibling(Service):
    """A sibling service with counters and a paged list of rows."""

    def __init__(self, rows: int = 3) -> None:
        self.stats = Stats()
        self.stats.add("allocations", 3)
        self.rows = [{"id": i} for i in range(rows)]

    def page(self, offset: int, limit: int) -> list:
        return self.rows[offset:offset + limit]


class SiblingTests(Harness):
    """Other services' lists through the gateway (handed in by the wiring)."""

    def setUp(self) -> None:
        super().setUp()
        self.root = MultiService()
        self.service.setName("gateway")
        self.service.setServiceParent(self.root)
        self.turn = Sibling()
        self.turn.setName("turn")
        self.turn.setServiceParent(self.root)
        self.service.provideListing("turn.allocations.list",
                                    OperatorListing(self.turn, self.turn.page))
        self.session, self.sink, _ = self.connect(
            connectParams(scopes=["operator.admin"], clientId="cli", mode="cli", token=TOKEN),
            remote=LOCAL)

    def test_absent(self) -> None:
        """The owner is not running: UNAVAILABLE, naming it."""
        self.turn.stopService()
        error = self.call(self.session, self.sink, "turn.allocations.list").error
        self.assertEqual(error["code"], "UNAVAILABLE")
        self.assertEqual(error["details"], {"code": "SERVICE_NOT_RUNNING", "service": "turn"})

    def test_present(self) -> None:
        self.turn.startService()
        self.assertEqual(self.call(self.session, self.sink, "turn.allocations.list").payload,
                         {"items": [{"id": 0}, {"id": 1}, {"id": 2}], "offset": 0,
                          "limit": 100, "nextOffset": None})
        page = self.call(self.session, self.sink, "turn.allocations.list",
                         {"offset": 1, "limit": 1}).payload
        self.assertEqual((page["items"], page["nextOffset"]), ([{"id": 1}], 2))
        self.assertEqual(self.call(self.session, self.sink, "turn.allocations.list",
                                   {"limit": 0}).error["code"], "INVALID_REQUEST")
        # What the wiring did not hand in is not served.
        self.assertEqual(self.call(self.session, self.sink, "turn.users.add",
                                   {"name": "a"}).error["message"],
                         "unknown method: turn.users.add")
        status = self.call(self.session, self.sink, "status").payload
        self.assertEqual(status["services"]["turn"], {"running": True,
                                                      "stats": {"allocations": 3}})
        self.assertIn("connections", status["services"]["gateway"]["stats"])
        health = self.call(self.session, self.sink, "health").payload
        self.assertEqual(health["services"], {"gateway": True, "turn": True})

    def test_advertisedOnlyWhenOffered(self) -> None:
        """Issue 14 item 5: hello-ok lists another service's method only when the wiring
        provided it."""
        params = connectParams(scopes=["operator.admin"], clientId="cli", mode="cli",
                               token=TOKEN)
        methods = self.connect(params, remote=LOCAL)[2].payload["features"]["methods"]
        self.assertIn("turn.allocations.list", methods)
        self.assertIn("device.pair.list", methods)
        for method in ("turn.users.add", "turn.users.list", "relay.pairs.list",
                       "rendezvous.peers.list"):
            self.assertNotIn(method, methods)


class DecodeIntegrationTests(SynchronousTestCase):
    def test_encodedHelloDecodes(self) -> None:
        self.assertEqual(decodeFrame('{"type":"res","id":"1","ok":true}').ok, True)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(
        ["nodeId", "command", "idempotencyKey", "requestId", "deviceId", "role", "scopes",
         "id", "ok", "timeoutMs", "event", "payloadJSON", "params", "client", "auth",
         "minProtocol", "maxProtocol", "device"]), inner, max_size=6),
    max_leaves=12,
)
_methods = st.sampled_from(
    ["connect", "health", "status", "node.invoke", "node.invoke.result", "node.event",
     "node.list", "node.describe", "device.pair.approve", "device.pair.reject",
     "device.pair.remove", "device.token.rotate", "device.token.revoke", "device.pair.list",
     "turn.users.add", "relay.pairs.list", "x.unknown"])


class RandomInputTests(Harness):
    """Whatever a peer sends, the service answers or closes; nothing escapes."""

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.tuples(_methods, _json), max_size=6), st.booleans())
    def test_randomRequests(self, requests: list, asNode: bool) -> None:
        device = Device()
        if asNode:
            params = connectParams(role="node", clientId="node-host", mode="node", token=TOKEN)
        else:
            params = connectParams(scopes=["operator.admin"], clientId="cli", mode="cli",
                                   token=TOKEN)
        session, sink, hello = self.connect(params, remote=LOCAL,
                                            device=device if asNode else None)
        self.assertTrue(hello.ok)
        raw, rawSink = self.open()
        for i, (method, body) in enumerate(requests):
            session.frameReceived(request(f"q{i}", method, body))
            raw.frameReceived(request(f"q{i}", method, body))
        self.clock.advance(60)
        self.assertIsNotNone(rawSink.closed)
        self.hangUp(session)
        self.hangUp(raw)
        self.assertEqual(self.service.nodes.invokes, {})
