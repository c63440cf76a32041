"""Shared fakes for the gateway tests: a record-keeping sink, an in-memory store, devices."""

from __future__ import annotations

from typing import Any

from nacl.signing import SigningKey
from twisted.internet.defer import Deferred, succeed

from p2pnet.codecs.device_auth import b64urlEncode, buildPayloadV3, deriveDeviceId, signPayload
from p2pnet.codecs.gateway_frames import Event, Frame, Request, Response, decodeFrame
from p2pnet.store.gateway import DeviceToken, PairedDevice, PairedNode


class FakeSink:
    """Records frames and the close."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.closed: tuple[int, str] | None = None

    def sendFrame(self, frame: Frame, dropIfSlow: bool = False, text: str | None = None) -> None:
        assert text is None or decodeFrame(text) == frame
        self.frames.append(frame)

    def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)

    def events(self, name: str) -> list[Event]:
        return [f for f in self.frames if isinstance(f, Event) and f.event == name]

    def response(self, requestId: str) -> Response:
        found = [f for f in self.frames if isinstance(f, Response) and f.id == requestId]
        assert found, f"no response to {requestId}: {self.frames}"
        return found[-1]


class MemoryStore:
    """L{p2pnet.store.gateway.GatewayStore} without the disk; writes fire at once."""

    def __init__(self) -> None:
        self.devices: dict[str, PairedDevice] = {}
        self.tokens: dict[tuple[str, str], DeviceToken] = {}
        self.labels: dict[str, str] = {}
        self.nodes: dict[str, PairedNode] = {}
        self.secrets: dict[str, str] = {}
        self.closed = False
        self.writes = 0
        self.ready = True

    def secret(self, name: str) -> str | None:
        return self.secrets.get(name)

    def savePairedDevice(self, device: PairedDevice) -> Deferred[None]:
        self.devices[device.deviceId] = device
        self.writes += 1
        return succeed(None)

    def removeDevice(self, deviceId: str) -> Deferred[None]:
        self.devices.pop(deviceId, None)
        self.labels.pop(deviceId, None)
        self.nodes.pop(deviceId, None)
        for key in [k for k in self.tokens if k[0] == deviceId]:
            del self.tokens[key]
        return succeed(None)

    def saveToken(self, token: DeviceToken) -> Deferred[None]:
        self.tokens[(token.deviceId, token.role)] = token
        self.writes += 1
        return succeed(None)

    def revokeToken(self, deviceId: str, role: str, nowMs: int) -> Deferred[None] | None:
        from dataclasses import replace

        token = self.tokens.get((deviceId, role))
        if token is None:
            return None
        return self.saveToken(replace(token, revokedAtMs=nowMs))

    def saveLabel(self, deviceId: str, label: str) -> Deferred[None]:
        self.labels[deviceId] = label
        return succeed(None)

    def saveNode(self, node: PairedNode) -> Deferred[None]:
        self.nodes[node.nodeId] = node
        self.writes += 1
        return succeed(None)

    def removeNode(self, nodeId: str) -> Deferred[None]:
        self.nodes.pop(nodeId, None)
        return succeed(None)

    def close(self) -> None:
        self.closed = True


class Device:
    """A client's Ed25519 identity that signs v3 payloads."""

    def __init__(self) -> None:
        self.key = SigningKey.generate()
        self.publicKey = b64urlEncode(bytes(self.key.verify_key))
        self.id = deriveDeviceId(bytes(self.key.verify_key))

    def block(self, nonce: str, signedAt: int, params: dict[str, Any]) -> dict[str, Any]:
        client = params["client"]
        auth = params.get("auth", {})
        token = auth.get("token") or auth.get("deviceToken") or auth.get("bootstrapToken")
        payload = buildPayloadV3(
            self.id, client["id"], client["mode"], params.get("role", "operator"),
            params.get("scopes", []), signedAt, token, nonce, client.get("platform"),
            client.get("deviceFamily"),
        )
        return {"id": self.id, "publicKey": self.publicKey,
                "signature": signPayload(self.key, payload), "signedAt": signedAt,
                "nonce": nonce}


def connectParams(role: str = "operator", scopes: list[str] | None = None,
                  clientId: str = "test", mode: str = "test", **auth: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "minProtocol": 3,
        "maxProtocol": 4,
        "client": {"id": clientId, "version": "1", "platform": "linux", "mode": mode},
        "role": role,
    }
    if scopes is not None:
        params["scopes"] = scopes
    if auth:
        params["auth"] = auth
    return params


def request(requestId: str, method: str, params: Any = None) -> Request:
    return Request(requestId, method, params)


def until(predicate: Any, timeout: float = 5.0) -> Deferred[None]:
    """Poll C{predicate} on the real reactor until it is true (bounded: C{timeout}
    seconds, then an C{AssertionError})."""
    from twisted.internet import reactor

    d: Deferred[None] = Deferred()
    deadline = reactor.seconds() + timeout

    def check() -> None:
        if predicate():
            d.callback(None)
        elif reactor.seconds() > deadline:
            d.errback(AssertionError("condition not met in time"))
        else:
            reactor.callLater(0.01, check)

    check()
    return d
