# -*- test-case-name: test.unit.test_gateway_frames -*-
"""Control-gateway frames: JSON text messages on a WebSocket (sans-IO).

Four frame kinds, discriminated on C{type}: L{Request} (C{req}), L{Response} (C{res}),
L{Event} (C{event}) and L{Cancel} (C{cancel}). Schemas are strict like the reference
gateway's (unknown properties are rejected). L{parseConnectParams} validates the
handshake's C{connect} parameters field by field. Nothing here reads a clock or a socket.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CLIENT_IDS",
    "CLIENT_MODES",
    "CloseCode",
    "ConnectParams",
    "ClientInfo",
    "DeviceInfo",
    "ErrorCode",
    "Event",
    "FrameError",
    "MAX_BUFFERED_BYTES",
    "MAX_PAYLOAD",
    "MAX_PREAUTH_PAYLOAD",
    "MAX_PROTOCOL",
    "MIN_PROTOCOL",
    "Request",
    "Response",
    "Cancel",
    "decodeFrame",
    "encodeFrame",
    "errorShape",
    "negotiateProtocol",
    "parseConnectParams",
    "truncateReason",
]

#: Most bytes of one frame before hello-ok (1009 above it; gateway.md §1.5).
MAX_PREAUTH_PAYLOAD = 64 * 1024
#: Most bytes of one frame after hello-ok (advertised as C{policy.maxPayload}).
MAX_PAYLOAD = 25 * 1024 * 1024
#: Unsent bytes after which a client is a slow consumer (C{policy.maxBufferedBytes}).
MAX_BUFFERED_BYTES = 50 * 1024 * 1024

#: Protocol versions this gateway speaks; hello-ok answers the highest in the overlap.
MIN_PROTOCOL = 3
MAX_PROTOCOL = 4

#: C{client.id} values of the reference schema (an enum there too).
CLIENT_IDS = frozenset(
    {
        "webchat-ui",
        "openclaw-control-ui",
        "openclaw-tui",
        "webchat",
        "cli",
        "gateway-client",
        "openclaw-macos",
        "openclaw-ios",
        "openclaw-android",
        "node-host",
        "test",
        "fingerprint",
        "openclaw-probe",
        "openclaw-browser-copilot",
        "openclaw-linux",
        "openclaw-watchos",
        "openclaw-worker",
    }
)

#: C{client.mode} values of the reference schema.
CLIENT_MODES = frozenset({"webchat", "cli", "ui", "backend", "node", "probe", "test", "worker"})


class CloseCode:
    """WebSocket close codes the gateway uses (gateway.md §3.5)."""

    NORMAL = 1000
    PROTOCOL_MISMATCH = 1002
    POLICY = 1008
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TICK_TIMEOUT = 4000
    AUTH_CHANGED = 4001


class ErrorCode:
    """C{error.code} values of response frames."""

    NOT_LINKED = "NOT_LINKED"
    NOT_PAIRED = "NOT_PAIRED"
    AGENT_TIMEOUT = "AGENT_TIMEOUT"
    INVALID_REQUEST = "INVALID_REQUEST"
    APPROVAL_NOT_FOUND = "APPROVAL_NOT_FOUND"
    UNAVAILABLE = "UNAVAILABLE"
    FORBIDDEN = "FORBIDDEN"


class FrameError(ValueError):
    """The peer sent something that is not a valid frame.

    @ivar badJson: the text was not JSON at all (the pre-auth rule closes with 1000).
    @ivar frameId: the frame's C{id} if one could be read, for the error response.
    """

    def __init__(self, message: str, badJson: bool = False, frameId: str | None = None):
        super().__init__(message)
        self.badJson = badJson
        self.frameId = frameId


@dataclass(frozen=True, slots=True)
class Request:
    """C{{type:"req", id, method, params?}}."""

    id: str
    method: str
    params: Any = None


@dataclass(frozen=True, slots=True)
class Response:
    """C{{type:"res", id, ok, payload?, error?}}."""

    id: str
    ok: bool
    payload: Any = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """C{{type:"event", event, payload?, seq?, stateVersion?}}."""

    event: str
    payload: Any = None
    seq: int | None = None
    stateVersion: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    """C{{type:"cancel", id}}: the client gives up on a pending request."""

    id: str


Frame = Request | Response | Event | Cancel

_ALLOWED = {
    "req": {"type", "id", "method", "params"},
    "res": {"type", "id", "ok", "payload", "error"},
    "event": {"type", "event", "payload", "seq", "stateVersion"},
    "cancel": {"type", "id"},
}


def _nonEmpty(obj: dict[str, Any], name: str, frameId: str | None) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise FrameError(f"{name} must be a non-empty string", frameId=frameId)
    return value


def _isInt(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checkError(error: Any) -> dict[str, Any]:
    if not isinstance(error, dict):
        raise FrameError("error must be an object")
    for name in ("code", "message"):
        if not isinstance(error.get(name), str) or not error[name]:
            raise FrameError(f"error.{name} must be a non-empty string")
    extra = set(error) - {"code", "message", "details", "retryable", "retryAfterMs"}
    if extra:
        raise FrameError(f"error has unexpected property {sorted(extra)[0]!r}")
    return error


#: Compact JSON, built once (C{json.dumps} with options builds an encoder per call).
_encodeJson = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


#: A JSON escape of a UTF-16 surrogate (C{\\ud800} to C{\\udfff}): only text holding one
#: can decode to a string that is not valid Unicode (a lone surrogate).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _validUnicode(obj: Any) -> bool:
    """Whether every string in C{obj} (keys included) can be sent back as UTF-8."""
    try:
        _encodeJson(obj).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decodeFrame(text: str | bytes) -> Frame:
    """One frame from a WebSocket message, or L{FrameError}.

    JSON lets a string escape a lone UTF-16 surrogate (C{"\\ud800"}), which is no Unicode
    character and cannot be written back as UTF-8 (in an echoed C{id}, an error message
    naming a key, a close reason): such a frame is refused here, as not valid text
    (gateway.md §1.5), so nothing later holds a string it cannot send.
    """
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise FrameError(f"not JSON: {e}", badJson=True) from None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None and not _validUnicode(obj):
        raise FrameError("a string holds a lone UTF-16 surrogate")
    if not isinstance(obj, dict):
        raise FrameError("a frame is a JSON object")
    rawId = obj.get("id")
    frameId = rawId if isinstance(rawId, str) and rawId else None
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in _ALLOWED:
        raise FrameError("type must be req, res, event or cancel", frameId=frameId)
    extra = set(obj) - _ALLOWED[kind]
    if extra:
        raise FrameError(f"unexpected property {sorted(extra)[0]!r}", frameId=frameId)
    if kind == "req":
        return Request(
            _nonEmpty(obj, "id", frameId), _nonEmpty(obj, "method", frameId), obj.get("params")
        )
    if kind == "cancel":
        return Cancel(_nonEmpty(obj, "id", frameId))
    if kind == "res":
        ok = obj.get("ok")
        if not isinstance(ok, bool):
            raise FrameError("ok must be a boolean", frameId=frameId)
        error = obj.get("error")
        return Response(
            _nonEmpty(obj, "id", frameId),
            ok,
            obj.get("payload"),
            None if error is None else _checkError(error),
        )
    seq = obj.get("seq")
    if seq is not None and not (_isInt(seq) and seq >= 0):
        raise FrameError("seq must be an integer >= 0")
    version = obj.get("stateVersion")
    if version is not None:
        if (
            not isinstance(version, dict)
            or set(version) != {"presence", "health"}
            or not all(_isInt(v) and v >= 0 for v in version.values())
        ):
            raise FrameError("stateVersion must be {presence, health} integers >= 0")
    return Event(_nonEmpty(obj, "event", None), obj.get("payload"), seq, version)


def encodeFrame(frame: Frame) -> str:
    """The JSON text of C{frame}; optional fields that are C{None} are left out."""
    if isinstance(frame, Request):
        obj: dict[str, Any] = {"type": "req", "id": frame.id, "method": frame.method}
        if frame.params is not None:
            obj["params"] = frame.params
    elif isinstance(frame, Response):
        obj = {"type": "res", "id": frame.id, "ok": frame.ok}
        if frame.payload is not None:
            obj["payload"] = frame.payload
        if frame.error is not None:
            obj["error"] = frame.error
    elif isinstance(frame, Event):
        obj = {"type": "event", "event": frame.event}
        if frame.payload is not None:
            obj["payload"] = frame.payload
        if frame.seq is not None:
            obj["seq"] = frame.seq
        if frame.stateVersion is not None:
            obj["stateVersion"] = frame.stateVersion
    else:
        obj = {"type": "cancel", "id": frame.id}
    return _encodeJson(obj)


def errorShape(
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    retryable: bool | None = None,
    retryAfterMs: int | None = None,
) -> dict[str, Any]:
    """An ErrorShape object: C{{code, message, details?, retryable?, retryAfterMs?}}."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    if retryable is not None:
        error["retryable"] = retryable
    if retryAfterMs is not None:
        error["retryAfterMs"] = retryAfterMs
    return error


