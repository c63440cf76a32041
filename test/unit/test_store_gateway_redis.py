"""The gateway's tables in a shared Redis (L{p2pnet.store.gateway_redis}), on an
in-memory stand-in for Redis and a L{Clock}: what one gateway writes, another reads."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pnet.store.gateway import DeviceToken, GatewayStore, PairedDevice, PairedNode
from p2pnet.store.gateway_redis import FULL_RELOAD, POLL_INTERVAL, RedisGatewayStore


class FakeRedis:
    """The commands the store uses, on dicts. With C{held}, answers wait in
    C{self.pending} (in order, as on one connection) until L{release}."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, str]] = {}
        self.strings: dict[str, str] = {}
        self.held = False
        self.down = False
        self.pending: list[tuple[Deferred[Any], Any]] = []
        self.commands = 0

    def _answer(self, value: Any) -> Deferred[Any]:
        self.commands += 1
        if self.down:
            return fail(ConnectionError("Not connected"))
        if self.held:
            d: Deferred[Any] = Deferred()
            self.pending.append((d, value))
            return d
        return succeed(value)

    def release(self) -> None:
        pending, self.pending = self.pending, []
        for d, value in pending:
            d.callback(value)

    def get(self, key: str) -> Deferred[Any]:
        return self._answer(self.strings.get(key))

    def incr(self, key: str) -> Deferred[Any]:
        self.strings[key] = str(int(self.strings.get(key, "0")) + 1)
        return self._answer(int(self.strings[key]))

    def hgetall(self, key: str) -> Deferred[Any]:
        return self._answer(dict(self.hashes.get(key, {})))

    def hset(self, key: str, field: str, value: str) -> Deferred[Any]:
        self.hashes.setdefault(key, {})[field] = value
        return self._answer(1)

    def hsetnx(self, key: str, field: str, value: str) -> Deferred[Any]:
        table = self.hashes.setdefault(key, {})
        added = field not in table
        table.setdefault(field, value)
        return self._answer(int(added))

    def hdel(self, key: str, field: str) -> Deferred[Any]:
        found = self.hashes.get(key, {}).pop(field, None)
        return self._answer(int(found is not None))

    def disconnect(self) -> None:
        pass


def device(deviceId: str = "dev-1") -> PairedDevice:
    return PairedDevice(deviceId, "pk", ("node",), ("node.invoke",), "linux", "", "cli",
                        "Box", 1000)


class SharedTablesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.redis = FakeRedis()
        self.a = self.store()
        self.b = self.store()

    def store(self) -> RedisGatewayStore:
        store = RedisGatewayStore(clock=self.clock, redis=self.redis)
        self.addCleanup(store.close)
        return store

    def test_readyAfterFirstRead(self) -> None:
        self.redis.down = True
        store = self.store()
        self.assertFalse(store.ready)
        self.redis.down = False
        self.clock.advance(POLL_INTERVAL)
        self.assertTrue(store.ready)
        self.successResultOf(store.loaded)

    def test_writesReachTheOtherGateway(self) -> None:
        """A pairing, a token, a label and a node pairing made at A are at B after one
        poll; B's memory is replaced in place (the gateway's rooms hold the dicts)."""
        tokensAtB = self.b.tokens
        token = DeviceToken("dev-1", "node", "secret-1", ("node.invoke",), 5)
        self.successResultOf(self.a.savePairedDevice(device()))
        self.successResultOf(self.a.saveToken(token))
        self.successResultOf(self.a.saveLabel("dev-1", "rack 3"))
        self.successResultOf(self.a.saveNode(PairedNode("dev-1", "Box", "linux", "1.0", ("kvm.echo",), 7)))
        self.assertEqual(self.b.devices, {})
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual(self.b.devices, {"dev-1": device()})
        self.assertIs(self.b.tokens, tokensAtB)
        self.assertEqual(self.b.tokens, {("dev-1", "node"): token})
        self.assertEqual(self.b.labels, {"dev-1": "rack 3"})
        self.assertEqual(self.b.nodes["dev-1"].commands, ("kvm.echo",))

    def test_revokeAndRemoveReachTheOtherGateway(self) -> None:
        self.successResultOf(self.a.savePairedDevice(device()))
        self.successResultOf(self.a.saveToken(DeviceToken("dev-1", "node", "s", (), 5)))
        self.clock.advance(POLL_INTERVAL)
        revoked = self.b.revokeToken("dev-1", "node", 99)
        assert revoked is not None
        self.successResultOf(revoked)
        self.assertIsNone(self.b.revokeToken("dev-1", "operator", 99))
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual(self.a.tokens[("dev-1", "node")].revokedAtMs, 99)
        self.successResultOf(self.b.removeDevice("dev-1"))
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual((self.a.devices, self.a.tokens), ({}, {}))

    def test_withdrawnReported(self) -> None:
        """B is told which devices and tokens A took away, not what A added."""
        seen: list[set[Any]] = []
        self.b.onWithdrawn = seen.append
        for name in ("dev-1", "dev-2", "dev-3"):
            self.successResultOf(self.a.savePairedDevice(device(name)))
            self.successResultOf(self.a.saveToken(DeviceToken(name, "node", "s", (), 5)))
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual(seen, [])
        revoked = self.a.revokeToken("dev-1", "node", 9)
        assert revoked is not None
        self.successResultOf(revoked)
        self.successResultOf(self.a.saveToken(DeviceToken("dev-2", "node", "s2", (), 5)))
        self.successResultOf(self.a.removeDevice("dev-3"))
        self.successResultOf(self.a.saveLabel("dev-1", "unrelated"))
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual(seen, [{("dev-1", "node"), ("dev-2", "node"), ("dev-3", None),
                                 ("dev-3", "node")}])
        self.clock.advance(POLL_INTERVAL * 200)
        self.assertEqual(len(seen), 1)

    def test_unchangedVersionReadsOnlyTheVersion(self) -> None:
        """Polls cost one GET while nothing changes; every L{FULL_RELOAD} seconds the
        tables are read anyway."""
        self.clock.advance(POLL_INTERVAL)
        before = self.redis.commands
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual(self.redis.commands - before, 2)  # one GET per store
        self.redis.hashes.setdefault("p2pnet:gateway:labels", {})["dev-1"] = "behind"
        self.clock.pump([POLL_INTERVAL] * int(FULL_RELOAD / POLL_INTERVAL))
        self.assertEqual(self.b.labels, {"dev-1": "behind"})

    def test_readBeforeALocalWriteDoesNotUndoIt(self) -> None:
        """A read sent before a local change answers without it: memory keeps the
        change, and the next poll reads again."""
        self.redis.strings["p2pnet:gateway:version"] = "17"  # changed elsewhere
        self.redis.held = True
        self.clock.advance(POLL_INTERVAL)  # A and B: GET version (held)
        self.redis.release()  # both see a new version: read the tables (held)
        written = self.a.saveLabel("dev-1", "new")
        self.redis.release()  # the tables, read before the label
        self.assertEqual(self.a.labels, {"dev-1": "new"})
        self.redis.release()  # the HSET and its INCR
        self.redis.release()
        self.successResultOf(written)
        self.redis.held = False
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual(self.a.labels, {"dev-1": "new"})
        self.assertEqual(self.b.labels, {"dev-1": "new"})

    def test_outageKeepsTheLastCopy(self) -> None:
        self.successResultOf(self.a.savePairedDevice(device()))
        self.clock.advance(POLL_INTERVAL)
        self.redis.down = True
        self.redis.strings.clear()
        self.clock.pump([POLL_INTERVAL] * 10)
        self.assertEqual(list(self.b.devices), ["dev-1"])
        self.redis.down = False
        self.redis.hashes.clear()
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual(self.b.devices, {})
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_secretShared(self) -> None:
        self.a.createSecret("gateway-token", "t0k")
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual(self.b.secret("gateway-token"), "t0k")

    def test_requiredSecretWrittenOnceAndShared(self) -> None:
        """Two gateways that both need a token and find none: each offers one, the first
        written wins, both use it; neither is ready before it has read it back."""
        made = iter(["first", "second"])
        stores = []
        self.redis.held = True  # both read the empty table before either writes
        for _ in range(2):
            stores.append(RedisGatewayStore(clock=self.clock, redis=self.redis,
                                            required={"gateway-token": lambda: next(made)}))
            self.addCleanup(stores[-1].close)
        self.redis.release()  # the version keys: none
        self.redis.release()  # the tables: no secret, so each offers one
        self.assertEqual([s.ready for s in stores], [False, False])
        self.redis.held = False
        self.redis.release()  # the two HSETNX answered; the version counted
        self.assertEqual([s.ready for s in stores], [False, False])
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual([s.ready for s in stores], [True, True])
        self.assertEqual([s.secret("gateway-token") for s in stores], ["first", "first"])
        self.assertEqual(self.redis.hashes["p2pnet:gateway:secrets"],
                         {"gateway-token": "first"})

    def test_requiredSecretKept(self) -> None:
        """A secret already in the store is used as it is, at once."""
        self.redis.hashes["p2pnet:gateway:secrets"] = {"gateway-token": "old"}
        store = RedisGatewayStore(clock=self.clock, redis=self.redis,
                                  required={"gateway-token": lambda: "new"})
        self.addCleanup(store.close)
        self.assertTrue(store.ready)
        self.assertEqual(store.secret("gateway-token"), "old")

    def test_requiredSecretWrittenAgainWhenDeleted(self) -> None:
        """Deleted from Redis while running: the next read writes a new one."""
        store = RedisGatewayStore(clock=self.clock, redis=self.redis,
                                  required={"gateway-token": lambda: "again"})
        self.addCleanup(store.close)
        self.clock.advance(POLL_INTERVAL)
        self.redis.hashes["p2pnet:gateway:secrets"].clear()
        self.redis.incr("p2pnet:gateway:version")
        self.clock.advance(POLL_INTERVAL)
        self.clock.advance(POLL_INTERVAL)
        self.assertEqual(store.secret("gateway-token"), "again")

    def test_closeStopsPolling(self) -> None:
        self.a.close()
        self.a.close()
        self.b.close()
        before = self.redis.commands
        self.clock.advance(POLL_INTERVAL * 4)
        self.assertEqual(self.redis.commands, before)


