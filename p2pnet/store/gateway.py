# -*- test-case-name: test.interop.test_gateway_store -*-
"""Durable state of the control gateway: secrets, paired devices and device tokens.

The tables are small (one row per device and role), so they are read into memory once
when the store is opened, before the reactor serves anyone, and every change is written
through to SQLite; the handshake reads memory and never waits for the disk. A method
that changes state returns a Deferred that fires once the change is committed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from p2pnet.errors import ConfigError
from p2pnet.store.sqlite import Database

__all__ = [
    "DeviceToken",
    "GatewayStore",
    "GatewayStoreInterface",
    "PairedDevice",
    "PairedNode",
]

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS gateway_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS gateway_devices ("
    " device_id TEXT PRIMARY KEY, public_key TEXT NOT NULL, roles TEXT NOT NULL,"
    " scopes TEXT NOT NULL, platform TEXT NOT NULL, device_family TEXT NOT NULL,"
    " client_id TEXT NOT NULL, display_name TEXT NOT NULL, approved_ms INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS gateway_device_tokens ("
    " device_id TEXT NOT NULL REFERENCES gateway_devices(device_id) ON DELETE CASCADE,"
    " role TEXT NOT NULL, token TEXT NOT NULL, scopes TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL, rotated_ms INTEGER, revoked_ms INTEGER,"
    " PRIMARY KEY (device_id, role))",
    "CREATE TABLE IF NOT EXISTS gateway_device_labels ("
    " device_id TEXT PRIMARY KEY REFERENCES gateway_devices(device_id) ON DELETE CASCADE,"
    " label TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS gateway_nodes ("
    " node_id TEXT PRIMARY KEY, display_name TEXT NOT NULL, platform TEXT NOT NULL,"
    " version TEXT NOT NULL, commands TEXT NOT NULL, approved_ms INTEGER NOT NULL)",
)


@dataclass(frozen=True)
class PairedDevice:
    """An approved device: its key, and the roles and scopes pairing granted."""

    deviceId: str
    publicKey: str
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    platform: str = ""
    deviceFamily: str = ""
    clientId: str = ""
    displayName: str = ""
    approvedAtMs: int = 0

    def describe(self) -> dict[str, Any]:
        """The JSON shape operators see."""
        return {
            "deviceId": self.deviceId,
            "publicKey": self.publicKey,
            "roles": list(self.roles),
            "scopes": list(self.scopes),
            "platform": self.platform,
            "deviceFamily": self.deviceFamily,
            "clientId": self.clientId,
            "displayName": self.displayName,
            "approvedAtMs": self.approvedAtMs,
        }


@dataclass(frozen=True)
class PairedNode:
    """A node approved by node pairing (gateway.md §2.6): the commands it may be
    invoked for, and the name operators gave it."""

    nodeId: str
    displayName: str
    platform: str
    version: str
    commands: tuple[str, ...]
    approvedAtMs: int

    def describe(self) -> dict[str, Any]:
        """The JSON shape operators see in C{node.pair.list}."""
        return {
            "nodeId": self.nodeId,
            "displayName": self.displayName,
            "platform": self.platform,
            "version": self.version,
            "commands": list(self.commands),
            "approvedAtMs": self.approvedAtMs,
        }


@dataclass(frozen=True)
class DeviceToken:
    """The token of one (device, role)."""

    deviceId: str
    role: str
    token: str = field(repr=False)
    scopes: tuple[str, ...]
    createdAtMs: int
    rotatedAtMs: int | None = None
    revokedAtMs: int | None = None

    def summary(self) -> dict[str, Any]:
        """What operators see of a token: everything but its value."""
        return {
            "role": self.role,
            "scopes": list(self.scopes),
            "createdAtMs": self.createdAtMs,
            "rotatedAtMs": self.rotatedAtMs,
            "revokedAtMs": self.revokedAtMs,
        }

    @property
    def issuedAtMs(self) -> int:
        """When the current token value was made."""
        return self.rotatedAtMs if self.rotatedAtMs is not None else self.createdAtMs


class GatewayStoreInterface(Protocol):
    """What the gateway needs of its store; L{GatewayStore} and the tests' in-memory
    fake both provide it (mypy checks the fake against it).

    Reads are of memory; a change is made in memory at once and its Deferred fires once
    it is durable.
    """

    @property
    def ready(self) -> bool:
        """Whether the tables are in memory (a shared store reads them after start-up;
        until then no device can be checked)."""

    @property
    def devices(self) -> Mapping[str, PairedDevice]:
        """Paired devices by id."""

    @property
    def tokens(self) -> Mapping[tuple[str, str], DeviceToken]:
        """Device tokens by C{(deviceId, role)}."""

    @property
    def labels(self) -> Mapping[str, str]:
        """Operator labels of paired devices by device id."""

    @property
    def nodes(self) -> Mapping[str, PairedNode]:
        """Nodes approved by node pairing, by node id."""

    def saveLabel(self, deviceId: str, label: str) -> Deferred[None]:
        """Give a paired device an operator label."""

    def saveNode(self, node: PairedNode) -> Deferred[None]:
        """Add or replace a node's pairing."""

    def removeNode(self, nodeId: str) -> Deferred[None]:
        """Forget a node's pairing."""

    def secret(self, name: str) -> str | None:
        """A stored gateway secret."""

    def createSecret(self, name: str, value: str) -> None:
        """Store a secret synchronously (start-up or a reload, before it is used)."""

    def savePairedDevice(self, device: PairedDevice) -> Deferred[None]:
        """Add or replace a paired device."""

    def removeDevice(self, deviceId: str) -> Deferred[None]:
        """Forget a device and its tokens."""

    def saveToken(self, token: DeviceToken) -> Deferred[None]:
        """Add or replace the token of C{(token.deviceId, token.role)}."""

    def revokeToken(self, deviceId: str, role: str, nowMs: int) -> Deferred[None] | None:
        """Mark a token revoked; C{None} if there is no such token."""

    def close(self) -> None:
        """Release the store (once)."""


