# -*- test-case-name: test.unit.test_store_redis -*-
"""Which store holds the durable tables: SQLite in the data directory, or the Redis of
the C{store} setting (shared by every node naming it; docs/cluster.md)."""

from __future__ import annotations

import os

from p2pnet.store.peers import FILENAME as PEERS_FILE
from p2pnet.store.peers import IPeerStore, PeerStore
from p2pnet.store.users import FILENAME as USERS_FILE
from p2pnet.store.users import IUserStore, UserStore

__all__ = ["peerStore", "userStore"]


def userStore(storeUrl: str, dataDir: str) -> IUserStore:
    """The TURN user table: C{dataDir/users.sqlite3}, or Redis at C{storeUrl}."""
    if storeUrl:
        from p2pnet.store.redis import RedisUserStore

        return RedisUserStore(storeUrl)
    return UserStore(os.path.join(dataDir, USERS_FILE))


def peerStore(storeUrl: str, dataDir: str) -> IPeerStore:
    """The RustDesk peer registry: C{dataDir/peers.sqlite3}, or Redis at C{storeUrl}."""
    if storeUrl:
        from p2pnet.store.redis import RedisPeerStore

        return RedisPeerStore(storeUrl)
    return PeerStore(os.path.join(dataDir, PEERS_FILE))
