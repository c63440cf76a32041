"""systemd notification (L{p2pnet.sdnotify}) to a socket of the test's own."""

from __future__ import annotations

import os
import socket

from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.sdnotify import SystemdNotifier, notify


class NotifyTests(SynchronousTestCase):
    def listener(self, path: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(0)
        self.addCleanup(sock.close)
        return sock

    def test_pathAndAbstract(self) -> None:
        path = os.path.abspath(self.mktemp())
        sock = self.listener(path)
        self.assertTrue(notify("READY=1", {"NOTIFY_SOCKET": path}))
        self.assertEqual(sock.recv(100), b"READY=1")
        name = f"p2pnet-test-{os.getpid()}"
        abstract = self.listener("\0" + name)
        self.assertTrue(notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name}))
        self.assertEqual(abstract.recv(100), b"STOPPING=1")

    def test_nothingWithoutSocket(self) -> None:
        self.assertFalse(notify("READY=1", {}))
        self.assertFalse(notify("READY=1", {"NOTIFY_SOCKET": "relative"}))
        self.assertFalse(notify("READY=1", {"NOTIFY_SOCKET": "/nonexistent/socket"}))

    def test_serviceOrder(self) -> None:
        """READY=1 once the reactor runs, STOPPING=1 at stop."""
        sent: list[str] = []
        reactor = MemoryReactor()
        notifier = SystemdNotifier(reactor, sent.append)
        notifier.startService()
        self.assertEqual(sent, [])
        reactor.run()
        self.assertEqual(sent, ["READY=1\nSTATUS=serving"])
        notifier.stopService()
        self.assertEqual(sent[-1], "STOPPING=1\nSTATUS=stopping")
