# -*- test-case-name: test.unit.test_gateway_pairing,test.unit.test_gateway_service -*-
"""Device pairing and device tokens of the control gateway (gateway.md §2.5, §2.6).

A device that is not paired (or asks for more than it was approved for) makes a
L{PairingRequest}; an operator approves or rejects it, or it expires after
L{PAIRING_TTL}. Approval writes a L{PairedDevice} to the store. A paired device gets one
L{DeviceToken} per role, reused while it covers the scopes asked for, rotated or revoked
by operators. Nothing here knows about connections: callers close the sockets a change
concerns.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from p2pnet.boundedmap import BoundedMap
from p2pnet.codecs.device_auth import b64urlEncode
from p2pnet.codecs.gateway_frames import ClientInfo, ErrorCode, errorShape
from p2pnet.services.gateway_policy import secretEqual
from p2pnet.store.gateway import DeviceToken, GatewayStoreInterface, PairedDevice

__all__ = [
    "MAX_PENDING_PAIRINGS",
    "PAIRING_TTL",
    "DevicePairing",
    "MethodError",
    "PairingRequest",
    "newSecretToken",
]

#: Lifetime of a pending pairing request, seconds, and how many may wait at once.
PAIRING_TTL = 300.0
MAX_PENDING_PAIRINGS = 256


class MethodError(Exception):
    """A method's error response: C{errorShape(*args)}."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.error = errorShape(code, message, details)


def newSecretToken() -> str:
    """A fresh device token: 32 random bytes, base64url (gateway.md §2.5)."""
    return b64urlEncode(secrets.token_bytes(32))


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
            "roles": self.role.split(","),
            "scopes": list(self.scopes),
            "platform": self.platform,
            "deviceFamily": self.deviceFamily,
            "clientId": self.clientId,
            "displayName": self.displayName,
            "reason": self.reason,
            "remoteIp": self.remoteIp,
            "createdAtMs": self.createdAtMs,
            "ts": self.createdAtMs,
        }


#: C{broadcast(event, payload)} to operators holding C{operator.pairing}.
Announce = Callable[[str, dict[str, Any]], None]


