"""The store setting (L{p2pnet.config.redisUrl}) and the store choice
(L{p2pnet.store.choice}), without a Redis server."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.config import ConfigError, RedisUrl, loadConfig, redisUrl
from p2pnet.store.choice import peerStore, userStore
from p2pnet.store.peers import PeerStore
from p2pnet.store.users import UserStore


class UrlTests(SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertEqual(redisUrl("redis://10.0.0.5"),
                         RedisUrl("10.0.0.5", 6379, 0, None, None, False))
        self.assertEqual(redisUrl("rediss://app:s%40cret@redis.example:6380/2"),
                         RedisUrl("redis.example", 6380, 2, "app", "s@cret", True))
        self.assertEqual(redisUrl("redis://:pw@[::1]:7000").password, "pw")

    def test_sentinelForms(self) -> None:
        """C{redis-sentinel://}: Sentinels separated by commas (port 26379 unless named),
        the database in the path, the monitored name after C{#} (C{mymaster} unless
        named), the credentials the primary's."""
        self.assertEqual(
            redisUrl("redis-sentinel://app:s%40cret@10.0.0.1,10.0.0.2:26380,[::1]:5/3#p2p"),
            RedisUrl("10.0.0.1", 26379, 3, "app", "s@cret", False,
                     (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 5)), "p2p"))
        self.assertEqual(redisUrl("redis-sentinel://s1"),
                         RedisUrl("s1", 26379, 0, None, None, False, (("s1", 26379),),
                                  "mymaster"))
        self.assertEqual(redisUrl("redis-sentinel://:pw@s1").password, "pw")

    def test_refused(self) -> None:
        for text in ("http://x", "redis://", "redis://h/x", "redis://h:99999",
                     "redis-sentinel://", "redis-sentinel://a,,b", "redis-sentinel://a:x",
                     "redis-sentinel://a/x", "redis-sentinel://a:99999"):
            error = self.assertRaises(ConfigError, loadConfig, {"store": text}, environ={})
            self.assertEqual(error.key, "store")

    def test_secretNotShown(self) -> None:
        for text in ("redis://:hunter2@h/x", "redis-sentinel://:hunter2@h:x",
                     "redis-sentinel://:hunter2@h/x"):
            error = self.assertRaises(ConfigError, loadConfig, {"store": text}, environ={})
            self.assertNotIn("hunter2", str(error))


class ChoiceTests(SynchronousTestCase):
    def test_sqliteByDefault(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        users, peers = userStore("", directory), peerStore("", directory)
        self.addCleanup(users.close)
        self.addCleanup(peers.close)
        self.assertIsInstance(users, UserStore)
        self.assertIsInstance(peers, PeerStore)
