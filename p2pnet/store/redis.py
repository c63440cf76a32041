# -*- test-case-name: test.unit.test_store_redis,test.interop.test_cluster_redis -*-
"""The TURN user table and the RustDesk peer registry in Redis (C{store = redis://...}),
so several p2pnet nodes share them (docs/cluster.md).

The client is txredisapi, a Twisted-native Redis client with reconnects (no thread per
request); each store holds one lazy connection. The data:

- C{p2pnet:turn:users}, a hash: user name -> JSON C{{realm, md5, sha256, userhash,
  createdAt}} (hex keys, as the SQLite table holds them: never a password);
- C{p2pnet:rendezvous:peers}, a hash: RustDesk id -> JSON C{{uuid, pk, ip, createdAt}}
  (base64 bytes).

A write's Deferred fires once Redis has answered it, so what a client is told was
stored is in Redis (its durability is Redis's: C{appendonly yes} with C{appendfsync
always} for nothing lost on a crash of Redis itself). While Redis is unreachable a call
fails with the client's connection error, which the services turn into the protocol's
error answer; txredisapi reconnects on its own.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from p2pnet.config import RedisUrl, redisUrl
from p2pnet.errors import ConfigError
from p2pnet.store.peers import PeerRecord
from p2pnet.store.users import StoredUser, userRow

__all__ = ["PEERS_KEY", "USERS_KEY", "RedisInbox", "RedisNodes", "RedisPeerStore", "RedisUserStore",
           "checkReachable", "connect"]

log = Logger()

#: Presence rows in the order asked (C{None}: no live entry).
PresenceRows = list[dict[str, Any] | None]

USERS_KEY = "p2pnet:turn:users"
PEERS_KEY = "p2pnet:rendezvous:peers"
#: Prefix of the node table's keys (one per node, expiring).
NODE_PREFIX = "p2pnet:node:"
#: Prefix of the rendezvous nodes' inboxes (L{RedisInbox}).
INBOX_PREFIX = "p2pnet:rendezvous:inbox:"
#: Prefix of the gateways' inboxes (cross-gateway C{node.invoke}).
GATEWAY_INBOX_PREFIX = "p2pnet:gateway:inbox:"
#: Which gateway holds which connected node: a hash, node id -> gateway name.
GATEWAY_NODES_KEY = "p2pnet:gateway:nodes"
#: Seconds an inbox nobody reads is kept after its last message.
INBOX_TTL = 60
#: Most messages one inbox read takes.
INBOX_BATCH = 64
#: Inboxes whose expiry renewal time a node remembers before it starts afresh.
INBOX_KEYS = 1024
#: The presence table: a hash, peer id -> the node holding it, its address, and until when.
ONLINE_KEY = "p2pnet:rendezvous:online"
#: Seconds presence entries are gathered before one write.
PRESENCE_FLUSH = 0.5
#: Seconds to connect, and to wait for an answer.
TIMEOUT = 5.0


#: Seconds a Sentinel query for the primary waits for an answer naming a healthy one
#: before the connection tries again (txredisapi's own default is 10).
SENTINEL_DISCOVERY = 1.0


def checkReachable(url: str, timeout: float = 3.0, key: str = "store") -> None:
    """Connect to the Redis of C{url} (to one of its Sentinels, for a Sentinel address)
    once, before the services start, so an unreachable store stops start-up with one line
    naming the setting.

    @raise ConfigError: no address answers TCP within C{timeout}.
    """
    address = redisUrl(url)
    targets = address.sentinels or ((address.host, address.port),)
    errors = []
    for host, port in targets:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except OSError as e:
            errors.append(f"{_hostPort(host, port)}: {e.strerror or e}")
    what = "Redis Sentinel" if address.sentinels else "Redis"
    raise ConfigError(key, f"cannot reach {what} at {', '.join(errors)}")


def _hostPort(host: str, port: int) -> str:
    """C{host:port}, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Bounded:
    """A txredisapi connection whose every command gives up after L{TIMEOUT} seconds.

    A lazy connection keeps commands waiting while Redis is away, so without a bound a
    caller (a registration, a login) would hang until Redis returns instead of getting
    its protocol's error answer at once.
    """

    def __init__(self, connection: Any, clock: Any) -> None:
        self._connection = connection
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._connection, name)
        if name == "disconnect":
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if isinstance(result, Deferred):
                result.addTimeout(TIMEOUT, self._clock)
            return result

        return call