def truncateReason(text: str, limit: int = 120) -> str:
    """C{text} cut to at most C{limit} UTF-8 bytes without splitting a character."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return raw.decode("utf-8")
    return raw[:limit].decode("utf-8", "ignore")


# -- connect params ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """C{connect.params.client}."""

    id: str
    version: str
    platform: str
    mode: str
    displayName: str | None = None
    deviceFamily: str | None = None
    modelIdentifier: str | None = None
    instanceId: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """C{connect.params.device}: the signed device identity."""

    id: str
    publicKey: str
    signature: str
    signedAt: int
    nonce: str


@dataclass(frozen=True, slots=True)
class ConnectParams:
    """Validated parameters of the C{connect} request."""

    minProtocol: int
    maxProtocol: int
    client: ClientInfo
    role: str | None = None
    scopes: tuple[str, ...] | None = None
    caps: tuple[str, ...] = ()
    commands: tuple[str, ...] | None = None
    permissions: dict[str, bool] | None = None
    pathEnv: str | None = None
    device: DeviceInfo | None = None
    auth: dict[str, str] = field(default_factory=dict)
    locale: str | None = None
    userAgent: str | None = None


class _Schema:
    """Collects validation messages with their JSON paths."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(f"at {path or '/'}: {message}")

    def obj(self, value: Any, path: str, required: set[str], allowed: set[str]) -> bool:
        if not isinstance(value, dict):
            self.fail(path, "must be object")
            return False
        for name in sorted(required - set(value)):
            self.fail(path, f"must have required property '{name}'")
        for name in sorted(set(value) - allowed):
            self.fail(path, f"unexpected property '{name}'")
        return True

    def string(self, value: Any, path: str, nonEmpty: bool = False) -> None:
        if not isinstance(value, str):
            self.fail(path, "must be string")
        elif nonEmpty and not value.strip():
            self.fail(path, "must NOT have fewer than 1 characters")

    def strings(self, value: Any, path: str) -> None:
        if not isinstance(value, list):
            self.fail(path, "must be array")
            return
        for i, item in enumerate(value):
            self.string(item, f"{path}/{i}")

    def integer(self, value: Any, path: str, minimum: int) -> None:
        if not _isInt(value):
            self.fail(path, "must be integer")
        elif value < minimum:
            self.fail(path, f"must be >= {minimum}")

    def enum(self, value: Any, path: str, allowed: frozenset[str]) -> None:
        if not isinstance(value, str) or value not in allowed:
            self.fail(path, "must be equal to one of the allowed values")


