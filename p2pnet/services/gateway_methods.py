# -*- test-case-name: test.unit.test_gateway_service,test.unit.test_gateway_openclaw_cli -*-
"""The control gateway's methods: authorisation, dispatch and one handler per method.

L{GatewayMethods.dispatch} checks the caller's role and scopes (gateway.md §5.1) and
runs the handler with one L{RequestContext}. A handler returns the result (or a
Deferred of it), raises L{MethodError} for an error answer, or returns L{ANSWERED_LATER}
when it answers itself (C{node.invoke}, and the methods that close sockets after
answering).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pnet.codecs.gateway_frames import CloseCode, ErrorCode, Event, Request, errorShape
from p2pnet.ratelog import RateLimitedLog
from p2pnet.services.gateway_cluster import GatewayCluster
from p2pnet.services.gateway_handshake import GatewaySession
from p2pnet.services.gateway_nodes import NodeRegistry
from p2pnet.services.gateway_pairing import DevicePairing, MethodError
from p2pnet.services.gateway_policy import ADMIN, READ, authorizeMethod
from p2pnet.stats import Stats
from p2pnet.store.gateway import GatewayStoreInterface, PairedDevice

__all__ = [
    "ANSWERED_LATER",
    "GatewayMethods",
    "INVOKE_TIMEOUT",
    "MAX_INVOKE_TIMEOUT",
    "MAX_UNAUTHORIZED_CALLS",
    "MethodsHost",
    "RequestContext",
    "param",
]

#: Default and largest C{node.invoke} timeout, seconds.
INVOKE_TIMEOUT = 30.0
MAX_INVOKE_TIMEOUT = 600.0
#: Consecutive role denials after which a connection is closed.
MAX_UNAUTHORIZED_CALLS = 10

#: Marker: the handler answers later itself.
ANSWERED_LATER = object()


class MethodsHost(Protocol):
    """What the method handlers read and call on the gateway."""

    clock: IReactorTime
    stats: Stats
    store: GatewayStoreInterface
    pairing: DevicePairing
    nodes: NodeRegistry[GatewaySession]
    badInput: RateLimitedLog
    #: The other gateways of a cluster (cross-gateway node.invoke), or C{None}.
    cluster: GatewayCluster | None

    @property
    def clients(self) -> Mapping[str, GatewaySession]:
        """The connected clients by connection id."""

    def newId(self) -> str:
        """A fresh UUID string."""

    def nowMs(self) -> int:
        """The clock in epoch milliseconds."""

    def health(self) -> dict[str, Any]:
        """Liveness of every service."""

    def status(self) -> dict[str, Any]:
        """Every service's state and counters."""

    def broadcast(
        self,
        event: str,
        payload: Any,
        *,
        dropIfSlow: bool = False,
        scope: str | None = None,
        stateful: bool = False,
    ) -> None:
        """Send an event to every client (or operators holding C{scope})."""


class RequestContext:
    """Everything a handler gets: who asks, what, and the gateway it runs in.

    (A plain class with slots: one is made per request, on the hot path.)
    """

    __slots__ = ("gateway", "session", "request", "params")

    def __init__(
        self, gateway: MethodsHost, session: GatewaySession, request: Request, params: Any
    ) -> None:
        self.gateway = gateway
        self.session = session
        self.request = request
        self.params = params

    def respond(self, payload: Any = None, error: dict | None = None) -> None:
        """Answer this request (for handlers that return L{ANSWERED_LATER})."""
        self.session.respond(self.request.id, payload, error)


Handler = Callable[[RequestContext], Any]


def param(params: Any, name: str, kind: type) -> Any:
    """C{params[name]} if it is a C{kind} (a non-empty one for C{str}), else the
    C{INVALID_REQUEST} answer."""
    if not isinstance(params, dict):
        raise MethodError(ErrorCode.INVALID_REQUEST, "params must be an object")
    value = params.get(name)
    if not isinstance(value, kind) or (kind is str and not value):
        raise MethodError(ErrorCode.INVALID_REQUEST, f"{name} is required")
    return value


def nodeIdOf(session: GatewaySession) -> str:
    """The node id of a node session: its device id, else its C{client.id}."""
    assert session.params is not None
    return session.deviceId or session.params.client.id


