# -*- test-case-name: test.interop.test_cluster_redis -*-
"""The control gateway's durable state in a shared Redis (C{store = redis://...}), so
the gateways of a cluster share paired devices, device tokens, labels and node pairings
(docs/cluster.md).

The gateway reads its tables from memory, as with SQLite (L{p2pnet.store.gateway}); here
the memory is a mirror of Redis. Every write also increments a version key; each gateway
reads that key every L{POLL_INTERVAL} seconds and reads the tables again when it changed
(and every L{FULL_RELOAD} seconds regardless), so a device paired or a token revoked at
one gateway is in force at every gateway within about a quarter of a second. A change is
made in memory at once and its Deferred fires once Redis has it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from p2pnet.store.gateway import DeviceToken, PairedDevice, PairedNode
from p2pnet.store.redis import connect

__all__ = ["FULL_RELOAD", "POLL_INTERVAL", "SECRETS", "RedisGatewayStore", "sharedSecret"]

log = Logger()

#: Seconds between reads of the version key.
POLL_INTERVAL = 0.25

#: Seconds after which the tables are read again even if the version did not change
#: (a Redis that lost its data may have restarted its counter at the same number).
FULL_RELOAD = 30.0

_PREFIX = "p2pnet:gateway:"
DEVICES, TOKENS, LABELS, NODES, SECRETS, VERSION = (
    _PREFIX + name
    for name in ("devices", "tokens", "labels", "paired-nodes", "secrets", "version"))
_TABLES = (DEVICES, TOKENS, LABELS, NODES, SECRETS)


def _tokenField(deviceId: str, role: str) -> str:
    return f"{deviceId}\n{role}"


class RedisGatewayStore:
    """Implements L{p2pnet.store.gateway.GatewayStoreInterface} on Redis.

    @ivar loaded: fires once the tables were read the first time.
    @ivar ready: whether they were (and held every C{required} secret).
    @ivar onWithdrawn: called after a read with the C{(deviceId, role)} pairs another
        gateway withdrew (C{role} C{None}: the device was removed; else its token was
        revoked, rotated or deleted), so this gateway closes their sessions as the
        other did.
    """

    def __init__(self, url: str = "", clock: Any = None, redis: Any = None,
                 seed: str | None = None,
                 required: Mapping[str, Callable[[], str]] | None = None) -> None:
        """
        @param url: the store's C{redis://} address (unused when C{redis} is given).
        @param seed: a gateway's own C{gateway.sqlite}: when the shared tables were never
            written (no version key), its pairings and tokens are copied in, so a gateway
            that joins a cluster keeps its paired devices.
        @param clock: the L{IReactorTime} of the polling (the global reactor if C{None}).
        @param redis: a txredisapi-like connection to use instead of connecting to C{url}.
        @param required: secrets every gateway of the store shares, by name, each with
            a function making a new one: a read that finds one missing writes a new one
            unless another gateway wrote one first, and L{ready} waits until it is read
            back. A seed's secret of that name is copied in like its pairings.
        """
        if clock is None:
            from twisted.internet import reactor as clock
        self._clock = clock
        self._seed = seed
        self._redis = redis if redis is not None else connect(url)
        self.devices: dict[str, PairedDevice] = {}
        self.tokens: dict[tuple[str, str], DeviceToken] = {}
        self.labels: dict[str, str] = {}
        self.nodes: dict[str, PairedNode] = {}
        self._secrets: dict[str, str] = {}
        self.loaded: Deferred[None] = Deferred()
        self.ready = False
        self.onWithdrawn: Callable[[set[tuple[str, str | None]]], None] | None = None
        self._version: str | None = None  # the version key's value at the last read
        self._loadedAt = float("-inf")
        self._writes = 0  # local writes so far: a read begun before one is stale
        self._closed = False
        self._failing = False
        self._required = dict(required or {})
        self._loop = LoopingCall(self.poll)
        self._loop.clock = clock
        self._loop.start(POLL_INTERVAL, now=True).addErrback(
            lambda f: log.failure("gateway store polling stopped", f))

    def poll(self) -> Deferred[None]:
        """Read the tables again if the version key changed or L{FULL_RELOAD} passed."""
        if self._clock.seconds() - self._loadedAt >= FULL_RELOAD:
            return self.load()
        d: Deferred[Any] = self._redis.get(VERSION)

        def check(version: str | None) -> Deferred[None] | None:
            return self.load() if version != self._version else None

        return d.addCallbacks(check, self._failed)

    def load(self) -> Deferred[None]:
        """Read every table into memory (a failure keeps the previous copy)."""
        writesBefore = self._writes
        # One connection answers in order: the tables are at least as new as the version.
        reads = [self._redis.get(VERSION), *(self._redis.hgetall(k) for k in _TABLES)]
        d: Deferred[Any] = gatherResults(reads, consumeErrors=True)

        def apply(results: list[Any]) -> None:
            if self._writes != writesBefore:
                # A local change was made during the read, which may not include it:
                # keep memory as it is and let the next poll read again.
                self._version = None
                return
            version, *tables = results
            if version is None and self._seed is not None:
                seed, self._seed = self._seed, None
                if self._importSeed(seed):
                    self._version = None  # read again, with what was copied in
                    return
            self._seed = None
            devices, tokens, labels, nodes, secrets = (t or {} for t in tables)
            missing = [name for name in self._required if name not in secrets]
            if missing:
                # The first gateway to miss a secret writes one; every gateway (this one
                # too) then reads whichever was written first.
                self._written(gatherResults(
                    [self._redis.hsetnx(SECRETS, name, self._required[name]())
                     for name in missing], consumeErrors=True)).addErrback(self._failed)
                if not self.ready:
                    self._version = None
                    return
            parsed = [_token(json.loads(v)) for v in tokens.values()]
            newDevices = {k: _device(json.loads(v)) for k, v in devices.items()}
            newTokens = {(t.deviceId, t.role): t for t in parsed}
            withdrawn = _withdrawn(self.devices, self.tokens, newDevices, newTokens)
            # In place: the gateway's rooms hold these mappings.
            _replace(self.devices, newDevices)
            _replace(self.tokens, newTokens)
            _replace(self.labels, dict(labels))
            _replace(self.nodes, {k: _node(json.loads(v)) for k, v in nodes.items()})
            _replace(self._secrets, dict(secrets))
            if self._failing:
                self._failing = False
                log.info("gateway tables read from the store again")
            self._version = version
            self._loadedAt = self._clock.seconds()
            if not self.ready:
                self.ready = True
                self.loaded.callback(None)
            if withdrawn and self.onWithdrawn is not None:
                self.onWithdrawn(withdrawn)

        return d.addCallbacks(apply, self._failed)

    def _importSeed(self, path: str) -> bool:
        """Copy the pairings and tokens of the SQLite store at C{path} into Redis, keeping
        what another gateway wrote meanwhile; C{True} if there was anything."""
        import os

        from p2pnet.store.gateway import GatewayStore

        if not os.path.exists(path):
            return False
        local = GatewayStore(path)
        try:
            rows = [(SECRETS, name, value) for name in self._required
                    if (value := local.secret(name))]
            rows += [(DEVICES, k, json.dumps(asdict(v))) for k, v in local.devices.items()]
            rows += [(TOKENS, _tokenField(*k), json.dumps(asdict(v)))
                     for k, v in local.tokens.items()]
            rows += [(LABELS, k, v) for k, v in local.labels.items()]
            rows += [(NODES, k, json.dumps(asdict(v))) for k, v in local.nodes.items()]
        finally:
            local.close()
        if not rows:
            return False
        writes = [self._redis.hsetnx(key, name, value) for key, name, value in rows]
        self._written(gatherResults(writes, consumeErrors=True)).addCallbacks(
            lambda _: log.info("copied {count} pairing rows of {path} into the shared "
                               "store", count=len(rows), path=path),
            lambda f: log.warn("cannot copy {path} into the shared store: {error}",
                               path=path, error=f.getErrorMessage()))
        return True

    def _failed(self, failure: Any) -> None:
        # Once per outage, not once per poll.
        if not self._failing:
            self._failing = True
            log.warn("cannot read the gateway tables from the store (keeping the last "
                     "copy): {error}", error=failure.getErrorMessage())

    def close(self) -> None:
        """Stop reading; close the connection (once)."""
        if not self._closed:
            self._closed = True
            if self._loop.running:
                self._loop.stop()
            self._redis.disconnect()

    def _written(self, d: Deferred[Any]) -> Deferred[None]:
        """Count a local write and announce it to the other gateways once it is done."""
        self._writes += 1
        return d.addCallback(lambda _: self._redis.incr(VERSION)).addCallback(
            lambda _: None)

    # -- secrets -----------------------------------------------------------------------

    def secret(self, name: str) -> str | None:
        """A stored gateway secret."""
        return self._secrets.get(name)

    def createSecret(self, name: str, value: str) -> None:
        """Store a secret unless another gateway stored one of that name first (written
        in the background; the next read adopts whichever is stored)."""
        self._secrets[name] = value
        self._written(self._redis.hsetnx(SECRETS, name, value)).addErrback(
            lambda f: log.warn("cannot store the gateway secret {name}: {error}",
                               name=name, error=f.getErrorMessage()))

    # -- devices, labels, nodes, tokens -------------------------------------------------

    def savePairedDevice(self, device: PairedDevice) -> Deferred[None]:
        """Add or replace a paired device."""
        self.devices[device.deviceId] = device
        return self._written(self._redis.hset(DEVICES, device.deviceId,
                                              json.dumps(asdict(device))))

    def removeDevice(self, deviceId: str) -> Deferred[None]:
        """Forget a device, its tokens, its label and its node pairing."""
        self.devices.pop(deviceId, None)
        self.labels.pop(deviceId, None)
        self.nodes.pop(deviceId, None)
        gone = [k for k in self.tokens if k[0] == deviceId]
        for key in gone:
            del self.tokens[key]
        writes = [self._redis.hdel(DEVICES, deviceId), self._redis.hdel(LABELS, deviceId),
                  self._redis.hdel(NODES, deviceId)]
        writes += [self._redis.hdel(TOKENS, _tokenField(*key)) for key in gone]
        return self._written(gatherResults(writes, consumeErrors=True))

    def saveLabel(self, deviceId: str, label: str) -> Deferred[None]:
        """Give a paired device an operator label."""
        self.labels[deviceId] = label
        return self._written(self._redis.hset(LABELS, deviceId, label))

    def saveNode(self, node: PairedNode) -> Deferred[None]:
        """Add or replace a node's pairing."""
        self.nodes[node.nodeId] = node
        return self._written(self._redis.hset(NODES, node.nodeId, json.dumps(asdict(node))))

    def removeNode(self, nodeId: str) -> Deferred[None]:
        """Forget a node's pairing."""
        self.nodes.pop(nodeId, None)
        return self._written(self._redis.hdel(NODES, nodeId))

    def saveToken(self, token: DeviceToken) -> Deferred[None]:
        """Add or replace the token of C{(token.deviceId, token.role)}."""
        self.tokens[(token.deviceId, token.role)] = token
        return self._written(self._redis.hset(
            TOKENS, _tokenField(token.deviceId, token.role), json.dumps(asdict(token))))

    def revokeToken(self, deviceId: str, role: str, nowMs: int) -> Deferred[None] | None:
        """Mark a token revoked; C{None} if there is no such token."""
        token = self.tokens.get((deviceId, role))
        if token is None:
            return None
        return self.saveToken(replace(token, revokedAtMs=nowMs))


