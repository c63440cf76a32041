# -*- test-case-name: test.unit.test_gateway_client -*-
"""A Twisted client of the control gateway, for operators and for KVM nodes.

L{DeviceIdentity} is the Ed25519 key in a file (and the device tokens the gateway
issued to it). L{GatewayClientProtocol} runs one WebSocket: it waits for the
C{connect.challenge}, signs and sends C{connect}, then offers L{request}, delivers
events, answers C{node.invoke.request} for a node, and closes with 4000 when the
gateway falls silent for twice the advertised tick interval. L{GatewayClient} keeps
one connected, reconnecting with exponential back-off except after the error codes
that mean retrying cannot help.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey
from twisted.internet import ssl
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTCP, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from twisted.web.websocket import WebSocketClientEndpoint, WebSocketTransport
from zope.interface import implementer

from p2pnet.codecs.device_auth import b64urlDecode, b64urlEncode, buildPayloadV3, deriveDeviceId
from p2pnet.codecs.gateway_frames import (
    MAX_PROTOCOL,
    MIN_PROTOCOL,
    CloseCode,
    Event,
    FrameError,
    Request,
    Response,
    decodeFrame,
    encodeFrame,
)

__all__ = [
    "ClientOptions",
    "DeviceIdentity",
    "GatewayClient",
    "GatewayClientProtocol",
    "GatewayError",
    "STOP_RECONNECT_CODES",
    "TrustPolicy",
]

#: C{error.details.code} values after which reconnecting cannot help.
STOP_RECONNECT_CODES = frozenset(
    {
        "AUTH_TOKEN_MISSING",
        "AUTH_BOOTSTRAP_TOKEN_INVALID",
        "AUTH_PASSWORD_MISSING",
        "AUTH_PASSWORD_MISMATCH",
        "AUTH_RATE_LIMITED",
        "PAIRING_REQUIRED",
        "CONTROL_UI_DEVICE_IDENTITY_REQUIRED",
        "DEVICE_IDENTITY_REQUIRED",
    }
)

#: Every operator scope (what C{p2pnet gateway call} asks for).
OPERATOR_SCOPES = ("operator.admin", "operator.read", "operator.write", "operator.pairing")


class GatewayError(Exception):
    """An error response from the gateway (or the connection ending first).

    @ivar code: C{error.code}; @ivar details: C{error.details} (may be empty).
    """

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}

    @property
    def detailCode(self) -> str | None:
        """C{details.code}, the machine-readable reason."""
        code = self.details.get("code")
        return code if isinstance(code, str) else None


class DeviceIdentity:
    """An Ed25519 device key kept in a JSON file (mode 0600), and its device tokens.

    The file holds C{{version, deviceId, publicKey, privateKey, createdAtMs?, tokens}};
    keys are raw base64url, tokens are by role. C{createdAtMs} is when the key was made
    (kept as it is on every later save), known when L{load} was given a clock.
    """

    def __init__(self, path: str, key: SigningKey, tokens: dict[str, dict[str, Any]],
                 createdAtMs: int | None = None):
        self.path = path
        self.key = key
        self.tokens = tokens
        self.createdAtMs = createdAtMs
        raw = bytes(key.verify_key)
        self.publicKey = b64urlEncode(raw)
        self.deviceId = deriveDeviceId(raw)

    @classmethod
    def load(cls, path: str, clock: IReactorTime | None = None) -> DeviceIdentity:
        """Read the identity at C{path}, creating a new key there if there is none
        (stamped with C{clock}'s time, when given)."""
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            created = None if clock is None else int(clock.seconds() * 1000)
            identity = cls(path, SigningKey.generate(), {}, created)
            identity.save()
            return identity
        key = SigningKey(b64urlDecode(data["privateKey"]))
        created = data.get("createdAtMs")
        identity = cls(path, key, dict(data.get("tokens", {})),
                       created if isinstance(created, int) else None)
        if identity.deviceId != data.get("deviceId"):
            raise ValueError(f"{path}: deviceId does not match the key")
        return identity

    def save(self) -> None:
        """Write the file atomically with mode 0600."""
        data: dict[str, Any] = {
            "version": 1,
            "deviceId": self.deviceId,
            "publicKey": self.publicKey,
            "privateKey": b64urlEncode(bytes(self.key)),
            "tokens": self.tokens,
        }
        if self.createdAtMs is not None:
            data["createdAtMs"] = self.createdAtMs
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        temporary = f"{self.path}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(temporary, self.path)

    def token(self, role: str) -> str | None:
        """The stored device token for C{role}."""
        entry = self.tokens.get(role)
        return entry.get("token") if entry else None

    def setToken(self, role: str, token: str | None, scopes: Sequence[str] = ()) -> None:
        """Store (or with C{None} forget) the device token for C{role}."""
        if token is None:
            self.tokens.pop(role, None)
        else:
            self.tokens[role] = {"token": token, "scopes": list(scopes)}
        self.save()

    def sign(self, payload: str) -> str:
        """The base64url signature of C{payload}."""
        return b64urlEncode(self.key.sign(payload.encode("utf-8")).signature)


#: Runs a node command: C{(command, params)} to a JSON-ready result (or a Deferred).
CommandHandler = Callable[[str, Any], Any]


@dataclass
class ClientOptions:
    """Who the client is and what it asks for."""

    role: str = "operator"
    scopes: tuple[str, ...] = ()
    token: str | None = None
    password: str | None = None
    clientId: str = "gateway-client"
    clientMode: str = "backend"
    platform: str = "linux"
    deviceFamily: str | None = None
    displayName: str | None = None
    version: str = "p2pnet"
    commands: tuple[str, ...] = ()
    caps: tuple[str, ...] = ()
    identity: DeviceIdentity | None = None
    challengeTimeout: float = 10.0
    handlers: dict[str, CommandHandler] = field(default_factory=dict)


class GatewayClientProtocol:
    """One WebSocket to the gateway, from challenge to close.

    @ivar connected: fires with this protocol after hello-ok, or fails with
        L{GatewayError} (the gateway's answer to C{connect}) or a lost connection.
    @ivar hello: the hello-ok payload once connected.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        options: ClientOptions,
        onEvent: Callable[[Event], None] | None = None,
    ) -> None:
        self.clock = clock
        self.options = options
        self.onEvent = onEvent
        self.connected: Deferred[GatewayClientProtocol] = Deferred()
        self.disconnected: Deferred[None] = Deferred()
        self.hello: dict[str, Any] | None = None
        self.lastError: GatewayError | None = None
        self.transport: WebSocketTransport | None = None
        self._pending: dict[str, Deferred[Any]] = {}
        self._ids = 0
        self._timer: IDelayedCall | None = None
        self._tickLimit = 0.0
        self._closed = False

    # WebSocketProtocol

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        self._timer = self.clock.callLater(self.options.challengeTimeout, self._noChallenge)

    def pongReceived(self, payload: bytes) -> None:
        """Unused: liveness comes from frames."""

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        self.close(CloseCode.POLICY, "binary frame")

    def textMessageReceived(self, message: str) -> None:
        try:
            frame = decodeFrame(message)
        except FrameError as e:
            self.log.warn("Gateway sent an invalid frame: {error}", error=str(e))
            return
        if self.hello is not None:
            self._armWatchdog()
        if isinstance(frame, Event):
            if frame.event == "connect.challenge" and self.hello is None:
                self._challenge(frame.payload)
            elif self.onEvent is not None or frame.event == "node.invoke.request":
                self._event(frame)
        elif isinstance(frame, Response):
            waiting = self._pending.pop(frame.id, None)
            if waiting is None:
                return
            if frame.ok:
                waiting.callback(frame.payload)
            else:
                error = frame.error or {}
                waiting.errback(
                    GatewayError(
                        error.get("code", "UNAVAILABLE"),
                        error.get("message", "error"),
                        error.get("details") if isinstance(error.get("details"), dict) else {},
                    )
                )

    def connectionLost(self, reason: Failure) -> None:
        self._closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            waiting.errback(GatewayError("UNAVAILABLE", "connection closed"))
        if not self.connected.called:
            self.connected.errback(
                self.lastError or GatewayError("UNAVAILABLE", "connection closed")
            )
        self.disconnected.callback(None)

    # handshake

    def _noChallenge(self) -> None:
        self._timer = None
        self.close(CloseCode.POLICY, "connect challenge timeout")

    def _challenge(self, payload: Any) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        nonce = payload.get("nonce") if isinstance(payload, dict) else None
        ts = payload.get("ts") if isinstance(payload, dict) else None
        if not isinstance(nonce, str) or not nonce.strip():
            self.close(CloseCode.POLICY, "connect challenge missing nonce")
            return
        if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
            self.close(CloseCode.POLICY, "connect challenge missing ts")
            return
        params = self.connectParams(nonce.strip(), ts)
        d = self.request("connect", params)
        d.addCallbacks(self._helloOk, self._refused)

    def connectParams(self, nonce: str, signedAt: int) -> dict[str, Any]:
        """The C{connect} parameters, signed over C{nonce} at C{signedAt}."""
        options = self.options
        client: dict[str, Any] = {
            "id": options.clientId,
            "version": options.version,
            "platform": options.platform,
            "mode": options.clientMode,
        }
        if options.displayName:
            client["displayName"] = options.displayName
        if options.deviceFamily:
            client["deviceFamily"] = options.deviceFamily
        auth: dict[str, str] = {}
        if options.token:
            auth["token"] = options.token
        if options.password:
            auth["password"] = options.password
        identity = options.identity
        deviceToken = identity.token(options.role) if identity else None
        if deviceToken:
            auth["deviceToken"] = deviceToken
        params: dict[str, Any] = {
            "minProtocol": MIN_PROTOCOL,
            "maxProtocol": MAX_PROTOCOL,
            "client": client,
            "role": options.role,
            "scopes": list(options.scopes),
            "caps": list(options.caps),
        }
        if options.role == "node":
            params["commands"] = list(options.commands or options.handlers)
        if auth:
            params["auth"] = auth
        if identity is not None:
            payload = buildPayloadV3(
                identity.deviceId,
                options.clientId,
                options.clientMode,
                options.role,
                options.scopes,
                signedAt,
                auth.get("token") or auth.get("deviceToken"),
                nonce,
                options.platform,
                options.deviceFamily,
            )
            params["device"] = {
                "id": identity.deviceId,
                "publicKey": identity.publicKey,
                "signature": identity.sign(payload),
                "signedAt": signedAt,
                "nonce": nonce,
            }
        return params

    def _helloOk(self, hello: dict[str, Any]) -> None:
        self.hello = hello
        auth = hello.get("auth") or {}
        identity = self.options.identity
        token = auth.get("deviceToken")
        if identity is not None and isinstance(token, str) and token != identity.token(
            self.options.role
        ):
            identity.setToken(self.options.role, token, auth.get("scopes", ()))
        interval = hello.get("policy", {}).get("tickIntervalMs", 30000) / 1000
        self._tickLimit = 2 * interval
        self._armWatchdog()
        self.connected.callback(self)

    def _refused(self, failure: Failure) -> None:
        error = failure.value
        if isinstance(error, GatewayError):
            self.lastError = error
            identity = self.options.identity
            if identity is not None and error.detailCode == "AUTH_DEVICE_TOKEN_MISMATCH":
                identity.setToken(self.options.role, None)

    def _armWatchdog(self) -> None:
        if self._closed:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._tickLimit)
        else:
            self._timer = self.clock.callLater(self._tickLimit, self._tickTimeout)

    def _tickTimeout(self) -> None:
        self._timer = None
        self.close(CloseCode.TICK_TIMEOUT, "tick timeout")

    # after hello-ok

    def _event(self, event: Event) -> None:
        if event.event == "node.invoke.request" and self.options.role == "node":
            self._invoke(event.payload if isinstance(event.payload, dict) else {})
        elif self.onEvent is not None:
            self.onEvent(event)

    def _invoke(self, request: dict[str, Any]) -> None:
        command = request.get("command")
        handler = self.options.handlers.get(command) if isinstance(command, str) else None
        answer: dict[str, Any] = {"id": request.get("id"), "nodeId": request.get("nodeId")}
        if handler is None:
            answer.update(ok=False, error={"code": "UNAVAILABLE", "message": "unknown command"})
            self.request("node.invoke.result", answer).addErrback(lambda _: None)
            return
        try:
            raw = request.get("paramsJSON")
            params = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            params = None
        result = maybeDeferred(handler, str(command), params)

        def done(payload: Any) -> None:
            answer.update(ok=True, payloadJSON=json.dumps(payload))
            self.request("node.invoke.result", answer).addErrback(lambda _: None)

        def failed(failure: Failure) -> None:
            answer.update(ok=False, error={"code": "UNAVAILABLE", "message": str(failure.value)})
            self.request("node.invoke.result", answer).addErrback(lambda _: None)

        result.addCallbacks(done, failed)

    def request(self, method: str, params: Any = None) -> Deferred[Any]:
        """Send a request; the Deferred fires with the payload or fails with L{GatewayError}."""
        if self._closed or self.transport is None:
            return _failed(GatewayError("UNAVAILABLE", "not connected"))
        self._ids += 1
        requestId = str(self._ids)
        waiting: Deferred[Any] = Deferred()
        self._pending[requestId] = waiting
        self.transport.sendTextMessage(encodeFrame(Request(requestId, method, params)))
        return waiting

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close the WebSocket."""
        if not self._closed and self.transport is not None:
            self._closed = True
            self.transport.loseConnection(code, reason)  # type: ignore[call-arg]


def _failed(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(error)
    return d


class _Factory:
    def __init__(self, make: Callable[[], GatewayClientProtocol]) -> None:
        self.make = make

    def buildProtocol(self, url: str) -> GatewayClientProtocol:
        return self.make()


@implementer(IPolicyForHTTPS)
class TrustPolicy:
    """TLS for C{wss://}: trust C{caCert} (PEM) for the gateway's certificate, or, with
    C{verify=False}, accept any certificate (a self-signed appliance, at your own risk)."""

    def __init__(self, caCert: bytes | None = None, verify: bool = True) -> None:
        self._trust = ssl.Certificate.loadPEM(caCert) if caCert is not None else None
        self._verify = verify

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        """The client TLS options for C{hostname}."""
        if not self._verify:
            return ssl.CertificateOptions(verify=False)
        return ssl.optionsForClientTLS(hostname.decode("ascii"), trustRoot=self._trust)


def connectWebSocket(
    reactor: IReactorTCP,
    url: str,
    make: Callable[[], GatewayClientProtocol],
    tlsPolicy: IPolicyForHTTPS | None = None,
) -> Deferred[GatewayClientProtocol]:
    """Open a WebSocket to C{url} speaking L{GatewayClientProtocol}.

    @param tlsPolicy: for C{wss://}; default: the system's certificate authorities.
    """
    if tlsPolicy is None:
        endpoint = WebSocketClientEndpoint.new(reactor, url)
    else:
        endpoint = WebSocketClientEndpoint.new(reactor, url, tlsPolicy)
    result: Deferred[GatewayClientProtocol] = Deferred()
    handed: list[GatewayClientProtocol] = []

    def settle(outcome: Any) -> None:
        if not result.called:
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                handed.append(outcome)
                result.callback(outcome)

    def build() -> GatewayClientProtocol:
        # twisted.web.websocket never fires connect() when the connection is lost
        # before the upgrade (a TLS failure, say), so the protocol's loss decides too.
        protocol = make()

        def lost(_: None) -> None:
            if protocol not in handed:
                # Nobody was given this protocol (not yet, or the caller stopped waiting:
                # a deadline, Ctrl-C), so nobody waits on its handshake.
                protocol.connected.addErrback(lambda _: None)
            if not result.called:
                settle(Failure(GatewayError("UNAVAILABLE", "connection lost before the upgrade")))

        protocol.disconnected.addCallback(lost)
        return protocol

    ensureDeferred(endpoint.connect(_Factory(build))).addBoth(settle)
    return result


class GatewayClient:
    """Keeps one gateway connection up, reconnecting with exponential back-off.

    @ivar protocol: the connected protocol, or C{None} between connections.
    @ivar stopped: why reconnecting stopped (a L{GatewayError}), if it did.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        url: str,
        options: ClientOptions,
        onEvent: Callable[[Event], None] | None = None,
        connect: Callable[..., Deferred[GatewayClientProtocol]] = connectWebSocket,
        initialDelay: float = 1.0,
        maxDelay: float = 30.0,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.reactor = reactor
        self.url = url
        self.options = options
        self.onEvent = onEvent
        self._connect = connect
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
        self._jitter = jitter
        self.delay = initialDelay
        self.protocol: GatewayClientProtocol | None = None
        self.stopped: GatewayError | None = None
        self._running = False
        self._retry: IDelayedCall | None = None
        self._waiters: list[Deferred[GatewayClientProtocol]] = []

    def start(self) -> None:
        """Connect, and keep connecting."""
        self._running = True
        self.stopped = None
        self._attempt()

    def stop(self) -> None:
        """Disconnect and stop reconnecting."""
        self._running = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self.protocol is not None:
            self.protocol.close()

    def whenConnected(self) -> Deferred[GatewayClientProtocol]:
        """Fires with the protocol after the next (or current) hello-ok."""
        if self.protocol is not None:
            d: Deferred[GatewayClientProtocol] = Deferred()
            d.callback(self.protocol)
            return d
        d = Deferred()
        self._waiters.append(d)
        return d

    def _attempt(self) -> None:
        self._retry = None
        if not self._running:
            return
        made: list[GatewayClientProtocol] = []

        def make() -> GatewayClientProtocol:
            protocol = GatewayClientProtocol(self.reactor, self.options, self.onEvent)
            made.append(protocol)
            return protocol

        opened = self._connect(self.reactor, self.url, make)
        opened.addCallback(lambda protocol: protocol.connected)
        opened.addCallbacks(self._connected, self._failed, errbackArgs=(made,))

    def _connected(self, protocol: GatewayClientProtocol) -> None:
        self.protocol = protocol
        self.delay = self.initialDelay
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(protocol)
        protocol.disconnected.addCallback(lambda _: self._lost(protocol))

    def _lost(self, protocol: GatewayClientProtocol) -> None:
        if self.protocol is protocol:
            self.protocol = None
        self._schedule()

    def _failed(self, failure: Failure, made: list[GatewayClientProtocol]) -> None:
        error = failure.value if isinstance(failure.value, GatewayError) else None
        if error is not None and error.detailCode in STOP_RECONNECT_CODES:
            self.log.warn(
                "Gateway refused the connection ({code}: {message}); not reconnecting",
                code=error.detailCode,
                message=error.message,
            )
            self.stopped = error
            self._running = False
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.errback(error)
            return
        self._schedule()

    def _schedule(self) -> None:
        if not self._running:
            return
        delay = self.delay * (0.5 + self._jitter() / 2)
        self.delay = min(self.delay * 2, self.maxDelay)
        self._retry = self.reactor.callLater(delay, self._attempt)
