"""Tests for L{p2pnet.commands.gateway} without the network: arguments and the token."""

from __future__ import annotations

import io
import os
import sys

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.cli import buildParser
from p2pnet.commands.gateway import runToken, storedToken
from p2pnet.store.gateway import GatewayStore


class CommandTests(SynchronousTestCase):
    def test_parser(self) -> None:
        args = buildParser().parse_args(["gateway", "call", "node.list", '{"a": 1}',
                                         "--scope", "operator.read"])
        self.assertEqual((args.method, args.params, args.scope),
                         ("node.list", '{"a": 1}', ["operator.read"]))

    def test_token(self) -> None:
        dataDir = self.mktemp()
        os.makedirs(dataDir)
        self.assertIsNone(storedToken(dataDir))
        store = GatewayStore(os.path.join(dataDir, "gateway.sqlite"))
        store.createSecret("gateway-token", "tok")
        store.close()
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertEqual(runToken(buildParser().parse_args(
            ["gateway", "token", "--data-dir", dataDir])), 0)
        self.assertEqual(out.getvalue(), "tok\n")


    def test_badStoreUrl(self) -> None:
        """A malformed C{--store} is one line naming the option and status 2, before
        any connection (the same check for C{gateway token}, C{peers} and C{cluster})."""
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        for argv in (["gateway", "token", "--store", "http://x"],
                     ["peers", "--store", "redis://h/x", "list"],
                     ["cluster", "--store", "redis-sentinel://a,,b"]):
            args = buildParser().parse_args(argv)
            self.assertEqual(args.run(args), 2, argv)
        lines = err.getvalue().splitlines()
        self.assertEqual(len(lines), 3, lines)
        self.assertTrue(all(": --store: " in line for line in lines), lines)