class DevicePairing:
    """Pending device pairing requests, approvals and device tokens.

    @param announce: sends C{device.pair.requested} / C{device.pair.resolved} to the
        operators allowed to see them.
    @ivar pending: pending requests by id, oldest first, at most L{MAX_PENDING_PAIRINGS}.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        store: GatewayStoreInterface,
        newId: Callable[[], str],
        announce: Announce,
    ) -> None:
        self.clock = clock
        self.store = store
        self.newId = newId
        self.announce = announce
        self.pending: BoundedMap[str, PairingRequest] = BoundedMap(MAX_PENDING_PAIRINGS)

    def nowMs(self) -> int:
        """The clock in epoch milliseconds."""
        return int(self.clock.seconds() * 1000)

    def requests(self) -> list[PairingRequest]:
        """The pending requests, oldest first.

        (Read with C{peek}: reading a L{BoundedMap} item marks it used, which reorders the
        map, so its C{values()} cannot be iterated.)
        """
        return [p for p in map(self.pending.peek, list(self.pending)) if p is not None]

    def expire(self) -> None:
        """Forget requests older than L{PAIRING_TTL}."""
        cutoff = self.nowMs() - int(PAIRING_TTL * 1000)
        for pairing in [p for p in self.requests() if p.createdAtMs < cutoff]:
            del self.pending[pairing.requestId]

    def request(
        self,
        deviceId: str,
        publicKey: str,
        role: str,
        scopes: tuple[str, ...],
        client: ClientInfo,
        reason: str,
        clientIp: str | None,
    ) -> PairingRequest:
        """A new pending request (replacing the device's earlier one), announced."""
        self.expire()
        for old in [p for p in self.requests() if p.deviceId == deviceId]:
            del self.pending[old.requestId]
        paired = self.store.devices.get(deviceId)
        if paired is not None and paired.publicKey == publicKey:
            # An upgrade asks for what was approved plus what is new.
            roles = tuple(dict.fromkeys((*paired.roles, role)))
            scopes = tuple(dict.fromkeys((*paired.scopes, *scopes)))
            role = ",".join(roles)
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
        self.pending[pairing.requestId] = pairing
        self.announce("device.pair.requested", pairing.describe())
        return pairing

    def _take(self, requestId: str) -> PairingRequest:
        self.expire()
        pairing = self.pending.pop(requestId, None)
        if pairing is None:
            raise MethodError(ErrorCode.APPROVAL_NOT_FOUND, "unknown pairing requestId")
        return pairing

    def approve(self, requestId: str, silent: bool = False) -> Deferred[PairedDevice]:
        """Approve a pending request; fires with the paired device once it is stored.

        @raise MethodError: no such pending request.
        """
        pairing = self._take(requestId)
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
        self.announce(
            "device.pair.resolved",
            {
                "requestId": requestId,
                "deviceId": device.deviceId,
                "decision": "approved",
                "silent": silent,
            },
        )
        self.log.info(
            "Gateway device {deviceId} paired as {roles}{how}",
            deviceId=device.deviceId,
            roles=",".join(device.roles),
            how=" (local auto-approval)" if silent else "",
        )
        return saved.addCallback(lambda _: device)

    def reject(self, requestId: str) -> PairingRequest:
        """Refuse a pending request.

        @raise MethodError: no such pending request.
        """
        pairing = self._take(requestId)
        self.announce(
            "device.pair.resolved",
            {"requestId": requestId, "deviceId": pairing.deviceId, "decision": "rejected"},
        )
        return pairing

    def listing(self) -> dict[str, Any]:
        """C{device.pair.list}: the pending requests and the paired devices."""
        self.expire()
        return {
            "pending": [p.describe() for p in self.requests()],
            "paired": [d.describe() for d in self.store.devices.values()],
        }

    # -- device tokens -------------------------------------------------------------------

    def verifyToken(
        self, deviceId: str, role: str, scopes: tuple[str, ...], candidate: str
    ) -> str | None:
        """Why C{candidate} is not C{deviceId}'s token for C{role} and C{scopes}, or
        C{None} when it is (gateway.md §2.5)."""
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

    def tokenFor(
        self, deviceId: str, role: str, scopes: tuple[str, ...]
    ) -> tuple[DeviceToken, Deferred[None] | None]:
        """The token to hand a connecting device: its unrevoked token if that covers
        C{scopes} (nothing to write), else a new one and the Deferred of its write."""
        existing = self.store.tokens.get((deviceId, role))
        if (
            existing is not None
            and existing.revokedAtMs is None
            and set(scopes) <= set(existing.scopes)
        ):
            return existing, None
        return self._mint(deviceId, role, scopes, existing, rotated=existing is not None)

    def rotate(
        self, deviceId: str, role: str, scopes: tuple[str, ...] | None
    ) -> tuple[DeviceToken, Deferred[None]]:
        """A new token for C{(deviceId, role)} (the old scopes unless C{scopes})."""
        existing = self.store.tokens.get((deviceId, role))
        if scopes is None:
            device = self.store.devices.get(deviceId)
            scopes = existing.scopes if existing else device.scopes if device else ()
        return self._mint(deviceId, role, scopes, existing, rotated=True)

    def _mint(
        self,
        deviceId: str,
        role: str,
        scopes: tuple[str, ...],
        existing: DeviceToken | None,
        rotated: bool,
    ) -> tuple[DeviceToken, Deferred[None]]:
        now = self.nowMs()
        token = DeviceToken(
            deviceId,
            role,
            newSecretToken(),
            tuple(scopes),
            createdAtMs=existing.createdAtMs if existing else now,
            rotatedAtMs=now if rotated else None,
        )
        return token, self.store.saveToken(token)

    def revoke(self, deviceId: str, role: str) -> Deferred[None] | None:
        """Mark C{(deviceId, role)}'s token revoked; C{None} when there is none."""
        return self.store.revokeToken(deviceId, role, self.nowMs())