def connect(url: str) -> Any:
    """A lazy txredisapi connection to C{url} (it connects, and reconnects, by itself),
    every command bounded by L{TIMEOUT}. For a Sentinel address the connection asks the
    Sentinels for the primary before every connection attempt, so after a failover it
    reconnects to the new primary."""
    import txredisapi
    from twisted.internet import reactor, ssl

    address: RedisUrl = redisUrl(url)
    if address.sentinels:
        return _Bounded(_SentinelConnection(address), reactor)
    return _Bounded(txredisapi.lazyConnection(
        address.host, address.port, dbid=address.db, reconnect=True,
        password=address.password, username=address.username,
        ssl_context_factory=ssl.ClientContextFactory() if address.tls else False,
        connectTimeout=TIMEOUT, replyTimeout=TIMEOUT, convertNumbers=False), reactor)


class _SentinelConnection:
    """The primary's connection, found through txredisapi's Sentinel client, which also
    holds a connection to each Sentinel; C{disconnect} closes them all."""

    def __init__(self, address: RedisUrl) -> None:
        import txredisapi

        self._sentinel = txredisapi.Sentinel(
            list(address.sentinels), connectTimeout=TIMEOUT, replyTimeout=TIMEOUT)
        self._sentinel.discovery_timeout = SENTINEL_DISCOVERY
        self._primary = self._sentinel.master_for(
            address.service, dbid=address.db, password=address.password,
            username=address.username, replyTimeout=TIMEOUT, convertNumbers=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._primary, name)

    def disconnect(self) -> Deferred[Any]:
        """Close the primary's connection and the Sentinels'."""
        return gatherResults([self._primary.disconnect(), self._sentinel.disconnect()],
                             consumeErrors=True)


class RedisUserStore:
    """The TURN user table in Redis; the same calls as L{p2pnet.store.users.UserStore}."""

    def __init__(self, url: str) -> None:
        self._redis = connect(url)

    def all(self) -> Deferred[dict[str, StoredUser]]:
        """Every user, by name."""

        def decode(found: dict[str, str]) -> dict[str, StoredUser]:
            users = {}
            for name, text in (found or {}).items():
                row = json.loads(text)
                users[name] = StoredUser(row["realm"], bytes.fromhex(row["md5"]),
                                         bytes.fromhex(row["sha256"]),
                                         bytes.fromhex(row["userhash"]))
            return users

        d: Deferred[Any] = self._redis.hgetall(USERS_KEY)
        return d.addCallback(decode)

    def list(self) -> Deferred[list[tuple[str, str, int]]]:
        """C{(name, realm, created UNIX time)} of every user, by name (never the keys)."""

        def rows(found: dict[str, str]) -> list[tuple[str, str, int]]:
            out = []
            for name, text in sorted((found or {}).items()):
                row = json.loads(text)
                out.append((name, row["realm"], int(row["createdAt"])))
            return out

        d: Deferred[Any] = self._redis.hgetall(USERS_KEY)
        return d.addCallback(rows)

    def add(self, name: str, password: str, realm: str, now: float) -> Deferred[bool]:
        """Add C{name} or change its password; fires C{True} when the user is new."""
        row = userRow(name, password, realm)
        text = json.dumps({"realm": row.realm, "md5": row.keyMd5.hex(),
                           "sha256": row.keySha256.hex(), "userhash": row.userhash.hex(),
                           "createdAt": int(now)})
        d: Deferred[Any] = self._redis.hset(USERS_KEY, name, text)
        return d.addCallback(lambda added: int(added) == 1)

    def remove(self, name: str) -> Deferred[bool]:
        """Delete C{name}; fires C{True} when there was such a user."""
        d: Deferred[Any] = self._redis.hdel(USERS_KEY, name)
        return d.addCallback(lambda removed: int(removed) == 1)

    def close(self) -> None:
        """Close the connection."""
        self._redis.disconnect()