_CONNECT_FIELDS = {
    "minProtocol", "maxProtocol", "client", "caps", "commands", "permissions", "pathEnv",
    "role", "scopes", "device", "auth", "locale", "userAgent",
}  # fmt: skip
_CLIENT_FIELDS = {
    "id", "displayName", "version", "platform", "deviceFamily", "modelIdentifier", "mode",
    "instanceId",
}  # fmt: skip
_DEVICE_FIELDS = {"id", "publicKey", "signature", "signedAt", "nonce"}
_AUTH_FIELDS = {"token", "bootstrapToken", "deviceToken", "password"}


def parseConnectParams(params: Any) -> ConnectParams:
    """Validate C{connect} parameters; L{FrameError} lists every problem found."""
    s = _Schema()
    if not s.obj(params, "", {"minProtocol", "maxProtocol", "client"}, _CONNECT_FIELDS):
        raise FrameError("; ".join(s.errors))
    for name in ("minProtocol", "maxProtocol"):
        if name in params:
            s.integer(params[name], f"/{name}", 1)
    client = params.get("client")
    if "client" in params and s.obj(
        client, "/client", {"id", "version", "platform", "mode"}, _CLIENT_FIELDS
    ):
        if "id" in client:
            s.enum(client["id"], "/client/id", CLIENT_IDS)
        if "mode" in client:
            s.enum(client["mode"], "/client/mode", CLIENT_MODES)
        for name in ("version", "platform"):
            if name in client:
                s.string(client[name], f"/client/{name}", nonEmpty=True)
        for name in ("displayName", "deviceFamily", "modelIdentifier", "instanceId"):
            if name in client:
                s.string(client[name], f"/client/{name}")
    for name in ("caps", "commands", "scopes"):
        if name in params:
            s.strings(params[name], f"/{name}")
    for name in ("pathEnv", "role", "locale", "userAgent"):
        if name in params:
            s.string(params[name], f"/{name}")
    permissions = params.get("permissions")
    if "permissions" in params:
        if not isinstance(permissions, dict):
            s.fail("/permissions", "must be object")
        else:
            for key, value in permissions.items():
                if not isinstance(value, bool):
                    s.fail(f"/permissions/{key}", "must be boolean")
    device = params.get("device")
    if "device" in params and s.obj(device, "/device", _DEVICE_FIELDS, _DEVICE_FIELDS):
        for name in ("id", "publicKey", "signature", "nonce"):
            if name in device:
                s.string(device[name], f"/device/{name}")
        if "signedAt" in device:
            s.integer(device["signedAt"], "/device/signedAt", 0)
    auth = params.get("auth")
    if "auth" in params and s.obj(auth, "/auth", set(), _AUTH_FIELDS):
        for name, value in auth.items():
            if name in _AUTH_FIELDS:
                s.string(value, f"/auth/{name}")
    if s.errors:
        raise FrameError("; ".join(s.errors))
    return ConnectParams(
        minProtocol=params["minProtocol"],
        maxProtocol=params["maxProtocol"],
        client=ClientInfo(**client),
        role=params.get("role"),
        scopes=tuple(params["scopes"]) if "scopes" in params else None,
        caps=tuple(params.get("caps", ())),
        commands=tuple(params["commands"]) if "commands" in params else None,
        permissions=permissions,
        pathEnv=params.get("pathEnv"),
        device=DeviceInfo(**device) if device is not None else None,
        auth=dict(auth or {}),
        locale=params.get("locale"),
        userAgent=params.get("userAgent"),
    )


def negotiateProtocol(minProtocol: int, maxProtocol: int) -> int | None:
    """The highest version in both ranges, or C{None} when they do not overlap."""
    high = min(maxProtocol, MAX_PROTOCOL)
    if high < max(minProtocol, MIN_PROTOCOL):
        return None
    return high
