"""The running server's view of the durable user table C{p2pnet users} writes (SQLite
through the reactor's thread pool)."""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from p2pnet.codecs.stun import longTermKey, userhash
from p2pnet.services.turn_credentials import StoredUsers
from p2pnet.store.users import FILENAME, UserStore
from test.unit.test_commands_users import runUsers


class StoredUsersTests(unittest.TestCase):
    """The running server's view of the table."""

    @defer.inlineCallbacks
    def test_reload(self) -> object:
        """Loaded on start, re-read every interval: adds and deletes take effect."""
        dataDir = self.mktemp()
        runUsers(dataDir, "add", "alice", "--password", "one")
        clock = Clock()
        users = StoredUsers(UserStore(os.path.join(dataDir, FILENAME)), clock, interval=10)
        self.addCleanup(users.stop)
        yield users.start()
        self.assertEqual(users.key("alice", "p2pnet", 1), longTermKey("alice", "p2pnet", "one"))
        self.assertEqual(users.key("alice", "p2pnet", 2),
                         longTermKey("alice", "p2pnet", "one", 2))
        self.assertIsNone(users.key("alice", "another realm", 1))
        self.assertEqual(users.userFromHash(userhash("alice", "p2pnet"), "p2pnet"), "alice")
        self.assertIsNone(users.key("bob", "p2pnet", 1))
        runUsers(dataDir, "add", "bob", "--password", "two")
        runUsers(dataDir, "del", "alice")
        yield users.reload()
        self.assertEqual((users.key("alice", "p2pnet", 1), users.key("bob", "p2pnet", 1)),
                         (None, longTermKey("bob", "p2pnet", "two")))
        self.assertIsNone(users.userFromHash(userhash("alice", "p2pnet"), "p2pnet"))
        self.assertEqual(len(users), 1)
