"""Tests for L{p2pnet.testing}, the fakes offered to embedders."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.testing import FakeDatagramTransport


class FakeDatagramTransportTests(SynchronousTestCase):
    def test_writes(self) -> None:
        transport = FakeDatagramTransport("::1", 9)
        transport.write(b"a", ("::1", 1))
        self.assertRaises(ValueError, transport.write, b"b")
        transport.connect("::1", 2)
        transport.write(b"c")
        self.assertEqual(transport.written, [(b"a", ("::1", 1)), (b"c", ("::1", 2))])
        self.assertEqual(transport.getHost().host, "::1")
        transport.stopListening()
        self.assertTrue(transport.stopped)
