# -*- test-case-name: test.test_gateway_service -*-
"""The control gateway: handshake, sessions, pairing and methods.

One L{GatewaySession} per WebSocket runs the handshake of the spec (challenge, connect
checks in order, hello-ok) and then dispatches requests. L{GatewayService} owns what
the sessions share: the rate limiters, the pre-auth budget, paired devices and tokens
(through L{GatewayStore}), pending pairing requests, the node registry and pending
invokes (a L{p2pnet.services.gateway_nodes.NodeRegistry}), presence, and the tick
timer. The wire (HTTP, WebSocket, JSON text) is
L{p2pnet.protocols.gateway_server}'s business; sessions see decoded frames and write
frames to a L{FrameSink}.

Sibling services (found by name in the parent C{MultiService}) serve the gateway's
read methods through L{GatewayDataSource}: C{listing(kind)} and C{manage(kind, action,
params)}; C{status} and C{/metrics} read each sibling's C{stats}.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from twisted.application.service import IServiceCollection
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from p2pnet import __version__
from p2pnet.codecs.device_auth import DeviceProofError, b64urlEncode, verifyDeviceProof
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
    encodeFrame,
    errorShape,
    negotiateProtocol,
    parseConnectParams,
)
from p2pnet.ratelog import RateLimitedLog
from p2pnet.services.gateway_nodes import NodeRegistry
from p2pnet.services.gateway_policy import (
    ADMIN,
    PAIRING,
    READ,
    AuthConfig,
    AuthResult,
    PreauthBudget,
    RateLimiter,
    Scope,
    authorizeMethod,
    authorizeShared,
    browserLimiterKey,
    checkOrigin,
    detailCode,
    isBrowserClient,
    isLocalDirect,
    missingDeviceDecision,
    nextStep,
    resolveClientIp,
    secretEqual,
    unauthorizedMessage,
)
from p2pnet.services.listening import ListeningService
from p2pnet.stats import Stats
from p2pnet.store.gateway import DeviceToken, GatewayStore, PairedDevice

__all__ = [
    "ConnectionInfo",
    "FrameSink",
    "GatewayDataSource",
    "GatewayService",
    "GatewaySession",
    "MethodError",
]

#: Most bytes of one frame before hello-ok (1009 above it).
MAX_PREAUTH_PAYLOAD = 64 * 1024
#: Most bytes of one frame after hello-ok (advertised as C{policy.maxPayload}).
MAX_PAYLOAD = 25 * 1024 * 1024
#: Unsent bytes after which a client is a slow consumer (C{policy.maxBufferedBytes}).
MAX_BUFFERED_BYTES = 50 * 1024 * 1024
#: Seconds between C{tick} events (C{policy.tickIntervalMs} / 1000).
TICK_INTERVAL = 30.0
#: Default and largest C{node.invoke} timeout, seconds.
INVOKE_TIMEOUT = 30.0
MAX_INVOKE_TIMEOUT = 600.0
#: Lifetime of a pending pairing request, seconds, and how many may wait at once.
PAIRING_TTL = 300.0
MAX_PENDING_PAIRINGS = 256
#: Consecutive role denials after which a connection is closed.
MAX_UNAUTHORIZED_CALLS = 10
#: Seconds over which disconnects are gathered into one C{presence} broadcast (each
#: broadcast carries the whole list to every client, so churn must not multiply it).
PRESENCE_COALESCE = 1.0

#: Methods of this gateway, in C{hello-ok.features.methods}.
METHODS = (
    "health",
    "status",
    "node.list",
    "node.describe",
    "node.invoke",
    "node.invoke.result",
    "node.event",
    "device.pair.list",
    "device.pair.approve",
    "device.pair.reject",
    "device.pair.remove",
    "device.token.rotate",
    "device.token.revoke",
    "turn.allocations.list",
    "turn.users.list",
    "turn.users.add",
    "turn.users.remove",
    "rendezvous.peers.list",
    "relay.pairs.list",
)

#: Events this gateway sends, in C{hello-ok.features.events}.
EVENTS = (
    "connect.challenge",
    "presence",
    "tick",
    "shutdown",
    "node.invoke.request",
    "node.event",
    "device.pair.requested",
    "device.pair.resolved",
)

#: Sibling read methods: gateway method -> (service name, listing kind).
LISTINGS = {
    "turn.allocations.list": ("turn", "allocations"),
    "turn.users.list": ("turn", "users"),
    "rendezvous.peers.list": ("rendezvous", "peers"),
    "relay.pairs.list": ("relay", "pairs"),
}
#: Sibling write methods: gateway method -> (service name, kind, action).
MANAGERS = {
    "turn.users.add": ("turn", "users", "add"),
    "turn.users.remove": ("turn", "users", "remove"),
}


class GatewayDataSource(Protocol):
    """What a sibling service offers the gateway (all optional but C{stats}).

    C{listing("allocations")} on the C{turn} service answers C{turn.allocations.list};
    C{manage("users", "add", params)} answers C{turn.users.add}. Either may return a
    value or a Deferred; C{KeyError} means an unknown kind, C{ValueError} bad params.
    """

    stats: Stats

    def listing(self, kind: str) -> list[dict[str, Any]] | Deferred[list[dict[str, Any]]]:
        """The rows of C{kind}, JSON-ready."""

    def manage(self, kind: str, action: str, params: Mapping[str, Any]) -> Any:
        """Change C{kind} (e.g. add a TURN user); the result is JSON-ready."""


class FrameSink(Protocol):
    """The wire end of a session (a WebSocket)."""

    def sendFrame(self, frame: Frame, dropIfSlow: bool = False, text: str | None = None) -> None:
        """Send one frame (skipped when C{dropIfSlow} and the peer is not reading).

        C{text} is C{frame} already encoded (a broadcast encodes once for everyone).
        """

    def close(self, code: int, reason: str = "") -> None:
        """Close the WebSocket with C{code} and C{reason}."""


@dataclass(frozen=True)
class ConnectionInfo:
    """What the HTTP upgrade said about a connection.

    @ivar remote: the socket peer's address.
    @ivar headers: request headers, lowercase names (only the first of each).
    @ivar clientIp: the resolved client address (C{None}: unknown, fail closed).
    @ivar localDirect: a loopback socket with no forwarding header.
    """

    remote: str
    headers: Mapping[str, str]
    clientIp: str | None
    localDirect: bool = field(init=False)

    def __post_init__(self) -> None:
        # A loopback socket with no forwarding header; asked several times per connect.
        object.__setattr__(self, "localDirect", isLocalDirect(self.remote, self.headers))

    @property
    def origin(self) -> str | None:
        """The Origin header, if the client sent one."""
        return self.headers.get("origin")


class MethodError(Exception):
    """A method's error response: C{errorShape(*args)}."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.error = errorShape(code, message, details)