class RedisPeerStore:
    """The RustDesk peer registry in Redis; implements L{p2pnet.store.peers.IPeerStore}."""

    def __init__(self, url: str, clock: Any = None) -> None:
        self._redis = connect(url)
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self._pending: dict[str, str] = {}
        self._flush: Any = None

    def get(self, peerId: str) -> Deferred[PeerRecord | None]:
        """The stored peer with id C{peerId}, or C{None}."""

        def decode(text: str | None) -> PeerRecord | None:
            return None if text is None else self._record(peerId, text)

        d: Deferred[Any] = self._redis.hget(PEERS_KEY, peerId)
        return d.addCallback(decode)

    def put(self, record: PeerRecord) -> Deferred[None]:
        """Insert or update C{record}; fires once Redis has it."""
        d: Deferred[Any] = self._redis.hset(PEERS_KEY, record.id, self._text(record))
        return d.addCallback(lambda _: None)

    def close(self) -> None:
        """Write what presence is pending, then close the connection."""
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
            self._write()
        self._redis.disconnect()

    def list(self, limit: int = 100, offset: int = 0) -> Deferred[list[PeerRecord]]:
        """Peers ordered by id (read whole: for the command line, not the server)."""

        def page(found: dict[str, str]) -> list[PeerRecord]:
            ids = sorted(found or {})[offset:offset + limit]
            return [self._record(peerId, found[peerId]) for peerId in ids]

        d: Deferred[Any] = self._redis.hgetall(PEERS_KEY)
        return d.addCallback(page)

    def count(self) -> Deferred[int]:
        """How many peers are stored."""
        d: Deferred[Any] = self._redis.hlen(PEERS_KEY)
        return d.addCallback(int)

    def importRecords(self, records: Sequence[PeerRecord]) -> Deferred[int]:
        """Add the C{records} whose id is not stored yet; fires with how many."""
        d: Deferred[Any] = gatherResults([
            self._redis.hsetnx(PEERS_KEY, r.id, self._text(r)) for r in records])
        return d.addCallback(lambda results: sum(int(x) for x in results))

    @staticmethod
    def _text(record: PeerRecord) -> str:
        return json.dumps({"uuid": base64.b64encode(record.uuid).decode(),
                           "pk": base64.b64encode(record.pk).decode(), "ip": record.ip,
                           "createdAt": record.createdAt})

    @staticmethod
    def _record(peerId: str, text: str) -> PeerRecord:
        row = json.loads(text)
        return PeerRecord(peerId, base64.b64decode(row["uuid"]), base64.b64decode(row["pk"]),
                          row["ip"], row["createdAt"])

    # -- presence (p2pnet.services.rendezvous_registry.Presence) ---------------------------

    def markOnline(self, peerId: str, node: str, addr: tuple[str, int],
                   ttl: float) -> Deferred[None]:
        """Record that C{node} holds C{peerId} at C{addr} until C{ttl} seconds from now.

        Entries are gathered and written together, one HSET of C{ONLINE_KEY} every
        L{PRESENCE_FLUSH} seconds: one command per peer cost 130 us of CPU each
        (docs/performance.md), one per flush is shared by every peer in it.
        """
        until = self.clock.seconds() + ttl
        self._pending[peerId] = json.dumps(
            {"node": node, "host": addr[0], "port": addr[1], "until": until})
        if self._flush is None:
            self._flush = self.clock.callLater(PRESENCE_FLUSH, self._write)
        return succeed(None)

    def _write(self) -> None:
        self._flush = None
        pending, self._pending = self._pending, {}
        if pending:
            d: Deferred[Any] = self._redis.hmset(ONLINE_KEY, pending)
            d.addErrback(lambda f: log.warn("cannot write presence to the store: {error}",
                                            error=f.getErrorMessage()))

    def _rows(self, peerIds: Sequence[str]) -> Deferred[PresenceRows]:
        """The live presence rows of C{peerIds}, in order (C{None}: none or expired)."""
        now = self.clock.seconds()

        def decode(values: Sequence[str | None]) -> PresenceRows:
            rows: PresenceRows = []
            for text in values:
                row = json.loads(text) if text is not None else None
                rows.append(row if row is not None and row.get("until", 0) > now else None)
            return rows

        d: Deferred[Any] = self._redis.hmget(ONLINE_KEY, list(peerIds))
        return d.addCallback(decode)

    def online(self, peerIds: Sequence[str]) -> Deferred[set[str]]:
        """Which of C{peerIds} some node holds now (their entries have not expired)."""
        if not peerIds:
            return succeed(set())
        return self._rows(peerIds).addCallback(
            lambda rows: {i for i, r in zip(peerIds, rows, strict=True) if r is not None})

    def where(self, peerId: str) -> Deferred[tuple[str, tuple[str, int]] | None]:
        """The node holding C{peerId} and the peer's address there, or C{None}."""

        def first(rows: PresenceRows) -> tuple[str, tuple[str, int]] | None:
            row = rows[0]
            return None if row is None else (row["node"], (row["host"], int(row["port"])))

        return self._rows([peerId]).addCallback(first)


