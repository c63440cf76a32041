# -*- test-case-name: test.unit.test_gateway_service,test.unit.test_gateway_preauth -*-
"""The control gateway's handshake: one session per WebSocket, and the connect checks.

A L{GatewaySession} sends the challenge, runs the handshake timer and accepts only
C{connect} until hello-ok (gateway.md §1.5); then it hands requests to its owner. The
L{Handshake} runs the checks of a C{connect} in the order of gateway.md §1.7 — schema,
protocol range, role, origin, shared secret, the missing-device table, device proof,
device token, pairing — and ends in the owner's C{admit} (hello-ok) or a L{Reject}.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pnet.codecs.device_auth import DeviceProofError, verifyDeviceProof
from p2pnet.codecs.gateway_frames import (
    MAX_PROTOCOL,
    Cancel,
    CloseCode,
    ConnectParams,
    ErrorCode,
    Event,
    Frame,
    FrameError,
    Request,
    Response,
    errorShape,
    negotiateProtocol,
    parseConnectParams,
)
from p2pnet.protocols.gateway_server import ConnectionInfo, GatewayConnection
from p2pnet.services.gateway_pairing import DevicePairing
from p2pnet.services.gateway_policy import (
    AuthConfig,
    AuthResult,
    RateLimiter,
    Scope,
    authorizeShared,
    browserLimiterKey,
    checkOrigin,
    detailCode,
    isBrowserClient,
    missingDeviceDecision,
    nextStep,
    unauthorizedMessage,
)
from p2pnet.stats import Stats
from p2pnet.store.gateway import DeviceToken, GatewayStoreInterface, PairedDevice

__all__ = ["Connect", "GatewaySession", "Handshake", "HandshakeHost", "Reject", "SessionOwner"]


class Reject(Exception):
    """A handshake failure: maybe a response error, then a close."""

    def __init__(
        self,
        closeCode: int,
        closeReason: str,
        error: dict[str, Any] | None = None,
        failure: str = "",
    ) -> None:
        super().__init__(closeReason)
        self.closeCode = closeCode
        self.closeReason = closeReason
        self.error = error
        self.failure = failure


def _invalid(message: str, details: dict[str, Any] | None = None, failure: str = "") -> Reject:
    return Reject(
        CloseCode.POLICY, message, errorShape(ErrorCode.INVALID_REQUEST, message, details),
        failure or message,
    )


class SessionOwner(Protocol):
    """What a session needs of the gateway (L{p2pnet.services.gateway.GatewayService})."""

    clock: IReactorTime
    stats: Stats
    handshakeTimeout: float

    def handshake(self, session: GatewaySession, request: Request) -> None:
        """Run a C{connect}; raise L{Reject} when it fails."""

    def handshakeFailed(self, session: GatewaySession, reject: Reject) -> None:
        """Count and log a refused handshake."""

    def dispatch(self, session: GatewaySession, request: Request) -> None:
        """Authorise and run one request of a connected client."""

    def sessionClosed(self, session: GatewaySession) -> None:
        """Forget a closed session."""


@dataclass(eq=False)
class GatewaySession:
    """One WebSocket's state: handshake, then an authenticated client.

    @ivar role: C{operator} or C{node} once connected.
    @ivar scopes: the scopes this session holds.
    @ivar deviceId: the verified device, if one was presented.
    @ivar commands: a node's commands operators may invoke (those node pairing
        approved, gateway.md §2.6).
    """

    service: SessionOwner
    sink: GatewayConnection
    info: ConnectionInfo
    connId: str
    nonce: str
    openedAt: float
    authenticated: bool = False
    closed: bool = False
    gone: bool = False
    busy: bool = False
    role: str = ""
    scopes: tuple[str, ...] = ()
    deviceId: str | None = None
    params: ConnectParams | None = None
    presenceKey: str | None = None
    commands: tuple[str, ...] = ()
    timer: IDelayedCall | None = None
    denials: int = 0

    # -- wire events -------------------------------------------------------------------

    def opened(self) -> None:
        """The WebSocket is up: send the challenge and start the handshake timer."""
        clock = self.service.clock
        self.sink.sendFrame(
            Event(
                "connect.challenge",
                {"nonce": self.nonce, "ts": int(clock.seconds() * 1000)},
            )
        )
        self.timer = clock.callLater(self.service.handshakeTimeout, self._handshakeTimeout)

    def _handshakeTimeout(self) -> None:
        self.timer = None
        if not self.authenticated and not self.closed:
            self.service.stats.add("handshake_timeouts")
            self.close(CloseCode.NORMAL, "")

    def badFrame(self, error: FrameError) -> None:
        """The peer sent text that is not a frame."""
        if not self.authenticated:
            if error.badJson:
                self.close(CloseCode.NORMAL, "")
            else:
                self.close(CloseCode.POLICY, "invalid request frame")
            return
        self.respond(
            error.frameId or "invalid",
            error=errorShape(ErrorCode.INVALID_REQUEST, f"invalid request frame: {error}"),
        )

    def frameReceived(self, frame: Frame) -> None:
        """One decoded frame from the peer."""
        if self.closed:
            return
        if not self.authenticated:
            self._preauthFrame(frame)
        elif isinstance(frame, Request):
            self.service.dispatch(self, frame)
        elif not isinstance(frame, Cancel):
            # Clients send requests, and cancels (which this gateway ignores).
            self.respond(
                frame.id if isinstance(frame, Response) else "invalid",
                error=errorShape(
                    ErrorCode.INVALID_REQUEST, "invalid request frame: expected a req"
                ),
            )

    def connectionLost(self) -> None:
        """The socket is gone."""
        if self.gone:
            return
        self.gone = self.closed = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.service.sessionClosed(self)

    def close(self, code: int, reason: str = "") -> None:
        """Close the WebSocket (the session ends when the socket is lost)."""
        if not self.closed:
            self.closed = True
            self.sink.close(code, reason)

    def send(self, frame: Frame, dropIfSlow: bool = False, text: str | None = None) -> None:
        """Send a frame unless the session is closing (C{text}: already encoded)."""
        if not self.closed:
            self.sink.sendFrame(frame, dropIfSlow, text)

    def respond(self, requestId: str, payload: Any = None, error: dict | None = None) -> None:
        """Answer request C{requestId}."""
        self.send(Response(requestId, error is None, payload, error))

    # -- handshake ---------------------------------------------------------------------

    def _preauthFrame(self, frame: Frame) -> None:
        if self.busy:
            # One connect at a time; anything while it completes is a protocol error.
            self.close(CloseCode.POLICY, "invalid handshake: connect already in progress")
            return
        if not isinstance(frame, Request):
            self.close(CloseCode.POLICY, "invalid request frame")
            return
        if frame.method != "connect":
            message = "invalid handshake: first request must be connect"
            self.reject(frame.id, _invalid(message))
            return
        try:
            self.service.handshake(self, frame)
        except Reject as reject:
            self.reject(frame.id, reject)

    def reject(self, requestId: str, reject: Reject) -> None:
        """Refuse the handshake: count it, answer the C{connect}, close."""
        self.service.handshakeFailed(self, reject)
        if reject.error is not None:
            self.respond(requestId, error=reject.error)
        self.close(reject.closeCode, reject.closeReason)


@dataclass
class Connect:
    """A C{connect} request through the checks so far, and how it authenticated.

    @ivar method: the auth method reported in hello-ok (C{device-token} once step 8
        accepted one).
    """

    session: GatewaySession
    requestId: str
    params: ConnectParams
    protocol: int
    role: str
    scopes: tuple[str, ...]
    shared: AuthResult
    method: str


class HandshakeHost(Protocol):
    """What the connect checks read from the gateway (read at each connect, so a
    changed setting applies to the next one)."""

    auth: AuthConfig
    allowedOrigins: tuple[str, ...]
    limiter: RateLimiter
    browserLimiter: RateLimiter
    store: GatewayStoreInterface
    pairing: DevicePairing

    def nowMs(self) -> int:
        """The clock in epoch milliseconds."""

    def admit(
        self, connect: Connect, deviceId: str | None, token: DeviceToken | None = None
    ) -> None:
        """Register the session and send hello-ok."""


class Handshake:
    """The checks of a C{connect}, in the order of gateway.md §1.7."""

    log = Logger()

    def __init__(self, host: HandshakeHost) -> None:
        self.host = host

    def run(self, session: GatewaySession, request: Request) -> None:
        """Check C{request}; admit the session or raise L{Reject}."""
        host = self.host
        # 1. Schema.
        try:
            params = parseConnectParams(request.params)
        except FrameError as e:
            raise _invalid(f"invalid connect params: {e}", failure="invalid-params") from None
        # 2. Protocol range.
        protocol = negotiateProtocol(params.minProtocol, params.maxProtocol)
        if protocol is None:
            raise Reject(
                CloseCode.PROTOCOL_MISMATCH,
                "protocol mismatch",
                errorShape(
                    ErrorCode.INVALID_REQUEST,
                    "protocol mismatch",
                    {
                        "code": "PROTOCOL_MISMATCH",
                        "expectedProtocol": MAX_PROTOCOL,
                        "clientMinProtocol": params.minProtocol,
                        "clientMaxProtocol": params.maxProtocol,
                    },
                ),
                "protocol-mismatch",
            )
        # 3. Role; scopes default to none.
        role = "operator" if params.role is None else params.role
        if role not in ("operator", "node"):
            raise _invalid("invalid role")
        scopes = tuple(params.scopes or ())
        info = session.info
        # 4. Origin, for browsers and anything that sent one (gateway.md §4.1).
        if info.origin is not None or isBrowserClient(params.client.id, params.client.mode):
            origin = checkOrigin(info.origin, host.allowedOrigins, info.localDirect)
            if not origin.ok:
                raise _invalid(
                    "origin not allowed (connect from the gateway host or allow the origin "
                    "with --allowed-origin)",
                    {"code": "CONTROL_UI_ORIGIN_NOT_ALLOWED", "reason": origin.reason},
                    failure="origin-not-allowed",
                )
        # 5. Shared secret (gateway.md §3.2).
        limiter, rateIp = self._limiterFor(info)
        shared = authorizeShared(
            host.auth, params.auth, info.remote, info.headers, limiter, rateIp, info.localDirect
        )
        connect = Connect(
            session, request.id, params, protocol, role, scopes, shared, shared.method or ""
        )
        device = params.device
        if device is None:
            self._withoutDevice(connect)
            return
        # 7. Device proof (gateway.md §2.4).
        signatureToken = (
            params.auth.get("token")
            or params.auth.get("deviceToken")
            or params.auth.get("bootstrapToken")
        )
        try:
            _, publicKey = verifyDeviceProof(
                deviceId=device.id,
                publicKey=device.publicKey,
                signature=device.signature,
                signedAt=device.signedAt,
                nonce=device.nonce,
                challengeNonce=session.nonce,
                nowMs=host.nowMs(),
                clientId=params.client.id,
                clientMode=params.client.mode,
                role=role,
                scopes=scopes,
                token=signatureToken,
                platform=params.client.platform,
                deviceFamily=params.client.deviceFamily,
            )
        except DeviceProofError as e:
            raise _invalid(e.message, {"code": e.code, "reason": e.reason}, e.reason) from None
        # 8. Device-token auth when the shared secret did not authorise (gateway.md §2.5).
        if not shared.ok:
            self._deviceTokenAuth(connect, device.id)
        # 9. Pairing (may complete later, after an approval is written; gateway.md §2.6).
        self._pairing(connect, device.id, publicKey)

    def _withoutDevice(self, connect: Connect) -> None:
        """6. The missing-device decision table (gateway.md §3.4 and §9)."""
        params, shared = connect.params, connect.shared
        decision = missingDeviceDecision(
            clientId=params.client.id,
            clientMode=params.client.mode,
            role=connect.role,
            shared=shared,
            sharedSent=bool(params.auth.get("token") or params.auth.get("password")),
            localDirect=connect.session.info.localDirect,
        )
        if decision.kind == "unauthorized":
            raise self._unauthorized(shared.reason, shared, params)
        if decision.kind == "control-ui":
            message = "control ui requires device identity (use HTTPS or localhost)"
            raise Reject(
                CloseCode.POLICY,
                message,
                errorShape(
                    ErrorCode.INVALID_REQUEST,
                    message,
                    {"code": "CONTROL_UI_DEVICE_IDENTITY_REQUIRED"},
                ),
                "control-ui-device-required",
            )
        if decision.kind == "device-required":
            raise Reject(
                CloseCode.POLICY,
                "device identity required",
                errorShape(
                    ErrorCode.NOT_PAIRED,
                    "device identity required",
                    {"code": "DEVICE_IDENTITY_REQUIRED"},
                ),
                "device-identity-required",
            )
        if not decision.keepScopes:
            connect.scopes = ()
        self.host.admit(connect, None)

    def _limiterFor(self, info: ConnectionInfo) -> tuple[RateLimiter, str | None]:
        """The limiter and key for a connection: browsers (an Origin) have their own."""
        if info.origin is not None:
            return self.host.browserLimiter, browserLimiterKey(info.clientIp, info.origin)
        return self.host.limiter, info.clientIp

    def _unauthorized(
        self, reason: str | None, shared: AuthResult, params: ConnectParams
    ) -> Reject:
        details: dict[str, Any] = {
            "code": detailCode(reason),
            "authReason": reason,
            "canRetryWithDeviceToken": reason == "token_mismatch"
            and params.device is not None
            and not params.auth.get("deviceToken"),
            "recommendedNextStep": nextStep(
                reason, params.device is not None, bool(params.auth.get("deviceToken"))
            ),
        }
        message = unauthorizedMessage(reason)
        error = errorShape(ErrorCode.INVALID_REQUEST, message, details)
        if reason == "rate_limited":
            error["retryable"] = True
            error["retryAfterMs"] = shared.retryAfterMs
        return Reject(CloseCode.POLICY, message, error, reason or "auth-required")

    def _deviceTokenAuth(self, connect: Connect, deviceId: str) -> None:
        params = connect.params
        explicit = params.auth.get("deviceToken")
        candidate = explicit or params.auth.get("token")
        shared = connect.shared
        if candidate:
            limiter, rateIp = self._limiterFor(connect.session.info)
            if not limiter.check(rateIp, Scope.DEVICE_TOKEN).allowed:
                failure: str | None = "rate_limited"
            else:
                failure = self.host.pairing.verifyToken(
                    deviceId, connect.role, connect.scopes, candidate
                )
                if failure is None:
                    limiter.reset(rateIp, Scope.DEVICE_TOKEN)
                    connect.method = "device-token"
                    return
                limiter.recordFailure(rateIp, Scope.DEVICE_TOKEN)
            if explicit:
                reason = "rate_limited" if failure == "rate_limited" else "device_token_mismatch"
                raise self._unauthorized(
                    reason, replace(
                        shared,
                        retryAfterMs=limiter.check(rateIp, Scope.DEVICE_TOKEN).retryAfterMs,
                    ),
                    params,
                )
        raise self._unauthorized(shared.reason, shared, params)

    def _pairing(self, connect: Connect, deviceId: str, publicKey: str) -> None:
        session, params, role, scopes = connect.session, connect.params, connect.role, connect.scopes
        info = session.info
        client = params.client
        if client.id == "gateway-client" and client.mode == "backend" and info.localDirect:
            # A local backend with a shared secret or device token needs no pairing.
            self.host.admit(connect, deviceId)
            return
        paired = self.host.store.devices.get(deviceId)
        reason = pairingNeed(paired, publicKey, client.platform, client.deviceFamily, role,
                             scopes)
        if reason is None:
            assert paired is not None
            self._issueToken(connect, paired)
            return
        pairing = self.host.pairing.request(
            deviceId, publicKey, role, scopes, client, reason, info.clientIp
        )
        silent = (
            info.localDirect
            and (info.origin is None or isBrowserClient(client.id, client.mode))
            and reason in ("not-paired", "role-upgrade")
        )
        if not silent:
            message = "pairing required: device is not approved yet"
            raise Reject(
                CloseCode.POLICY,
                f"pairing required (requestId {pairing.requestId})",
                errorShape(
                    ErrorCode.NOT_PAIRED,
                    message,
                    {"code": "PAIRING_REQUIRED", "requestId": pairing.requestId,
                     "reason": reason},
                ),
                "pairing-required",
            )
        session.busy = True
        approved = self.host.pairing.approve(pairing.requestId, silent=True)

        def continueAfterApproval(device: PairedDevice) -> None:
            session.busy = False
            if session.closed:
                return
            try:
                self._issueToken(connect, device)
            except Reject as reject:
                session.reject(connect.requestId, reject)

        approved.addCallback(continueAfterApproval)
        approved.addErrback(self._storeFailed, session)

    def _storeFailed(self, failure: Failure, session: GatewaySession) -> None:
        session.busy = False
        self.log.failure("Gateway store write failed", failure)
        session.close(CloseCode.SERVICE_RESTART, "gateway storage error")

    def _issueToken(self, connect: Connect, paired: PairedDevice) -> None:
        session = connect.session
        token, written = self.host.pairing.tokenFor(paired.deviceId, connect.role,
                                                    connect.scopes)
        if written is None:
            self.host.admit(connect, paired.deviceId, token)
            return
        session.busy = True

        def admit(_: None) -> None:
            session.busy = False
            if not session.closed:
                self.host.admit(connect, paired.deviceId, token)

        written.addCallback(admit)
        written.addErrback(self._storeFailed, session)


def pairingNeed(
    paired: PairedDevice | None,
    publicKey: str,
    platform: str | None,
    deviceFamily: str | None,
    role: str,
    scopes: tuple[str, ...],
) -> str | None:
    """Why a device must (re-)pair (gateway.md §2.6), or C{None} when it is paired for
    this role, these scopes and this metadata."""
    if paired is None or paired.publicKey != publicKey:
        return "not-paired"
    if (paired.platform, paired.deviceFamily) != (
        (platform or "").strip(), (deviceFamily or "").strip()
    ):
        return "metadata-upgrade"
    if role not in paired.roles:
        return "role-upgrade"
    if not set(scopes) <= set(paired.scopes):
        return "scope-upgrade"
    return None

