"""Tests for C{p2pnet users} and the durable user table behind it."""

from __future__ import annotations

import io
import os
import stat

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from p2pnet.cli import buildParser
from p2pnet.codecs.stun import longTermKey, userhash
from p2pnet.services.turn_credentials import StoredUsers
from p2pnet.store.users import FILENAME, UserStore


def runUsers(dataDir: str, *argv: str, stdin: str = "") -> tuple[int, str]:
    """Run C{p2pnet users --data-dir DATADIR ARGV}; (status, output)."""
    args = buildParser().parse_args(["users", "--data-dir", dataDir, *argv])
    args.out = io.StringIO()
    args.stdin = io.StringIO(stdin)
    return args.run(args), args.out.getvalue()


class UsersCommandTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dataDir = self.mktemp()

    def test_addListDel(self) -> None:
        """Users are added (password from stdin), listed without passwords, deleted."""
        self.assertEqual(runUsers(self.dataDir, "add", "alice", stdin="s3cret\n"),
                         (0, "added alice\n"))
        self.assertEqual(runUsers(self.dataDir, "add", "bob", "--password", "pw"),
                         (0, "added bob\n"))
        self.assertEqual(runUsers(self.dataDir, "add", "bob", "--password", "new"),
                         (0, "changed password of bob\n"))
        status, out = runUsers(self.dataDir, "list")
        self.assertEqual(status, 0)
        self.assertEqual(out.splitlines()[0], "2 users")
        self.assertEqual([line.split("\t")[0] for line in out.splitlines()[1:]],
                         ["alice", "bob"])
        self.assertNotIn("s3cret", out)
        self.assertEqual(out.splitlines()[1].split("\t")[1], "p2pnet")
        with open(os.path.join(self.dataDir, FILENAME), "rb") as f:
            self.assertNotIn(b"s3cret", f.read())  # only keys are stored
        self.assertEqual(runUsers(self.dataDir, "del", "alice"), (0, "deleted alice\n"))
        self.assertEqual(runUsers(self.dataDir, "del", "alice")[0], 1)
        path = os.path.join(self.dataDir, FILENAME)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_refused(self) -> None:
        """Empty passwords and names with ':' are refused; del needs a table."""
        self.assertEqual(runUsers(self.dataDir, "del", "x")[0], 1)
        self.assertEqual(runUsers(self.dataDir, "list"), (0, "0 users\n"))
        self.assertEqual(runUsers(self.dataDir, "add", "a:b", "--password", "x")[0], 2)
        self.assertEqual(runUsers(self.dataDir, "add", "a", stdin="\n")[0], 2)
        self.assertEqual(runUsers(self.dataDir, "add", "a", "--password", "\u0007")[0], 2)


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