class GatewayStore:
    """The gateway's tables in memory, written through to a L{Database}.

    @ivar devices: paired devices by id.
    @ivar tokens: device tokens by C{(deviceId, role)}.
    """

    #: Read at construction: always ready.
    ready = True

    def __init__(self, path: str) -> None:
        self.db = Database(path, SCHEMA)
        self.devices: dict[str, PairedDevice] = {}
        self.tokens: dict[tuple[str, str], DeviceToken] = {}
        self.labels: dict[str, str] = {}
        self.nodes: dict[str, PairedNode] = {}
        self._secrets: dict[str, str] = {}
        self._closed = False
        try:
            self.db.runSync(self._load)
        except (sqlite3.Error, ValueError) as e:
            self.close()
            raise ConfigError("data-dir", f"cannot read gateway state from {path}: {e}") from None

    def _load(self, cursor: sqlite3.Cursor) -> None:
        self._secrets = dict(cursor.execute("SELECT name, value FROM gateway_secrets"))
        for row in cursor.execute(
            "SELECT device_id, public_key, roles, scopes, platform, device_family,"
            " client_id, display_name, approved_ms FROM gateway_devices"
        ):
            device = PairedDevice(
                row[0], row[1], tuple(json.loads(row[2])), tuple(json.loads(row[3])), *row[4:]
            )
            self.devices[device.deviceId] = device
        for row in cursor.execute(
            "SELECT device_id, role, token, scopes, created_ms, rotated_ms, revoked_ms"
            " FROM gateway_device_tokens"
        ):
            token = DeviceToken(row[0], row[1], row[2], tuple(json.loads(row[3])), *row[4:])
            self.tokens[(token.deviceId, token.role)] = token
        self.labels = dict(cursor.execute("SELECT device_id, label FROM gateway_device_labels"))
        for row in cursor.execute(
            "SELECT node_id, display_name, platform, version, commands, approved_ms"
            " FROM gateway_nodes"
        ):
            node = PairedNode(row[0], row[1], row[2], row[3], tuple(json.loads(row[4])), row[5])
            self.nodes[node.nodeId] = node

    def close(self) -> None:
        """Stop the database thread (once; later calls do nothing)."""
        if not self._closed:
            self._closed = True
            self.db.close()

    # -- secrets -------------------------------------------------------------------------

    def secret(self, name: str) -> str | None:
        """A stored gateway secret (e.g. the generated token)."""
        return self._secrets.get(name)

    def createSecret(self, name: str, value: str) -> None:
        """Store a secret synchronously; only for start-up, before anyone is served."""
        try:
            self.db.runSync(
                lambda cursor: cursor.execute(
                    "INSERT OR REPLACE INTO gateway_secrets (name, value) VALUES (?, ?)",
                    (name, value),
                )
            )
        except sqlite3.Error as e:
            raise ConfigError("data-dir", f"cannot store {name} in {self.db.path}: {e}") from None
        self._secrets[name] = value

    # -- devices -------------------------------------------------------------------------

    def savePairedDevice(self, device: PairedDevice) -> Deferred[None]:
        """Add or replace a paired device."""
        self.devices[device.deviceId] = device
        return self.db.runOperation(
            "INSERT OR REPLACE INTO gateway_devices (device_id, public_key, roles, scopes,"
            " platform, device_family, client_id, display_name, approved_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                device.deviceId,
                device.publicKey,
                json.dumps(list(device.roles)),
                json.dumps(list(device.scopes)),
                device.platform,
                device.deviceFamily,
                device.clientId,
                device.displayName,
                device.approvedAtMs,
            ),
        )

    def removeDevice(self, deviceId: str) -> Deferred[None]:
        """Forget a device, its tokens, its label and its node pairing."""
        self.devices.pop(deviceId, None)
        self.labels.pop(deviceId, None)
        self.nodes.pop(deviceId, None)
        for key in [k for k in self.tokens if k[0] == deviceId]:
            del self.tokens[key]

        def remove(cursor: sqlite3.Cursor) -> None:
            cursor.execute("DELETE FROM gateway_devices WHERE device_id = ?", (deviceId,))
            cursor.execute("DELETE FROM gateway_nodes WHERE node_id = ?", (deviceId,))

        return self.db.runInteraction(remove)

    def saveLabel(self, deviceId: str, label: str) -> Deferred[None]:
        """Give a paired device an operator label (C{device.pair.rename})."""
        self.labels[deviceId] = label
        return self.db.runOperation(
            "INSERT OR REPLACE INTO gateway_device_labels (device_id, label) VALUES (?, ?)",
            (deviceId, label),
        )

    def saveNode(self, node: PairedNode) -> Deferred[None]:
        """Add or replace a node's pairing."""
        self.nodes[node.nodeId] = node
        return self.db.runOperation(
            "INSERT OR REPLACE INTO gateway_nodes (node_id, display_name, platform, version,"
            " commands, approved_ms) VALUES (?, ?, ?, ?, ?, ?)",
            (node.nodeId, node.displayName, node.platform, node.version,
             json.dumps(list(node.commands)), node.approvedAtMs),
        )

    def removeNode(self, nodeId: str) -> Deferred[None]:
        """Forget a node's pairing."""
        self.nodes.pop(nodeId, None)
        return self.db.runOperation("DELETE FROM gateway_nodes WHERE node_id = ?", (nodeId,))

    def saveToken(self, token: DeviceToken) -> Deferred[None]:
        """Add or replace the token of C{(token.deviceId, token.role)}."""
        self.tokens[(token.deviceId, token.role)] = token
        return self.db.runOperation(
            "INSERT OR REPLACE INTO gateway_device_tokens (device_id, role, token, scopes,"
            " created_ms, rotated_ms, revoked_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                token.deviceId,
                token.role,
                token.token,
                json.dumps(list(token.scopes)),
                token.createdAtMs,
                token.rotatedAtMs,
                token.revokedAtMs,
            ),
        )

    def revokeToken(self, deviceId: str, role: str, nowMs: int) -> Deferred[None] | None:
        """Mark a token revoked; C{None} if there is no such token."""
        token = self.tokens.get((deviceId, role))
        if token is None:
            return None
        return self.saveToken(replace(token, revokedAtMs=nowMs))