class RedisNodes:
    """The cluster's node table: each node's load, written by the node every few seconds
    and expiring when it stops writing (C{p2pnet:node:NAME}; L{p2pnet.cluster})."""

    def __init__(self, url: str) -> None:
        self._redis = connect(url)

    def beat(self, name: str, state: dict[str, Any], ttl: float) -> Deferred[None]:
        """Record C{name}'s C{state} for the next C{ttl} seconds."""
        d: Deferred[Any] = self._redis.set(NODE_PREFIX + name, json.dumps(state),
                                           expire=int(ttl))
        return d.addCallback(lambda _: None)

    def leave(self, name: str) -> Deferred[None]:
        """Forget C{name} (a clean stop)."""
        d: Deferred[Any] = self._redis.delete(NODE_PREFIX + name)
        return d.addCallback(lambda _: None)

    def nodes(self) -> Deferred[dict[str, dict[str, Any]]]:
        """Every node that wrote lately, by name."""

        def fetch(keys: Sequence[str]) -> Deferred[dict[str, dict[str, Any]]]:
            names = sorted(k[len(NODE_PREFIX):] for k in keys or ())
            if not names:
                return succeed({})
            got: Deferred[Any] = self._redis.mget([NODE_PREFIX + n for n in names])
            return got.addCallback(lambda values: {
                n: json.loads(v) for n, v in zip(names, values, strict=True) if v is not None})

        d: Deferred[Any] = self._redis.keys(NODE_PREFIX + "*")
        return d.addCallback(fetch)

    def close(self) -> None:
        """Close the connection."""
        self._redis.disconnect()