class SeedTests(TestCase):
    """A gateway that joins a cluster keeps the devices paired with it alone (the
    SQLite writes run on the reactor's thread pool)."""

    @inlineCallbacks
    def sqlite(self, *devices: PairedDevice) -> Any:
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "gateway.sqlite")
        local = GatewayStore(path)
        for paired in devices:
            yield local.savePairedDevice(paired)
            yield local.saveToken(DeviceToken(paired.deviceId, "node", "kept", (), 5))
        local.close()
        return path

    @inlineCallbacks
    def test_copiedIntoEmptyTables(self) -> Any:
        clock, redis = Clock(), FakeRedis()
        redis.hashes["p2pnet:gateway:devices"] = {}
        path = yield self.sqlite(device("old-1"), device("old-2"))
        store = RedisGatewayStore(clock=clock, redis=redis, seed=path)
        self.addCleanup(store.close)
        clock.advance(POLL_INTERVAL)
        self.assertTrue(store.ready)
        self.assertEqual(sorted(store.devices), ["old-1", "old-2"])
        self.assertEqual(store.tokens[("old-1", "node")].token, "kept")
        self.assertEqual(redis.strings["p2pnet:gateway:version"], "1")

    @inlineCallbacks
    def test_notCopiedOverASharedTable(self) -> Any:
        clock, redis = Clock(), FakeRedis()
        redis.strings["p2pnet:gateway:version"] = "4"
        path = yield self.sqlite(device("old"))
        store = RedisGatewayStore(clock=clock, redis=redis, seed=path)
        self.addCleanup(store.close)
        self.assertTrue(store.ready)
        self.assertEqual(store.devices, {})

    @inlineCallbacks
    def test_seedsTokenCopied(self) -> Any:
        """The gateway token a lone gateway generated becomes the cluster's: its
        operators' scripts keep working."""
        clock, redis = Clock(), FakeRedis()
        path = yield self.sqlite(device("old"))
        local = GatewayStore(path)
        local.createSecret("gateway-token", "lone")
        local.close()
        store = RedisGatewayStore(clock=clock, redis=redis, seed=path,
                                  required={"gateway-token": lambda: "new"})
        self.addCleanup(store.close)
        clock.advance(POLL_INTERVAL)
        self.assertTrue(store.ready)
        self.assertEqual(store.secret("gateway-token"), "lone")

    def test_missingFileIsNothingToCopy(self) -> None:
        store = RedisGatewayStore(clock=Clock(), redis=FakeRedis(), seed=self.mktemp())
        self.addCleanup(store.close)
        self.assertTrue(store.ready)