class _Reject(Exception):
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


def _invalid(message: str, details: dict[str, Any] | None = None, failure: str = "") -> _Reject:
    return _Reject(
        CloseCode.POLICY, message, errorShape(ErrorCode.INVALID_REQUEST, message, details),
        failure or message,
    )


@dataclass
class PairingRequest:
    """A device waiting for an operator's approval."""

    requestId: str
    deviceId: str
    publicKey: str
    role: str
    scopes: tuple[str, ...]
    platform: str
    deviceFamily: str
    clientId: str
    displayName: str
    reason: str
    remoteIp: str | None
    createdAtMs: int

    def describe(self) -> dict[str, Any]:
        """The JSON shape operators see."""
        return {
            "requestId": self.requestId,
            "deviceId": self.deviceId,
            "publicKey": self.publicKey,
            "role": self.role,
            "scopes": list(self.scopes),
            "platform": self.platform,
            "deviceFamily": self.deviceFamily,
            "clientId": self.clientId,
            "displayName": self.displayName,
            "reason": self.reason,
            "remoteIp": self.remoteIp,
            "createdAtMs": self.createdAtMs,
        }


@dataclass
class _Connect:
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


@dataclass(eq=False)
class GatewaySession:
    """One WebSocket's state: handshake, then an authenticated client.

    @ivar role: C{operator} or C{node} once connected.
    @ivar scopes: the scopes this session holds.
    @ivar deviceId: the verified device, if one was presented.
    """

    service: GatewayService
    sink: FrameSink
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
            self._reject(frame.id, _invalid(message))
            return
        try:
            self.service.handshake(self, frame)
        except _Reject as reject:
            self._reject(frame.id, reject)

    def _reject(self, requestId: str, reject: _Reject) -> None:
        self.service.handshakeFailed(self, reject)
        if reject.error is not None:
            self.respond(requestId, error=reject.error)
        self.close(reject.closeCode, reject.closeReason)


def _sessionsOf(
    sessions: Iterable[GatewaySession], deviceId: str, role: str | None
) -> list[GatewaySession]:
    return [
        s for s in sessions if s.deviceId == deviceId and (role is None or s.role == role)
    ]