class RedisInbox:
    """Messages between the rendezvous nodes of a cluster: each node takes from its own
    list (C{p2pnet:rendezvous:inbox:NAME}, blocking pop) and pushes onto another's. A
    message waits in Redis until its node takes it; an inbox nobody reads expires
    L{INBOX_TTL} seconds after its last message (a node that died).

    Each Redis command costs this process about as much CPU as a whole RegisterPeer
    (docs/performance.md), so an inbox spends few: a read takes every message waiting
    (up to L{INBOX_BATCH}) in two commands, and a push renews the inbox's expiry only
    when a sixth of L{INBOX_TTL} has passed since this node last did.
    """

    def __init__(self, url: str, node: str, prefix: str = INBOX_PREFIX,
                 clock: Any = None, redis: tuple[Any, Any] | None = None) -> None:
        """
        @param clock: the L{IReactorTime} of the expiry renewals (the global reactor if
            C{None}).
        @param redis: the reading and the writing connection, instead of connecting to
            C{url} twice.
        """
        if clock is None:
            from twisted.internet import reactor as clock
        self.node = node
        self.prefix = prefix
        self._clock = clock
        # The reader only makes blocking pops: they would hold other commands up.
        self._in, self._out = redis if redis is not None else (connect(url), connect(url))
        self._expiresRenewed: dict[str, float] = {}  # inbox key -> when, by this node
        self._countedPop = True  # False once Redis refused RPOP with a count (< 6.2)

    def send(self, node: str, payload: dict[str, Any]) -> Deferred[None]:
        """Push C{payload} onto C{node}'s inbox; fires once Redis has it."""
        key = self.prefix + node
        d: Deferred[Any] = self._out.lpush(key, json.dumps(payload))
        now = self._clock.seconds()
        if now - self._expiresRenewed.get(key, float("-inf")) >= INBOX_TTL / 6:
            if len(self._expiresRenewed) > INBOX_KEYS:
                self._expiresRenewed.clear()
            self._expiresRenewed[key] = now
            # Sent at once, behind the push on the same connection: one round trip.
            renewed: Deferred[Any] = self._out.expire(key, INBOX_TTL)
            d = gatherResults([d, renewed], consumeErrors=True)
        return d.addCallback(lambda _: None)

    def receive(self, timeout: int = 1) -> Deferred[list[dict[str, Any]]]:
        """The messages for this node, oldest first, once there is one; an empty list
        after C{timeout} seconds without any."""
        key = self.prefix + self.node
        d: Deferred[Any] = self._in.brpop(key, timeout=timeout)

        def more(found: Any) -> Any:
            if not found:
                return []
            first = json.loads(found[1])
            if not self._countedPop:
                return [first]
            rest: Deferred[Any] = self._in.execute_command("RPOP", key, INBOX_BATCH - 1)
            return rest.addCallbacks(
                lambda items: [first, *(json.loads(item) for item in items or ())],
                lambda failure: self._noCountedPop(failure, first))

        return d.addCallback(more)

    def _noCountedPop(self, failure: Any, first: dict[str, Any]) -> list[dict[str, Any]]:
        """RPOP with a count failed: Redis before 6.2 answers an error (one message per
        read from now on); a lost connection is the read's failure."""
        from txredisapi import ResponseError

        failure.trap(ResponseError)
        self._countedPop = False
        log.info("this Redis has no RPOP with a count (before 6.2): the inbox is read one "
                 "message at a time")
        return [first]

    def close(self) -> None:
        """Close both connections."""
        self._in.disconnect()
        self._out.disconnect()


class RedisGatewayNodes:
    """Which gateway of a cluster each connected node is connected to
    (C{GATEWAY_NODES_KEY}), for C{node.invoke} across gateways."""

    def __init__(self, url: str) -> None:
        self._redis = connect(url)

    def up(self, nodeId: str, gateway: str) -> Deferred[None]:
        """C{nodeId} connected to C{gateway}."""
        d: Deferred[Any] = self._redis.hset(GATEWAY_NODES_KEY, nodeId, gateway)
        return d.addCallback(lambda _: None)

    def down(self, nodeId: str, gateway: str) -> Deferred[None]:
        """C{nodeId} left C{gateway} (forgotten unless another gateway holds it now)."""

        def forget(holder: str | None) -> Any:
            if holder == gateway:
                return self._redis.hdel(GATEWAY_NODES_KEY, nodeId)
            return None

        d: Deferred[Any] = self._redis.hget(GATEWAY_NODES_KEY, nodeId)
        return d.addCallback(forget).addCallback(lambda _: None)

    def where(self, nodeId: str) -> Deferred[str | None]:
        """The gateway C{nodeId} is connected to, or C{None}."""
        d: Deferred[Any] = self._redis.hget(GATEWAY_NODES_KEY, nodeId)
        return d

    def close(self) -> None:
        """Close the connection."""
        self._redis.disconnect()