def sessionsOf(
    sessions: Iterable[GatewaySession], deviceId: str, role: str | None
) -> list[GatewaySession]:
    """The sessions of C{deviceId} (in C{role}, unless C{None})."""
    return [
        s for s in sessions if s.deviceId == deviceId and (role is None or s.role == role)
    ]


class GatewayMethods:
    """The method table and its dispatcher.

    @ivar handlers: method name to handler; L{register} adds more (the wiring adds
        the sibling services' listings this way).
    """

    log = Logger()

    def __init__(self, host: MethodsHost) -> None:
        self.host = host
        self.handlers: dict[str, Handler] = {
            "health": lambda c: c.gateway.health(),
            "status": lambda c: c.gateway.status(),
            "node.list": self.nodeList,
            "node.describe": self.nodeDescribe,
            "node.invoke": self.nodeInvoke,
            "node.invoke.result": self.nodeInvokeResult,
            "node.event": self.nodeEvent,
            "device.pair.list": self.pairList,
            "device.pair.approve": self.pairApprove,
            "device.pair.reject": self.pairReject,
            "device.pair.remove": self.pairRemove,
            "device.pair.rename": self.pairRename,
            "device.token.rotate": self.tokenRotate,
            "device.token.revoke": self.tokenRevoke,
        }

    def register(self, method: str, handler: Handler) -> None:
        """Serve C{method} with C{handler}."""
        self.handlers[method] = handler

    @property
    def names(self) -> tuple[str, ...]:
        """The methods served, for C{hello-ok.features.methods}."""
        return tuple(self.handlers)

    def dispatch(self, session: GatewaySession, request: Request) -> None:
        """Authorise and run one request of a connected client."""
        self.host.stats.add("requests")
        if request.method == "connect":
            session.respond(request.id, error=errorShape(
                ErrorCode.INVALID_REQUEST, "connect is only valid as the first request"))
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
                session.respond(request.id, error=errorShape(
                    ErrorCode.FORBIDDEN,
                    check.message,
                    {"code": "MISSING_SCOPE", "missingScope": check.missingScope,
                     "requiredScopes": [check.missingScope]},
                ))
            return
        session.denials = 0
        handler = self.handlers.get(request.method)
        if handler is None:
            session.respond(request.id, error=errorShape(
                ErrorCode.INVALID_REQUEST, f"unknown method: {request.method}"))
            return
        params = request.params if request.params is not None else {}
        context = RequestContext(self.host, session, request, params)

        def answer(payload: Any) -> None:
            if payload is not ANSWERED_LATER:
                context.respond(payload)

        def failed(failure: Failure) -> None:
            if isinstance(failure.value, MethodError):
                context.respond(error=failure.value.error)
                return
            # A bug a client can trigger at will: counted, and logged at a bounded rate.
            self.host.stats.add("handler_errors")
            self.host.badInput.warn(
                "gateway-method",
                "Gateway method {method} failed: {error}",
                method=request.method,
                error=f"{type(failure.value).__name__}: {failure.value!r}"[:200],
            )
            context.respond(error=errorShape(ErrorCode.UNAVAILABLE, "internal error"))

        # Most methods answer at once; only those that wait get a Deferred's overhead.
        try:
            result = handler(context)
        except Exception:
            failed(Failure())
            return
        if isinstance(result, Deferred):
            result.addCallbacks(answer, failed)
        else:
            answer(result)

    # -- nodes ---------------------------------------------------------------------------

    def describeNode(self, nodeId: str) -> dict[str, Any] | None:
        """C{node.describe}'s shape for C{nodeId}, or C{None} when it is unknown."""
        host = self.host
        session = host.nodes.connected.get(nodeId)
        device = host.store.devices.get(nodeId)
        node = host.store.nodes.get(nodeId)
        if session is None:
            if node is None and (device is None or "node" not in device.roles):
                return None
            return {
                "nodeId": nodeId,
                "displayName": node.displayName if node else device.displayName,  # type: ignore[union-attr]
                "platform": node.platform if node else device.platform,  # type: ignore[union-attr]
                "commands": list(node.commands) if node else [],
                "paired": node is not None,
                "connected": False,
            }
        params = session.params
        assert params is not None
        client = params.client
        return {
            "nodeId": nodeId,
            "connId": session.connId,
            "displayName": node.displayName if node and node.displayName
            else client.displayName,
            "platform": client.platform,
            "version": client.version,
            "deviceFamily": client.deviceFamily,
            "modelIdentifier": client.modelIdentifier,
            "remoteIp": session.info.clientIp,
            "caps": list(params.caps),
            "commands": list(session.commands),
            "declaredCommands": list(params.commands or ()),
            "paired": node is not None,
            "connected": True,
            "connectedAtMs": int(session.openedAt * 1000),
        }

    def nodeList(self, context: RequestContext) -> Any:
        """C{node.list}: connected nodes, then paired ones that are not."""
        host = self.host
        ids = dict.fromkeys(
            [*host.nodes.connected, *host.store.nodes,
             *(d for d, p in host.store.devices.items() if "node" in p.roles)]
        )
        return {"nodes": [self.describeNode(nodeId) for nodeId in ids]}

    def nodeDescribe(self, context: RequestContext) -> Any:
        """C{node.describe {nodeId}}."""
        node = self.describeNode(param(context.params, "nodeId", str))
        if node is None:
            raise MethodError(ErrorCode.INVALID_REQUEST, "unknown node", {"code": "NOT_FOUND"})
        return node

    def nodeInvoke(self, context: RequestContext) -> Any:
        """C{node.invoke}: send C{node.invoke.request} to the node, answer on its result
        (gateway.md §5.2)."""
        params = context.params
        nodeId = param(params, "nodeId", str)
        command = param(params, "command", str)
        idempotencyKey = param(params, "idempotencyKey", str)
        timeoutMs = params.get("timeoutMs")
        if timeoutMs is None:
            timeout = INVOKE_TIMEOUT
        elif isinstance(timeoutMs, int) and not isinstance(timeoutMs, bool) and timeoutMs > 0:
            timeout = min(timeoutMs / 1000, MAX_INVOKE_TIMEOUT)
        else:
            raise MethodError(ErrorCode.INVALID_REQUEST, "timeoutMs must be a positive integer")
        nodes = self.host.nodes
        node = nodes.connected.get(nodeId)
        if node is None and self.host.cluster is not None:
            return self._invokeElsewhere(context, nodeId, command, timeout)
        if node is None:
            raise MethodError(
                ErrorCode.UNAVAILABLE, "node not connected", {"code": "NOT_CONNECTED"}
            )
        if command not in node.commands:
            raise MethodError(
                ErrorCode.INVALID_REQUEST,
                f"command not allowed: {command}",
                {"code": "COMMAND_NOT_ALLOWED"},
            )
        if not nodes.canInvoke(context.session):
            raise MethodError(ErrorCode.UNAVAILABLE, "too many pending invokes")
        invokeId = self.host.newId()
        nodes.invoke(invokeId, nodeId, command, context.session, context.request.id, timeout)
        node.send(Event("node.invoke.request", {
            "id": invokeId,
            "nodeId": nodeId,
            "command": command,
            "paramsJSON": None if "params" not in params else json.dumps(params["params"]),
            "timeoutMs": int(timeout * 1000),
            "idempotencyKey": idempotencyKey,
        }))
        return ANSWERED_LATER

    def _invokeElsewhere(self, context: RequestContext, nodeId: str, command: str,
                         timeout: float) -> Any:
        """The node is not connected here: wait here, as for a local node, while the
        gateway holding it runs the invoke (L{p2pnet.services.gateway_cluster})."""
        cluster, nodes = self.host.cluster, self.host.nodes
        assert cluster is not None
        if not nodes.canInvoke(context.session):
            raise MethodError(ErrorCode.UNAVAILABLE, "too many pending invokes")
        invokeId = self.host.newId()
        nodes.invoke(invokeId, nodeId, command, context.session, context.request.id, timeout)
        params = context.params.get("params")

        def route(gateway: str | None) -> None:
            pending = nodes.invokes.get(invokeId)
            if pending is None:
                return  # timed out, or the operator left
            if gateway is None:
                nodes.finish(pending, error=errorShape(
                    ErrorCode.UNAVAILABLE, "node not connected", {"code": "NOT_CONNECTED"}))
                return
            cluster.forwardInvoke(gateway, invokeId, nodeId, command, params, timeout)

        cluster.holder(nodeId).addCallback(route)
        return ANSWERED_LATER

    def invokeForOtherGateway(self, nodeId: str, command: str, params: Any, timeout: float,
                              caller: Any, requestId: str) -> dict | None:
        """Run an invoke another gateway's operator asked for on a node connected here;
        an error dict when it cannot (not connected, command not approved here)."""
        nodes = self.host.nodes
        node = nodes.connected.get(nodeId)
        if node is None:
            return errorShape(ErrorCode.UNAVAILABLE, "node not connected",
                              {"code": "NOT_CONNECTED"})
        if command not in node.commands:
            return errorShape(ErrorCode.INVALID_REQUEST, f"command not allowed: {command}",
                              {"code": "COMMAND_NOT_ALLOWED"})
        invokeId = self.host.newId()
        nodes.invoke(invokeId, nodeId, command, caller, requestId, timeout)
        node.send(Event("node.invoke.request", {
            "id": invokeId, "nodeId": nodeId, "command": command,
            "paramsJSON": None if params is None else json.dumps(params),
            "timeoutMs": int(timeout * 1000), "idempotencyKey": invokeId,
        }))
        return None

    def resultFromOtherGateway(self, invokeId: str, payload: Any, error: dict | None) -> None:
        """The gateway holding the node answered the invoke waiting here as C{invokeId}."""
        nodes = self.host.nodes
        pending = nodes.invokes.get(invokeId)
        if pending is not None:
            nodes.finish(pending, payload, error)

    def nodeInvokeResult(self, context: RequestContext) -> Any:
        """C{node.invoke.result} from a node: end the invoke it answers."""
        params = context.params
        invokeId = param(params, "id", str)
        nodeId = param(params, "nodeId", str)
        ok = params.get("ok")
        if not isinstance(ok, bool):
            raise MethodError(ErrorCode.INVALID_REQUEST, "ok must be a boolean")
        if nodeId != nodeIdOf(context.session):
            raise MethodError(ErrorCode.INVALID_REQUEST, "nodeId mismatch")
        nodes = self.host.nodes
        pending = nodes.awaiting(invokeId, nodeId)
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
            nodes.finish(pending, {
                "ok": True,
                "nodeId": nodeId,
                "command": pending.command,
                "payload": payload,
                "payloadJSON": payloadJSON if isinstance(payloadJSON, str)
                else json.dumps(payload),
            })
        else:
            nodeError = params.get("error") if isinstance(params.get("error"), dict) else {}
            code = nodeError.get("code")
            message = nodeError.get("message")
            nodes.finish(pending, error=errorShape(
                code if isinstance(code, str) and code else ErrorCode.UNAVAILABLE,
                message if isinstance(message, str) and message else "node invoke failed",
                {"nodeId": nodeId, "command": pending.command},
            ))
        return {"ok": True}

    def nodeEvent(self, context: RequestContext) -> Any:
        """C{node.event} from a node: sent on to C{operator.read} holders."""
        params = context.params
        event = param(params, "event", str)
        payload = params.get("payload")
        if payload is None and isinstance(params.get("payloadJSON"), str):
            try:
                payload = json.loads(params["payloadJSON"])
            except ValueError as e:
                raise MethodError(ErrorCode.INVALID_REQUEST, "payloadJSON is not JSON") from e
        self.host.broadcast(
            "node.event",
            {"nodeId": nodeIdOf(context.session), "event": event, "payload": payload},
            scope=READ,
        )
        return {"ok": True}

    # -- device pairing and tokens -------------------------------------------------------

    def pairList(self, context: RequestContext) -> Any:
        """C{device.pair.list}: pending requests and paired devices (with labels)."""
        store = self.host.store
        listing = self.host.pairing.listing()
        for device in listing["paired"]:
            deviceId = device["deviceId"]
            if deviceId in store.labels:
                device["operatorLabel"] = store.labels[deviceId]
            device["tokens"] = [
                token.summary() for (owner, _), token in store.tokens.items()
                if owner == deviceId
            ]
        return listing

    def pairRename(self, context: RequestContext) -> Any:
        """C{device.pair.rename {deviceId, label}}: an operator's name for a device."""
        deviceId = param(context.params, "deviceId", str)
        label = param(context.params, "label", str).strip()
        if not label:
            raise MethodError(ErrorCode.INVALID_REQUEST, "label required")
        if deviceId not in self.host.store.devices:
            raise MethodError(ErrorCode.INVALID_REQUEST, "unknown deviceId")
        return self.host.store.saveLabel(deviceId, label).addCallback(
            lambda _: {"deviceId": deviceId, "label": label})

    def pairApprove(self, context: RequestContext) -> Any:
        """C{device.pair.approve {requestId}}."""
        requestId = param(context.params, "requestId", str)
        return self.host.pairing.approve(requestId).addCallback(
            lambda device: {"requestId": requestId, "device": device.describe()}
        )

    def pairReject(self, context: RequestContext) -> Any:
        """C{device.pair.reject {requestId}}."""
        requestId = param(context.params, "requestId", str)
        pairing = self.host.pairing.reject(requestId)
        return {"requestId": requestId, "deviceId": pairing.deviceId, "rejected": True}

    def pairRemove(self, context: RequestContext) -> Any:
        """C{device.pair.remove {deviceId}}: forget it and close its sockets."""
        deviceId = param(context.params, "deviceId", str)
        if deviceId not in self.host.store.devices:
            raise MethodError(ErrorCode.INVALID_REQUEST, "unknown device")
        removed = self.host.store.removeDevice(deviceId)
        return self.answerThenClose(
            removed, context, {"deviceId": deviceId, "removed": True}, deviceId, None
        )

    def tokenTarget(
        self, context: RequestContext, scopes: tuple[str, ...] | None
    ) -> tuple[str, str, PairedDevice]:
        """The device and role a token change is for, if the caller may change it
        (gateway.md §2.5: without admin, only its own device, within its own scopes)."""
        session = context.session
        deviceId = param(context.params, "deviceId", str)
        role = param(context.params, "role", str)
        device = self.host.store.devices.get(deviceId)
        allowed = device is not None and role in device.roles
        if allowed and ADMIN not in session.scopes:
            allowed = session.deviceId == deviceId and (
                scopes is None or set(scopes) <= set(session.scopes)
            )
        if allowed and scopes is not None:
            assert device is not None
            allowed = set(scopes) <= set(device.scopes)
        if not allowed or device is None:
            # One public answer for an unknown device and for a refused one.
            raise MethodError(
                ErrorCode.INVALID_REQUEST,
                "device token change denied",
                {"code": "DEVICE_TOKEN_DENIED"},
            )
        return deviceId, role, device

    def tokenRotate(self, context: RequestContext) -> Any:
        """C{device.token.rotate {deviceId, role, scopes?}}."""
        params = context.params
        scopes = params.get("scopes") if isinstance(params, dict) else None
        if scopes is not None and (
            not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes)
        ):
            raise MethodError(ErrorCode.INVALID_REQUEST, "scopes must be a list of strings")
        deviceId, role, _ = self.tokenTarget(context, None if scopes is None else tuple(scopes))
        token, saved = self.host.pairing.rotate(
            deviceId, role, None if scopes is None else tuple(scopes)
        )
        result = {
            "deviceId": deviceId,
            "role": role,
            "token": token.token,
            "scopes": list(token.scopes),
            "rotatedAtMs": token.rotatedAtMs,
        }
        return self.answerThenClose(saved, context, result, deviceId, role)

    def tokenRevoke(self, context: RequestContext) -> Any:
        """C{device.token.revoke {deviceId, role}}."""
        deviceId, role, _ = self.tokenTarget(context, None)
        revoked = self.host.pairing.revoke(deviceId, role)
        if revoked is None:
            raise MethodError(
                ErrorCode.INVALID_REQUEST,
                "device token change denied",
                {"code": "DEVICE_TOKEN_DENIED"},
            )
        result = {"deviceId": deviceId, "role": role, "revokedAtMs": self.host.nowMs()}
        return self.answerThenClose(revoked, context, result, deviceId, role)

    def answerThenClose(
        self,
        written: Deferred[None],
        context: RequestContext,
        result: dict[str, Any],
        deviceId: str,
        role: str | None,
    ) -> Deferred[object]:
        """Once C{written} is stored: answer, then close C{deviceId}'s sockets with 4001.

        The caller's own socket may be among them, so the answer goes first.
        """

        def done(_: None) -> object:
            context.respond(result)
            for target in sessionsOf(self.host.clients.values(), deviceId, role):
                target.close(CloseCode.AUTH_CHANGED, "device removed")
            return ANSWERED_LATER

        return written.addCallback(done)