class GatewayService(ListeningService):
    """The control gateway's state and policy; listeners come from C{listen}.

    @param listen: called with this service on start; returns the listening ports
        (see L{p2pnet.protocols.gateway_server.listenGateway}).
    """

    listeningName = "gateway"

    def __init__(
        self,
        *,
        clock: IReactorTime,
        store: GatewayStore,
        auth: AuthConfig,
        listen: Callable[[GatewayService], list[IListeningPort]] | None = None,
        allowedOrigins: tuple[str, ...] = (),
        handshakeTimeout: float = 10.0,
        tickInterval: float = TICK_INTERVAL,
        limitLoopback: bool = False,
        stateDir: str | None = None,
        newId: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        super().__init__()
        self.clock = clock
        self.store = store
        self.auth = auth
        self._listen = listen
        self.allowedOrigins = allowedOrigins
        self.handshakeTimeout = handshakeTimeout
        self.tickInterval = tickInterval
        self.stateDir = stateDir
        self.newId = newId
        self.limiter = RateLimiter(clock, exemptLoopback=not limitLoopback)
        self.browserLimiter = RateLimiter(clock, exemptLoopback=False)
        self.preauth = PreauthBudget()
        self.sessions: set[GatewaySession] = set()
        self.clients: dict[str, GatewaySession] = {}
        self.pairings: dict[str, PairingRequest] = {}
        self.presence: dict[str, dict[str, Any]] = {}
        self.seq = 0
        self.presenceVersion = 0
        self._presenceCall: IDelayedCall | None = None
        self.healthVersion = 0
        self.startedAt = clock.seconds()
        self.stats = Stats()
        self.nodes: NodeRegistry[GatewaySession] = NodeRegistry(clock, self.stats)
        self.stats.gauge("connections_open", lambda: len(self.sessions))
        self.stats.gauge("clients_connected", lambda: len(self.clients))
        self.stats.gauge("nodes_connected", lambda: len(self.nodes.connected))
        self.stats.gauge("pairings_pending", lambda: len(self.pairings))
        self.stats.gauge("devices_paired", lambda: len(self.store.devices))
        self.badInput = RateLimitedLog(self.log, clock)
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = clock
        self._maintenance = LoopingCall(self._maintain)
        self._maintenance.clock = clock
        self._methods = self._methodTable()

    @classmethod
    def fromConfig(cls, context: Any) -> GatewayService:
        """The service described by an L{p2pnet.app.AppContext}'s settings."""
        from p2pnet.protocols.gateway_server import listenGateway

        config = context.config
        store = GatewayStore(os.path.join(context.dataDir, "gateway.sqlite"))
        mode = config.gateway_auth or ("password" if config.gateway_password else "token")
        token = config.gateway_token
        if mode == "token" and not token:
            token = store.secret("gateway-token") or ""
            if not token:
                token = b64urlEncode(secrets.token_bytes(32))
                store.createSecret("gateway-token", token)
                cls.log.info(
                    "Generated a gateway token (stored in {path}); print it with "
                    "'p2pnet gateway token --data-dir {dataDir}'",
                    path=store.db.path,
                    dataDir=context.dataDir,
                )
        auth = AuthConfig(
            mode=mode,
            token=token if mode == "token" else "",
            password=config.gateway_password if mode == "password" else "",
            trustedProxies=tuple(ipaddress.ip_network(n) for n in config.trusted_proxy),
            userHeader=config.gateway_proxy_user_header,
            requiredHeaders=config.gateway_proxy_required_header,
            allowUsers=config.gateway_proxy_allow_user,
        )
        tls = context.tlsOptions if config.gateway_tls else None
        return cls(
            clock=context.reactor,
            store=store,
            auth=auth,
            listen=lambda service: listenGateway(
                context.reactor, service, config.listen, config.gateway_port, tls
            ),
            allowedOrigins=config.allowed_origin,
            handshakeTimeout=config.handshake_timeout,
            limitLoopback=config.gateway_limit_loopback,
            stateDir=context.dataDir,
        )

    # -- lifecycle ---------------------------------------------------------------------

    def listen(self) -> None:
        """The listeners C{listen} binds (none without it)."""
        if self._listen is not None:
            self.ports += self._listen(self)

    def startService(self) -> None:
        """Bind if not yet bound, start the tick and maintenance timers."""
        super().startService()
        self._ticker.start(self.tickInterval, now=False)
        self._maintenance.start(60.0, now=False)

    def stopService(self) -> Deferred[None]:
        """Tell clients, close them with 1012, stop listening, close the store."""
        closed = super().stopService()
        for timer in (self._ticker, self._maintenance):
            if timer.running:
                timer.stop()
        if self._presenceCall is not None and self._presenceCall.active():
            self._presenceCall.cancel()
        self._presenceCall = None
        self.broadcast("shutdown", {"reason": "gateway stopping"})
        for session in list(self.sessions):
            session.close(CloseCode.SERVICE_RESTART, "service restart")
        return closed.addBoth(lambda _: self.store.close())

    def _maintain(self) -> None:
        self.limiter.prune()
        self.browserLimiter.prune()
        self._expirePairings()

    def _tick(self) -> None:
        self.broadcast("tick", {"ts": self.nowMs()}, dropIfSlow=True)

    def nowMs(self) -> int:
        """The clock in epoch milliseconds."""
        return int(self.clock.seconds() * 1000)

    # -- sessions ----------------------------------------------------------------------

    def canOpen(self, clientIp: str | None) -> bool:
        """Whether C{clientIp} may open one more unauthenticated socket."""
        return self.preauth.count(clientIp) < self.preauth.limit

    def connectionInfo(self, remote: str, headers: Mapping[str, str]) -> ConnectionInfo:
        """Resolve the client address of an upgrade request."""
        return ConnectionInfo(
            remote, headers, resolveClientIp(remote, headers, self.auth.trustedProxies)
        )

    def openSession(self, sink: FrameSink, info: ConnectionInfo) -> GatewaySession:
        """A new WebSocket: take a pre-auth slot, make its session."""
        self.preauth.acquire(info.clientIp)
        session = GatewaySession(
            self, sink, info, self.newId(), self.newId(), self.clock.seconds()
        )
        self.sessions.add(session)
        self.stats.add("connections")
        return session

    def sessionClosed(self, session: GatewaySession) -> None:
        """Forget a closed session: registry, presence, pending invokes."""
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        if not session.authenticated:
            self.preauth.release(session.info.clientIp)
            return
        self.clients.pop(session.connId, None)
        self.nodes.disconnected(session, self._nodeId(session) if session.role == "node" else None)
        if session.presenceKey is not None:
            self.presence.pop(session.presenceKey, None)
            self.presenceVersion += 1
            if self._presenceCall is None and self.running:
                self._presenceCall = self.clock.callLater(
                    PRESENCE_COALESCE, self._broadcastPresence
                )
        self.log.info(
            "Gateway client {connId} disconnected ({role})",
            connId=session.connId,
            role=session.role,
        )

    def _broadcastPresence(self) -> None:
        """The presence list as it is now, to everyone (after disconnects settle)."""
        self._presenceCall = None
        self.broadcast(
            "presence",
            {"presence": list(self.presence.values())},
            dropIfSlow=True,
            stateful=True,
        )

    def handshakeFailed(self, session: GatewaySession, reject: _Reject) -> None:
        """Count and log (at a bounded rate) a refused handshake."""
        reason = reject.failure or reject.closeReason or "closed"
        self.stats.add(f'auth_failures{{reason="{_label(reason)}"}}')
        self.badInput.warn(
            "gateway-handshake",
            "Gateway handshake from {ip} refused: {reason}",
            ip=session.info.clientIp or session.info.remote,
            reason=reason,
        )

    # -- the connect handshake ---------------------------------------------------------

    def handshake(self, session: GatewaySession, request: Request) -> None:
        """Run the checks of a C{connect} in the spec's order (section 1.7).

        @raise _Reject: a check failed.
        """
        # 1. Schema.
        try:
            params = parseConnectParams(request.params)
        except FrameError as e:
            raise _invalid(f"invalid connect params: {e}", failure="invalid-params") from None
        # 2. Protocol range.
        protocol = negotiateProtocol(params.minProtocol, params.maxProtocol)
        if protocol is None:
            raise _Reject(
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
        # 4. Origin, for browsers and anything that sent one.
        if info.origin is not None or isBrowserClient(params.client.id, params.client.mode):
            origin = checkOrigin(info.origin, self.allowedOrigins, info.localDirect)
            if not origin.ok:
                raise _invalid(
                    "origin not allowed (connect from the gateway host or allow the origin "
                    "with --allowed-origin)",
                    {"code": "CONTROL_UI_ORIGIN_NOT_ALLOWED", "reason": origin.reason},
                    failure="origin-not-allowed",
                )
        # 5. Shared secret.
        limiter, rateIp = self._limiterFor(info)
        shared = authorizeShared(
            self.auth, params.auth, info.remote, info.headers, limiter, rateIp, info.localDirect
        )
        connect = _Connect(
            session, request.id, params, protocol, role, scopes, shared, shared.method or ""
        )
        device = params.device
        if device is None:
            # 6. The missing-device decision table.
            decision = missingDeviceDecision(
                clientId=params.client.id,
                clientMode=params.client.mode,
                role=role,
                shared=shared,
                sharedSent=bool(params.auth.get("token") or params.auth.get("password")),
                localDirect=info.localDirect,
            )
            if decision.kind == "unauthorized":
                raise self._unauthorized(shared.reason, shared, params)
            if decision.kind == "control-ui":
                message = "control ui requires device identity (use HTTPS or localhost)"
                raise _Reject(
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
                raise _Reject(
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
            self._admit(connect, None)
            return
        # 7. Device proof.
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
                nowMs=self.nowMs(),
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
        # 8. Device-token auth when the shared secret did not authorise.
        if not shared.ok:
            self._deviceTokenAuth(connect, device.id)
        # 9. Pairing (may complete later, after an approval is written).
        self._pairing(connect, publicKey)

    def _limiterFor(self, info: ConnectionInfo) -> tuple[RateLimiter, str | None]:
        """The limiter and key for a connection: browsers (an Origin) have their own."""
        if info.origin is not None:
            return self.browserLimiter, browserLimiterKey(info.clientIp, info.origin)
        return self.limiter, info.clientIp

    def _unauthorized(
        self, reason: str | None, shared: AuthResult, params: ConnectParams
    ) -> _Reject:
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
        return _Reject(CloseCode.POLICY, message, error, reason or "auth-required")

    def _deviceTokenAuth(self, connect: _Connect, deviceId: str) -> None:
        params = connect.params
        explicit = params.auth.get("deviceToken")
        candidate = explicit or params.auth.get("token")
        shared = connect.shared
        if candidate:
            limiter, rateIp = self._limiterFor(connect.session.info)
            if not limiter.check(rateIp, Scope.DEVICE_TOKEN).allowed:
                failure = "rate_limited"
            else:
                failure = self._verifyDeviceToken(
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

    def _verifyDeviceToken(
        self, deviceId: str, role: str, scopes: tuple[str, ...], candidate: str
    ) -> str | None:
        if deviceId not in self.store.devices:
            return "device-not-paired"
        token = self.store.tokens.get((deviceId, role))
        if token is None:
            return "token-missing"
        if token.revokedAtMs is not None:
            return "token-revoked"
        if not secretEqual(candidate, token.token):
            return "token-mismatch"
        if not set(scopes) <= set(token.scopes):
            return "scope-mismatch"
        return None

    def _pairing(self, connect: _Connect, publicKey: str) -> None:
        session, params, role, scopes = connect.session, connect.params, connect.role, connect.scopes
        info = session.info
        client = params.client
        deviceId = params.device.id  # type: ignore[union-attr]
        if (
            client.id == "gateway-client"
            and client.mode == "backend"
            and info.localDirect
        ):
            # A local backend with a shared secret or device token needs no pairing.
            self._admit(connect, deviceId)
            return
        paired = self.store.devices.get(deviceId)
        platform = (client.platform or "").strip()
        family = (client.deviceFamily or "").strip()
        reason = None
        if paired is None or paired.publicKey != publicKey:
            reason = "not-paired"
        elif (paired.platform, paired.deviceFamily) != (platform, family):
            reason = "metadata-upgrade"
        elif role not in paired.roles:
            reason = "role-upgrade"
        elif not set(scopes) <= set(paired.scopes):
            reason = "scope-upgrade"
        if reason is None:
            self._issueToken(connect, paired)
            return
        pairing = self._requestPairing(
            deviceId, publicKey, role, scopes, params, reason, info.clientIp
        )
        silent = (
            info.localDirect
            and (info.origin is None or isBrowserClient(client.id, client.mode))
            and reason in ("not-paired", "role-upgrade")
        )
        if not silent:
            message = "pairing required: device is not approved yet"
            raise _Reject(
                CloseCode.POLICY,
                f"pairing required (requestId {pairing.requestId})",
                errorShape(
                    ErrorCode.NOT_PAIRED,
                    message,
                    {
                        "code": "PAIRING_REQUIRED",
                        "requestId": pairing.requestId,
                        "reason": reason,
                    },
                ),
                "pairing-required",
            )
        session.busy = True
        approved = self.approvePairing(pairing.requestId, silent=True)

        def continueAfterApproval(device: PairedDevice) -> None:
            session.busy = False
            if session.closed:
                return
            try:
                self._issueToken(connect, device)
            except _Reject as reject:
                session._reject(connect.requestId, reject)

        approved.addCallback(continueAfterApproval)
        approved.addErrback(self._storeFailed, session)

    def _storeFailed(self, failure: Failure, session: GatewaySession) -> None:
        session.busy = False
        self.log.failure("Gateway store write failed", failure)
        session.close(CloseCode.SERVICE_RESTART, "gateway storage error")

    def _issueToken(self, connect: _Connect, paired: PairedDevice) -> None:
        session = connect.session
        existing = self.store.tokens.get((paired.deviceId, connect.role))
        if (
            existing is not None
            and existing.revokedAtMs is None
            and set(connect.scopes) <= set(existing.scopes)
        ):
            self._admit(connect, paired.deviceId, existing)
            return
        now = self.nowMs()
        token = DeviceToken(
            paired.deviceId,
            connect.role,
            b64urlEncode(secrets.token_bytes(32)),
            connect.scopes,
            createdAtMs=existing.createdAtMs if existing else now,
            rotatedAtMs=now if existing else None,
        )
        session.busy = True
        saved = self.store.saveToken(token)

        def admit(_: None) -> None:
            session.busy = False
            if session.closed:
                return
            self._admit(connect, paired.deviceId, token)

        saved.addCallback(admit)
        saved.addErrback(self._storeFailed, session)

    def _admit(
        self, connect: _Connect, deviceId: str | None, token: DeviceToken | None = None
    ) -> None:
        """Steps 13 to 15: presence, hello-ok, timer cleared, registered, sent."""
        session, params, role, scopes = connect.session, connect.params, connect.role, connect.scopes
        session.role = role
        session.scopes = scopes
        session.deviceId = deviceId
        session.params = params
        client = params.client
        if client.mode != "cli":
            key = deviceId or client.instanceId or session.connId
            session.presenceKey = key
            self.presence[key] = self._presenceEntry(session)
            self.presenceVersion += 1
        authPayload: dict[str, Any] = {
            "method": connect.method,
            "role": role,
            "scopes": list(scopes),
        }
        if token is not None:
            authPayload["deviceToken"] = token.token
            authPayload["issuedAtMs"] = token.issuedAtMs
        snapshot: dict[str, Any] = {
            "presence": list(self.presence.values()),
            "health": self.health(),
            "stateVersion": self.stateVersion(),
            "uptimeMs": int((self.clock.seconds() - self.startedAt) * 1000),
        }
        if ADMIN in scopes:
            snapshot["authMode"] = self.auth.mode
            if self.stateDir is not None:
                snapshot["stateDir"] = self.stateDir
        hello = {
            "type": "hello-ok",
            "protocol": connect.protocol,
            "server": {"version": __version__, "connId": session.connId},
            "features": {"methods": list(METHODS), "events": list(EVENTS)},
            "snapshot": snapshot,
            "auth": authPayload,
            "policy": {
                "maxPayload": MAX_PAYLOAD,
                "maxBufferedBytes": MAX_BUFFERED_BYTES,
                "tickIntervalMs": int(self.tickInterval * 1000),
            },
        }
        if session.timer is not None and session.timer.active():
            session.timer.cancel()
        session.timer = None
        session.authenticated = True
        self.preauth.release(session.info.clientIp)
        self.clients[session.connId] = session
        if role == "node":
            self.nodes.add(self._nodeId(session), session)
        session.respond(connect.requestId, hello)
        self.stats.add("handshakes")
        self.log.info(
            "Gateway client {connId} connected: {clientId}/{mode} as {role} from {ip} "
            "({method})",
            connId=session.connId,
            clientId=client.id,
            mode=client.mode,
            role=role,
            ip=session.info.clientIp,
            method=connect.method,
        )

    def _presenceEntry(self, session: GatewaySession) -> dict[str, Any]:
        client = session.params.client  # type: ignore[union-attr]
        entry: dict[str, Any] = {
            "host": client.displayName or client.id,
            "version": client.version,
            "platform": client.platform,
            "deviceFamily": client.deviceFamily,
            "modelIdentifier": client.modelIdentifier,
            "mode": client.mode,
            "deviceId": session.deviceId,
            "roles": [session.role],
            "scopes": list(session.scopes),
            "instanceId": client.instanceId,
            "reason": "connect",
            "ts": self.nowMs(),
        }
        if not session.info.localDirect:
            entry["ip"] = session.info.clientIp
        return {k: v for k, v in entry.items() if v is not None}

    @staticmethod
    def _nodeId(session: GatewaySession) -> str:
        return session.deviceId or session.params.client.id  # type: ignore[union-attr]

    def stateVersion(self) -> dict[str, int]:
        """The presence and health versions."""
        return {"presence": self.presenceVersion, "health": self.healthVersion}

    # -- pairing -----------------------------------------------------------------------

    def _requestPairing(
        self,
        deviceId: str,
        publicKey: str,
        role: str,
        scopes: tuple[str, ...],
        params: ConnectParams,
        reason: str,
        clientIp: str | None,
    ) -> PairingRequest:
        self._expirePairings()
        for old in [p for p in self.pairings.values() if p.deviceId == deviceId]:
            del self.pairings[old.requestId]
        if len(self.pairings) >= MAX_PENDING_PAIRINGS:
            del self.pairings[next(iter(self.pairings))]
        paired = self.store.devices.get(deviceId)
        if paired is not None and paired.publicKey == publicKey:
            # An upgrade asks for what was approved plus what is new.
            roles = tuple(dict.fromkeys((*paired.roles, role)))
            scopes = tuple(dict.fromkeys((*paired.scopes, *scopes)))
            role = ",".join(roles)
        client = params.client
        pairing = PairingRequest(
            requestId=self.newId(),
            deviceId=deviceId,
            publicKey=publicKey,
            role=role,
            scopes=scopes,
            platform=(client.platform or "").strip(),
            deviceFamily=(client.deviceFamily or "").strip(),
            clientId=client.id,
            displayName=client.displayName or "",
            reason=reason,
            remoteIp=clientIp,
            createdAtMs=self.nowMs(),
        )
        self.pairings[pairing.requestId] = pairing
        self.broadcast("device.pair.requested", pairing.describe(), scope=PAIRING)
        return pairing

    def _expirePairings(self) -> None:
        cutoff = self.nowMs() - int(PAIRING_TTL * 1000)
        for pairing in [p for p in self.pairings.values() if p.createdAtMs < cutoff]:
            del self.pairings[pairing.requestId]

    def approvePairing(self, requestId: str, silent: bool = False) -> Deferred[PairedDevice]:
        """Approve a pending request; fires with the paired device once it is stored.

        @raise MethodError: no such pending request.
        """
        self._expirePairings()
        pairing = self.pairings.pop(requestId, None)
        if pairing is None:
            raise MethodError(ErrorCode.APPROVAL_NOT_FOUND, "unknown pairing requestId")
        device = PairedDevice(
            deviceId=pairing.deviceId,
            publicKey=pairing.publicKey,
            roles=tuple(pairing.role.split(",")),
            scopes=pairing.scopes,
            platform=pairing.platform,
            deviceFamily=pairing.deviceFamily,
            clientId=pairing.clientId,
            displayName=pairing.displayName,
            approvedAtMs=self.nowMs(),
        )
        saved = self.store.savePairedDevice(device)
        self.broadcast(
            "device.pair.resolved",
            {
                "requestId": requestId,
                "deviceId": device.deviceId,
                "decision": "approved",
                "silent": silent,
            },
            scope=PAIRING,
        )
        self.log.info(
            "Gateway device {deviceId} paired as {roles}{how}",
            deviceId=device.deviceId,
            roles=",".join(device.roles),
            how=" (local auto-approval)" if silent else "",
        )
        return saved.addCallback(lambda _: device)

    # -- broadcasting ------------------------------------------------------------------

    def broadcast(
        self,
        event: str,
        payload: Any,
        *,
        dropIfSlow: bool = False,
        scope: str | None = None,
        stateful: bool = False,
    ) -> None:
        """Send an event to every connected client (or operators holding C{scope}).

        Untargeted broadcasts carry the gateway-wide C{seq}.
        """
        targets = [
            s
            for s in self.clients.values()
            if scope is None
            or (s.role == "operator" and (scope in s.scopes or ADMIN in s.scopes))
        ]
        seq = None
        if scope is None:
            self.seq += 1
            seq = self.seq
        frame = Event(event, payload, seq, self.stateVersion() if stateful else None)
        if targets:
            text = encodeFrame(frame)
            for session in targets:
                session.send(frame, dropIfSlow, text)

    # -- methods -----------------------------------------------------------------------

    def dispatch(self, session: GatewaySession, request: Request) -> None:
        """Authorise and run one request of a connected client."""
        self.stats.add("requests")
        if request.method == "connect":
            session.respond(
                request.id,
                error=errorShape(
                    ErrorCode.INVALID_REQUEST, "connect is only valid as the first request"
                ),
            )
            return
        check = authorizeMethod(session.role, session.scopes, request.method)
        if not check.ok:
            if check.roleDenied:
                session.denials += 1
                if session.denials > MAX_UNAUTHORIZED_CALLS:
                    session.close(CloseCode.POLICY, "repeated unauthorized calls")
                    return
                session.respond(
                    request.id, error=errorShape(ErrorCode.INVALID_REQUEST, check.message)
                )
            else:
                session.respond(
                    request.id,
                    error=errorShape(
                        ErrorCode.FORBIDDEN,
                        check.message,
                        {
                            "code": "MISSING_SCOPE",
                            "missingScope": check.missingScope,
                            "requiredScopes": [check.missingScope],
                        },
                    ),
                )
            return
        session.denials = 0
        handler = self._methods.get(request.method)
        if handler is None:
            session.respond(
                request.id,
                error=errorShape(
                    ErrorCode.INVALID_REQUEST, f"unknown method: {request.method}"
                ),
            )
            return
        params = request.params if request.params is not None else {}

        def answer(payload: Any) -> None:
            if payload is not _DEFERRED:
                session.respond(request.id, payload)

        def failed(failure: Failure) -> None:
            if failure.check(MethodError):
                session.respond(request.id, error=failure.value.error)
                return
            self.log.failure(
                "Gateway method {method} failed", failure, method=request.method
            )
            session.respond(
                request.id, error=errorShape(ErrorCode.UNAVAILABLE, "internal error")
            )

        # Most methods answer at once; only those that wait get a Deferred's overhead.
        try:
            result = handler(session, request, params)
        except Exception:
            failed(Failure())
            return
        if isinstance(result, Deferred):
            result.addCallbacks(answer, failed)
        else:
            answer(result)

    def _methodTable(self) -> dict[str, Callable[[GatewaySession, Request, Any], Any]]:
        handlers: dict[str, Callable[[GatewaySession, Request, Any], Any]] = {
            "health": lambda s, r, p: self.health(),
            "status": lambda s, r, p: self.status(),
            "node.list": self._nodeList,
            "node.describe": self._nodeDescribe,
            "node.invoke": self._nodeInvoke,
            "node.invoke.result": self._nodeInvokeResult,
            "node.event": self._nodeEvent,
            "device.pair.list": self._pairList,
            "device.pair.approve": self._pairApprove,
            "device.pair.reject": self._pairReject,
            "device.pair.remove": self._pairRemove,
            "device.token.rotate": self._tokenRotate,
            "device.token.revoke": self._tokenRevoke,
        }
        for method, (service, kind) in LISTINGS.items():
            handlers[method] = lambda s, r, p, service=service, kind=kind: self._listing(
                service, kind
            )
        for method, (service, kind, action) in MANAGERS.items():
            handlers[method] = (
                lambda s, r, p, service=service, kind=kind, action=action: self._manage(
                    service, kind, action, p
                )
            )
        return handlers

    # health and status

    def siblings(self) -> dict[str, Any]:
        """Every service of the appliance by name (this one included)."""
        parent = self.parent
        if parent is None or not IServiceCollection.providedBy(parent):
            return {self.name or "gateway": self}
        return {s.name: s for s in parent if s.name}

    def health(self) -> dict[str, Any]:
        """Liveness of every service."""
        return {
            "ok": True,
            "ts": self.nowMs(),
            "services": {name: bool(s.running) for name, s in self.siblings().items()},
        }

    def status(self) -> dict[str, Any]:
        """Every service's state and counters."""
        services = {}
        for name, service in self.siblings().items():
            stats = getattr(service, "stats", None)
            services[name] = {
                "running": bool(service.running),
                "stats": stats.snapshot() if isinstance(stats, Stats) else {},
            }
        return {
            "version": __version__,
            "uptimeMs": int((self.clock.seconds() - self.startedAt) * 1000),
            "authMode": self.auth.mode,
            "services": services,
        }

    def _sibling(self, name: str, capability: str) -> Callable[..., Any]:
        service = self.siblings().get(name)
        if service is None or not service.running:
            raise MethodError(
                ErrorCode.UNAVAILABLE,
                f"service not running: {name}",
                {"code": "SERVICE_NOT_RUNNING", "service": name},
            )
        method = getattr(service, capability, None)
        if method is None:
            raise MethodError(
                ErrorCode.UNAVAILABLE,
                f"service {name} does not offer {capability}",
                {"code": "SERVICE_UNSUPPORTED", "service": name},
            )
        return method

    def _listing(self, name: str, kind: str) -> Deferred[Any]:
        listing = self._sibling(name, "listing")
        result = maybeDeferred(listing, kind)
        return result.addCallbacks(lambda rows: {"items": rows}, _siblingError)

    def _manage(self, name: str, kind: str, action: str, params: Any) -> Deferred[Any]:
        if not isinstance(params, dict):
            raise MethodError(ErrorCode.INVALID_REQUEST, "params must be an object")
        manage = self._sibling(name, "manage")
        return maybeDeferred(manage, kind, action, params).addErrback(_siblingError)

    # nodes

    def _describeNode(self, nodeId: str) -> dict[str, Any] | None:
        session = self.nodes.connected.get(nodeId)
        paired = self.store.devices.get(nodeId)
        if session is None:
            if paired is None or "node" not in paired.roles:
                return None
            return {
                "nodeId": nodeId,
                "displayName": paired.displayName,
                "platform": paired.platform,
                "paired": True,
                "connected": False,
            }
        client = session.params.client  # type: ignore[union-attr]
        return {
            "nodeId": nodeId,
            "connId": session.connId,
            "displayName": client.displayName,
            "platform": client.platform,
            "version": client.version,
            "deviceFamily": client.deviceFamily,
            "modelIdentifier": client.modelIdentifier,
            "remoteIp": session.info.clientIp,
            "caps": list(session.params.caps),  # type: ignore[union-attr]
            "commands": list(session.params.commands or ()),  # type: ignore[union-attr]
            "paired": paired is not None,
            "connected": True,
            "connectedAtMs": int(session.openedAt * 1000),
        }

    def _nodeList(self, session: GatewaySession, request: Request, params: Any) -> Any:
        ids = dict.fromkeys(
            [*self.nodes.connected,
             *(d for d, p in self.store.devices.items() if "node" in p.roles)]
        )
        return {"nodes": [self._describeNode(nodeId) for nodeId in ids]}

    def _nodeDescribe(self, session: GatewaySession, request: Request, params: Any) -> Any:
        nodeId = _param(params, "nodeId", str)
        node = self._describeNode(nodeId)
        if node is None:
            raise MethodError(ErrorCode.INVALID_REQUEST, "unknown node", {"code": "NOT_FOUND"})
        return node

    def _nodeInvoke(self, session: GatewaySession, request: Request, params: Any) -> Any:
        nodeId = _param(params, "nodeId", str)
        command = _param(params, "command", str)
        idempotencyKey = _param(params, "idempotencyKey", str)
        timeoutMs = params.get("timeoutMs")
        if timeoutMs is None:
            timeout = INVOKE_TIMEOUT
        elif isinstance(timeoutMs, int) and not isinstance(timeoutMs, bool) and timeoutMs > 0:
            timeout = min(timeoutMs / 1000, MAX_INVOKE_TIMEOUT)
        else:
            raise MethodError(ErrorCode.INVALID_REQUEST, "timeoutMs must be a positive integer")
        node = self.nodes.connected.get(nodeId)
        if node is None:
            raise MethodError(
                ErrorCode.UNAVAILABLE, "node not connected", {"code": "NOT_CONNECTED"}
            )
        if command not in (node.params.commands or ()):  # type: ignore[union-attr]
            raise MethodError(
                ErrorCode.INVALID_REQUEST,
                f"command not allowed: {command}",
                {"code": "COMMAND_NOT_ALLOWED"},
            )
        if not self.nodes.canInvoke(session):
            raise MethodError(ErrorCode.UNAVAILABLE, "too many pending invokes")
        invokeId = self.newId()
        self.nodes.invoke(invokeId, nodeId, command, session, request.id, timeout)
        payload: dict[str, Any] = {
            "id": invokeId,
            "nodeId": nodeId,
            "command": command,
            "paramsJSON": None if "params" not in params else json.dumps(params["params"]),
            "timeoutMs": int(timeout * 1000),
            "idempotencyKey": idempotencyKey,
        }
        node.send(Event("node.invoke.request", payload))
        return _DEFERRED

    def _nodeInvokeResult(self, session: GatewaySession, request: Request, params: Any) -> Any:
        invokeId = _param(params, "id", str)
        nodeId = _param(params, "nodeId", str)
        ok = params.get("ok")
        if not isinstance(ok, bool):
            raise MethodError(ErrorCode.INVALID_REQUEST, "ok must be a boolean")
        if nodeId != self._nodeId(session):
            raise MethodError(ErrorCode.INVALID_REQUEST, "nodeId mismatch")
        pending = self.nodes.awaiting(invokeId, nodeId)
        if pending is None:
            return {"ok": True, "ignored": True}
        if ok:
            payloadJSON = params.get("payloadJSON")
            payload = params.get("payload")
            if payload is None and isinstance(payloadJSON, str):
                try:
                    payload = json.loads(payloadJSON)
                except ValueError:
                    payload = None
            self.nodes.finish(
                pending,
                {
                    "ok": True,
                    "nodeId": nodeId,
                    "command": pending.command,
                    "payload": payload,
                    "payloadJSON": payloadJSON
                    if isinstance(payloadJSON, str)
                    else json.dumps(payload),
                },
            )
        else:
            nodeError = params.get("error") if isinstance(params.get("error"), dict) else {}
            code = nodeError.get("code")
            message = nodeError.get("message")
            self.nodes.finish(
                pending,
                error=errorShape(
                    code if isinstance(code, str) and code else ErrorCode.UNAVAILABLE,
                    message if isinstance(message, str) and message else "node invoke failed",
                    {"nodeId": nodeId, "command": pending.command},
                ),
            )
        return {"ok": True}

    def _nodeEvent(self, session: GatewaySession, request: Request, params: Any) -> Any:
        event = _param(params, "event", str)
        payload = params.get("payload")
        if payload is None and isinstance(params.get("payloadJSON"), str):
            try:
                payload = json.loads(params["payloadJSON"])
            except ValueError as e:
                raise MethodError(ErrorCode.INVALID_REQUEST, "payloadJSON is not JSON") from e
        self.broadcast(
            "node.event",
            {"nodeId": self._nodeId(session), "event": event, "payload": payload},
            scope=READ,
        )
        return {"ok": True}

    # pairing methods

    def _pairList(self, session: GatewaySession, request: Request, params: Any) -> Any:
        self._expirePairings()
        return {
            "pending": [p.describe() for p in self.pairings.values()],
            "paired": [d.describe() for d in self.store.devices.values()],
        }

    def _pairApprove(self, session: GatewaySession, request: Request, params: Any) -> Any:
        requestId = _param(params, "requestId", str)
        return self.approvePairing(requestId).addCallback(
            lambda device: {"requestId": requestId, "device": device.describe()}
        )

    def _pairReject(self, session: GatewaySession, request: Request, params: Any) -> Any:
        requestId = _param(params, "requestId", str)
        self._expirePairings()
        pairing = self.pairings.pop(requestId, None)
        if pairing is None:
            raise MethodError(ErrorCode.APPROVAL_NOT_FOUND, "unknown pairing requestId")
        self.broadcast(
            "device.pair.resolved",
            {"requestId": requestId, "deviceId": pairing.deviceId, "decision": "rejected"},
            scope=PAIRING,
        )
        return {"requestId": requestId, "deviceId": pairing.deviceId, "rejected": True}

    def _pairRemove(self, session: GatewaySession, request: Request, params: Any) -> Any:
        deviceId = _param(params, "deviceId", str)
        if deviceId not in self.store.devices:
            raise MethodError(ErrorCode.INVALID_REQUEST, "unknown device")
        removed = self.store.removeDevice(deviceId)
        return self._answerThenClose(
            removed, session, request, {"deviceId": deviceId, "removed": True}, deviceId, None
        )

    def _tokenTarget(
        self, session: GatewaySession, params: Any, scopes: tuple[str, ...] | None
    ) -> tuple[str, str, PairedDevice]:
        deviceId = _param(params, "deviceId", str)
        role = _param(params, "role", str)
        device = self.store.devices.get(deviceId)
        allowed = device is not None and role in device.roles
        if allowed and ADMIN not in session.scopes:
            allowed = session.deviceId == deviceId and (
                scopes is None or set(scopes) <= set(session.scopes)
            )
        if allowed and scopes is not None:
            allowed = set(scopes) <= set(device.scopes)  # type: ignore[union-attr]
        if not allowed:
            # One public answer for an unknown device and for a refused one.
            raise MethodError(
                ErrorCode.INVALID_REQUEST,
                "device token change denied",
                {"code": "DEVICE_TOKEN_DENIED"},
            )
        return deviceId, role, device  # type: ignore[return-value]

    def _tokenRotate(self, session: GatewaySession, request: Request, params: Any) -> Any:
        scopes = params.get("scopes") if isinstance(params, dict) else None
        if scopes is not None and (
            not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes)
        ):
            raise MethodError(ErrorCode.INVALID_REQUEST, "scopes must be a list of strings")
        deviceId, role, device = self._tokenTarget(
            session, params, None if scopes is None else tuple(scopes)
        )
        existing = self.store.tokens.get((deviceId, role))
        if scopes is None:
            scopes = list(existing.scopes) if existing else list(device.scopes)
        now = self.nowMs()
        token = DeviceToken(
            deviceId,
            role,
            b64urlEncode(secrets.token_bytes(32)),
            tuple(scopes),
            createdAtMs=existing.createdAtMs if existing else now,
            rotatedAtMs=now,
        )
        result = {
            "deviceId": deviceId,
            "role": role,
            "token": token.token,
            "scopes": list(token.scopes),
            "rotatedAtMs": now,
        }
        saved = self.store.saveToken(token)
        return self._answerThenClose(saved, session, request, result, deviceId, role)

    def _tokenRevoke(self, session: GatewaySession, request: Request, params: Any) -> Any:
        deviceId, role, _ = self._tokenTarget(session, params, None)
        now = self.nowMs()
        revoked = self.store.revokeToken(deviceId, role, now)
        if revoked is None:
            raise MethodError(
                ErrorCode.INVALID_REQUEST,
                "device token change denied",
                {"code": "DEVICE_TOKEN_DENIED"},
            )
        result = {"deviceId": deviceId, "role": role, "revokedAtMs": now}
        return self._answerThenClose(revoked, session, request, result, deviceId, role)

    def _answerThenClose(
        self,
        written: Deferred[None],
        session: GatewaySession,
        request: Request,
        result: dict[str, Any],
        deviceId: str,
        role: str | None,
    ) -> Deferred[object]:
        """Once C{written} is stored: answer, then close C{deviceId}'s sockets with 4001.

        The caller's own socket may be among them, so the answer goes first.
        """

        def done(_: None) -> object:
            session.respond(request.id, result)
            for target in _sessionsOf(self.clients.values(), deviceId, role):
                target.close(CloseCode.AUTH_CHANGED, "device removed")
            return _DEFERRED

        return written.addCallback(done)


#: Marker: the handler answers later itself (C{node.invoke}).
_DEFERRED = object()


def _siblingError(failure: Failure) -> Any:
    if failure.check(KeyError):
        raise MethodError(ErrorCode.INVALID_REQUEST, "unknown listing kind")
    if failure.check(ValueError):
        raise MethodError(ErrorCode.INVALID_REQUEST, str(failure.value))
    return failure


def _param(params: Any, name: str, kind: type) -> Any:
    if not isinstance(params, dict):
        raise MethodError(ErrorCode.INVALID_REQUEST, "params must be an object")
    value = params.get(name)
    if not isinstance(value, kind) or (kind is str and not value):
        raise MethodError(ErrorCode.INVALID_REQUEST, f"{name} is required")
    return value


def _label(text: str) -> str:
    """A Prometheus label value: reasons are short identifiers, quotes are dropped."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:64]