def _withdrawn(
    devices: dict[str, PairedDevice],
    tokens: dict[tuple[str, str], DeviceToken],
    newDevices: dict[str, PairedDevice],
    newTokens: dict[tuple[str, str], DeviceToken],
) -> set[tuple[str, str | None]]:
    """What a read takes away: removed devices, and tokens gone, revoked or replaced."""
    gone: set[tuple[str, str | None]] = {(d, None) for d in devices if d not in newDevices}
    for key, old in tokens.items():
        new = newTokens.get(key)
        if old.revokedAtMs is None and (
            new is None or new.revokedAtMs is not None or new.token != old.token
        ):
            gone.add(key)
    return gone


def _replace(mapping: dict[Any, Any], new: dict[Any, Any]) -> None:
    mapping.clear()
    mapping.update(new)


def _device(row: dict[str, Any]) -> PairedDevice:
    return PairedDevice(**{**row, "roles": tuple(row["roles"]), "scopes": tuple(row["scopes"])})


def _token(row: dict[str, Any]) -> DeviceToken:
    return DeviceToken(**{**row, "scopes": tuple(row["scopes"])})


def _node(row: dict[str, Any]) -> PairedNode:
    return PairedNode(**{**row, "commands": tuple(row["commands"])})


async def sharedSecret(url: str, name: str) -> str | None:
    """The gateway secret C{name} in the store at C{url} (C{p2pnet gateway token
    --store}), or C{None}."""
    redis = connect(url)
    try:
        value: str | None = await redis.hget(SECRETS, name)
        return value
    finally:
        redis.disconnect()
