"""Tests for L{p2pnet.commands} and L{p2pnet.cli}: how every client command ends
(deadline, Ctrl-C, closed pipe, one-line errors), --version, --data-dir."""

from __future__ import annotations

import argparse
import io
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pnet import __version__
from p2pnet.cli import buildParser, main
from p2pnet.commands import addDataDir, guarded, step


def namespace(**kwargs: Any) -> argparse.Namespace:
    return argparse.Namespace(command="demo", **kwargs)


class GuardedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.err = io.StringIO()
        self.waiting: Deferred[int] = Deferred()

    def start(self, args: argparse.Namespace, deadline: float | None) -> Deferred[int]:
        waiting = self.waiting

        async def work(reactor: Any, args: argparse.Namespace) -> int:
            step(args, "the answer from 192.0.2.1:3478")
            return await waiting

        return Deferred.fromCoroutine(
            guarded(self.clock, work, args, deadline, self.err, installSignal=False))

    def test_status(self) -> None:
        d = self.start(namespace(), 5)
        self.waiting.callback(3)
        self.assertEqual(self.successResultOf(d), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_deadline(self) -> None:
        """Whatever the command waits for, it ends at the deadline with one line naming
        what it waited for."""
        d = self.start(namespace(), 5)
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(self.err.getvalue(),
                         "p2pnet demo: gave up after 5 s while waiting for the answer from "
                         "192.0.2.1:3478 (raise --timeout to wait longer)\n")

    def test_innerTimeout(self) -> None:
        """A step's own Deferred timeout is said in words, not as (0.001, 'Deferred')."""
        self.waiting.addTimeout(0.001, self.clock)
        d = self.start(namespace(), None)
        self.clock.advance(0.001)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertIn("gave up after 0.001 s while waiting for the answer", self.err.getvalue())
        self.assertNotIn("Deferred", self.err.getvalue())

    def test_brokenPipe(self) -> None:
        d = self.start(namespace(), None)
        self.patch(__import__("p2pnet.commands", fromlist=["closedPipe"]), "closedPipe",
                   lambda args: 141)
        self.waiting.errback(BrokenPipeError())
        self.assertEqual(self.successResultOf(d), 141)

    def test_otherErrorsPropagate(self) -> None:
        d = self.start(namespace(), None)
        self.waiting.errback(ZeroDivisionError())
        self.failureResultOf(d, ZeroDivisionError)


class ParserTests(SynchronousTestCase):
    def test_version(self) -> None:
        out = io.StringIO()
        self.patch(__import__("sys"), "stdout", out)
        error = self.assertRaises(SystemExit, main, ["--version"])
        self.assertEqual(error.code, 0)
        self.assertEqual(out.getvalue(), f"p2pnet {__version__}\n")

    def test_unknownFlagOneLine(self) -> None:
        err = io.StringIO()
        self.patch(__import__("sys"), "stderr", err)
        error = self.assertRaises(SystemExit, main, ["stun", "--bogus", "192.0.2.1"])
        self.assertEqual(error.code, 2)
        self.assertEqual(err.getvalue(), "p2pnet: unrecognized arguments: --bogus "
                         "(see p2pnet --help)\n")

    def test_dataDirEitherPosition(self) -> None:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers(dest="action")
        action = sub.add_parser("list")
        addDataDir(parser, action)
        self.assertEqual(parser.parse_args(["list"]).data_dir, "./p2pnet-data")
        self.assertEqual(parser.parse_args(["--data-dir", "a", "list"]).data_dir, "a")
        self.assertEqual(parser.parse_args(["list", "--data-dir", "b"]).data_dir, "b")

    def test_interruptedSyncCommand(self) -> None:
        """Ctrl-C in a command that does not use the reactor: one line, status 130."""
        err = io.StringIO()
        self.patch(__import__("sys"), "stderr", err)

        def interrupted(args: argparse.Namespace) -> int:
            raise KeyboardInterrupt

        parser = buildParser()
        self.patch(__import__("p2pnet.cli", fromlist=["buildParser"]), "buildParser",
                   lambda: _WithRun(parser, interrupted))
        self.assertEqual(main(["users", "list"]), 130)
        self.assertEqual(err.getvalue(), "p2pnet users: interrupted\n")


class _WithRun:
    def __init__(self, parser: argparse.ArgumentParser, run: Any) -> None:
        self.parser = parser
        self.run = run

    def parse_args(self, argv: Any) -> argparse.Namespace:
        args = self.parser.parse_args(argv)
        args.run = self.run
        return args
