"""Tests for L{p2pnet.node.hid}: report sinks never raise into a session."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pnet.node.hid import FileHidSink, IHidSink, MemoryHidSink


class MemorySinkTests(SynchronousTestCase):
    def test_records(self) -> None:
        sink = MemoryHidSink(limit=3)
        self.assertTrue(verifyObject(IHidSink, sink))
        for i in range(5):
            sink.write(bytes([i]) * 8)
        self.assertEqual(list(sink.reports), [bytes([i]) * 8 for i in (2, 3, 4)])


class FileSinkTests(SynchronousTestCase):
    def test_appendsToRegularFile(self) -> None:
        path = self.mktemp()
        sink = FileHidSink(path)
        self.assertTrue(verifyObject(IHidSink, sink))
        self.assertFalse(os.path.exists(path))  # opened on the first report
        sink.write(b"\x02\x00\x04\x00\x00\x00\x00\x00")
        sink.close()
        sink.write(b"\x00" * 8)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"\x02\x00\x04" + b"\x00" * 13)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual((sink.written, sink.errors), (2, 0))
        sink.close()

    def test_errorsCounted(self) -> None:
        # A directory that does not exist: every write fails, none raises.
        sink = FileHidSink(os.path.join(self.mktemp(), "missing", "hidg0"))
        sink.write(b"\x00" * 8)
        sink.write(b"\x00" * 8)
        self.assertEqual((sink.written, sink.errors), (0, 2))
        self.assertIn("No such file", sink.lastError)

    def test_devNeverCreated(self) -> None:
        sink = FileHidSink("/dev/p2pnet-test-no-such-hidg")
        sink.write(b"\x00" * 8)
        self.assertEqual(sink.errors, 1)
        self.assertFalse(os.path.exists("/dev/p2pnet-test-no-such-hidg"))

    def test_fullDeviceDropsReport(self) -> None:
        # A pipe nobody reads stands in for a gadget whose host stopped polling.
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        path = f"/proc/self/fd/{w}"
        sink = FileHidSink(path)
        self.addCleanup(sink.close)
        sink.write(b"\x00" * 8)  # the sink opens its own descriptor of the pipe
        os.close(w)
        for _ in range(70_000 // 8 + 10):
            sink.write(b"\x00" * 8)
        self.assertGreater(sink.dropped, 0)
        self.assertEqual(sink.errors, 0)
