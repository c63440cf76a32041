"""Tests for C{p2pnet users} and the durable user table behind it."""

from __future__ import annotations

import io
import os
import stat
import sys

from twisted.trial import unittest

from p2pnet.cli import buildParser
from p2pnet.store.users import FILENAME


def runUsers(dataDir: str, *argv: str, stdin: str = "") -> tuple[int, str]:
    """Run C{p2pnet users --data-dir DATADIR ARGV}; (status, output)."""
    args = buildParser().parse_args(["users", "--data-dir", dataDir, *argv])
    args.out = io.StringIO()
    args.stdin = io.StringIO(stdin)
    return args.run(args), args.out.getvalue()


class UsersCommandTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dataDir = self.mktemp()
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

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
        self.assertEqual(runUsers(self.dataDir, "list"), (1, ""))  # no directory: an error
        self.assertIn("give the server's directory with --data-dir", self.stderr.getvalue())
        self.assertEqual(runUsers(self.dataDir, "add", "a:b", "--password", "x")[0], 2)
        self.assertEqual(runUsers(self.dataDir, "add", "a", stdin="\n")[0], 2)
        self.assertEqual(runUsers(self.dataDir, "add", "a", "--password", "\u0007")[0], 2)

    def test_dataDirEitherPosition(self) -> None:
        """--data-dir works before or after the action (issue 14 item 10)."""
        args = buildParser().parse_args(["users", "add", "carol", "--data-dir", self.dataDir,
                                         "--password", "pw"])
        args.out = io.StringIO()
        self.assertEqual((args.run(args), args.out.getvalue()), (0, "added carol\n"))
        args = buildParser().parse_args(["users", "list", "--data-dir", self.dataDir])
        args.out = io.StringIO()
        self.assertEqual(args.run(args), 0)
        self.assertIn("carol", args.out.getvalue())
        self.assertEqual(buildParser().parse_args(["users", "list"]).data_dir, "./p2pnet-data")

    def test_passwordFile(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("from-file\n")
        self.assertEqual(runUsers(self.dataDir, "add", "dave", "--password-file", path),
                         (0, "added dave\n"))
        self.assertEqual(runUsers(self.dataDir, "add", "dave", "--password-file", path,
                                  "--password", "x")[0], 2)
        self.assertEqual(runUsers(self.dataDir, "add", "dave", "--password-file",
                                  "/nonexistent/pw")[0], 2)
