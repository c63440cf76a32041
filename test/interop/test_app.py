"""Tests for L{p2pnet.app} on real sockets and processes: starting the tree, the embedding
example."""

from __future__ import annotations

import os
import sys

from twisted.internet import utils
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pnet import Config, buildService
from p2pnet.testing import UDPMemoryReactor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class StartTests(SynchronousTestCase):
    """The tree binds real loopback sockets when started."""

    def test_startAndStop(self) -> None:
        """The tree starts (binding sockets) and stops."""
        reactor = UDPMemoryReactor()
        root = buildService(Config(services=("stun",), listen=("127.0.0.1",), stun_port=0,
                                   tls_port=0, data_dir=self.mktemp()), reactor)
        root.startService()
        self.assertTrue(reactor.udpPorts)
        root.stopService()
        self.assertFalse(root.getServiceNamed("stun").ports)


class EmbeddingExampleTests(TestCase):
    """docs/examples/embed_stun.py, which docs/embedding.md shows, runs as documented."""

    def test_example(self):  # noqa: ANN201
        script = os.path.join(ROOT, "docs", "examples", "embed_stun.py")
        d = utils.getProcessOutputAndValue(sys.executable, [script], env=dict(os.environ),
                                           path=os.getcwd())

        def check(result) -> None:  # noqa: ANN001
            out, err, code = result
            self.assertEqual(code, 0, err.decode())
            text = out.decode()
            self.assertIn("STUN server on 127.0.0.1:", text)
            self.assertIn("mapped address: 127.0.0.1:", text)
            self.assertIn("'stun.binding.success': 1", text)

        return d.addCallback(check)
