"""The TURN channel-data fast path in the kernel (docs/fastpath.md), on loopback.

These tests load the BPF program, so they need root (or CAP_BPF and CAP_NET_ADMIN), a
kernel with tcx (Linux 6.6+) and the program built (C{make fastpath}); each is skipped
with the reason otherwise. coturn's C{turnutils_uclient} drives the server as in
L{test.interop.test_interop_turn}; the program's counters and the Python path's show
which path each datagram took.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from p2pnet.codecs.fastpath_maps import forwardEntry, reverseEntry
from p2pnet.fastpath.kernel import OBJECT_FILE, FastPathUnavailable, loadKernelFastPath
from p2pnet.protocols.turn_client import TurnClientProtocol
from test.interop.test_interop_turn import PASSWORD, USER, TurnServerMixin
from test.interop.twistd_child import TwistdChild

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Bytes per uclient message (C{runUclient}'s C{-l}).
MESSAGE_SIZE = 120


def requireFastPath() -> None:
    """Skip unless the program can be loaded here."""
    if os.geteuid() != 0:
        raise unittest.SkipTest("loading BPF programs needs root")
    if not os.path.exists(OBJECT_FILE):
        raise unittest.SkipTest("the fast path is not built (make fastpath)")
    try:
        loadKernelFastPath().close()
    except FastPathUnavailable as e:
        raise unittest.SkipTest(f"no fast path here: {e}") from None


class UclientThroughTheKernel(TurnServerMixin, unittest.TestCase):
    """turnutils_uclient over UDP with channels: every ChannelData and every echo goes
    through the kernel, none reaches Python, nothing is lost."""

    timeout = 120

    def setUp(self) -> None:
        requireFastPath()
        self.startServer(fast_path="on")
        self.assertIsNotNone(self.turn.fastPath)

    def counters(self) -> dict[str, int]:
        kernel = self.turn.fastPath.kernel.stats()
        python = self.turn.stats.counters
        return {"kernelOut": kernel["forwarded_out"], "kernelIn": kernel["forwarded_in"],
                "pythonOut": python["turn.packets.to_peer"],
                "pythonIn": python["turn.packets.from_peer"]}

    @defer.inlineCallbacks
    def check(self, peer: str, *flags: str, client: str = "127.0.0.1",
              port: int | None = None) -> Any:
        before = self.counters()
        text = yield self.runUclient(*flags, peer=peer, client=client, port=port)
        sent = int(re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=\d+\s*$", text, re.M)[-1])
        after = self.counters()
        self.assertEqual(after["pythonOut"] - before["pythonOut"], 0, text)
        self.assertEqual(after["pythonIn"] - before["pythonIn"], 0, text)
        self.assertEqual(after["kernelOut"] - before["kernelOut"], sent, text)
        self.assertEqual(after["kernelIn"] - before["kernelIn"], sent, text)
        # The allocations' totals, read back from the program, are what the peer got
        # and echoed.
        self.turn.fastPath.collectAll()
        counted = self.turn.stats.counters
        self.assertEqual(counted["turn.fastpath.bytes_to_peers"], sent * MESSAGE_SIZE)
        self.assertEqual(counted["turn.fastpath.bytes_from_peers"], sent * MESSAGE_SIZE)
        self.assertEqual(counted["turn.fastpath.packets_to_peers"], sent)
        # Whatever uclient left, killed by an operator: its entries go with it.
        self.turn.table.kill(user=USER)
        self.assertEqual(self.turn.fastPath.written, {})

    def test_udpChannelsIPv4(self) -> Any:
        return self.check("127.0.0.1")

    def test_udpChannelsIPv6(self) -> Any:
        if not self.v6:
            raise unittest.SkipTest("no IPv6 loopback on this host")
        return self.check("::1", client="::1", port=self.port6)

    def test_sendIndicationsStayInPython(self) -> Any:
        """C{-s}: Send and Data indications are the Python path's (zero loss there)."""
        before = self.counters()
        d = self.runUclient("-s")

        def checked(text: str) -> None:
            after = self.counters()
            self.assertEqual(after["kernelOut"], before["kernelOut"])
            self.assertGreater(after["pythonOut"], before["pythonOut"])

        return d.addCallback(checked)


class EntriesFollowTheTable(TurnServerMixin, unittest.TestCase):
    """A channel bound by p2pnet's own client: forwarded in the kernel while it lives,
    and not a datagram more once the allocation is gone."""

    timeout = 60

    def setUp(self) -> None:
        requireFastPath()
        self.startServer(fast_path="on")

    @defer.inlineCallbacks
    def test_deleteStopsForwardingAtOnce(self) -> Any:
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(peer.close)
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        client = TurnClientProtocol(("127.0.0.1", self.port), USER, PASSWORD, reactor=reactor)
        listening = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        allocation = yield client.allocate()
        relayed = allocation.relayed[0]
        yield client.channelBind(peer.getsockname())
        stats = self.turn.fastPath.kernel.stats
        before = stats()["forwarded_out"]
        client.send(peer.getsockname(), b"through the kernel")
        data = yield self.receive(peer)
        self.assertEqual(data[0], b"through the kernel")
        self.assertEqual(data[1], tuple(relayed))
        self.assertEqual(stats()["forwarded_out"], before + 1)

        yield client.close()  # Refresh with lifetime 0: the allocation is deleted
        self.assertEqual(len(self.turn.table), 0)
        self.assertEqual(self.turn.fastPath.written, {})
        inBefore = stats()["forwarded_in"]
        peer.sendto(b"too late", tuple(relayed))
        yield deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(stats()["forwarded_in"], inBefore)

    @defer.inlineCallbacks
    def receive(self, sock: socket.socket) -> Any:
        for _ in range(100):
            try:
                return sock.recvfrom(2048)
            except BlockingIOError:
                yield deferLater(reactor, 0.02, lambda: None)
        self.fail("nothing arrived")


class DeniedPeer(TurnServerMixin, unittest.TestCase):
    """A peer the policy denies (loopback, by default) is refused a channel, and nothing
    about it reaches the maps."""

    timeout = 60

    def setUp(self) -> None:
        requireFastPath()
        self.startServer(fast_path="on", allow_loopback_peers=False)

    @defer.inlineCallbacks
    def test_neverWritten(self) -> Any:
        from p2pnet.protocols.stun_client import StunErrorResponse

        client = TurnClientProtocol(("127.0.0.1", self.port), USER, PASSWORD, reactor=reactor)
        listening = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        yield client.allocate()
        refused = yield self.assertFailure(client.channelBind(("127.0.0.1", 9)),
                                           StunErrorResponse)
        self.assertEqual(refused.code, 403)
        self.assertEqual([len(w) for w in self.turn.fastPath.written.values()], [0])
        self.assertEqual(self.turn.fastPath.kernel.stats()["forwarded_out"], 0)
        yield client.close()


class KernelDeadlines(unittest.TestCase):
    """The program's own deadline check: an entry past it forwards nothing, at once,
    whatever the Python side does next."""

    def setUp(self) -> None:
        requireFastPath()
        self.kernel = loadKernelFastPath()
        self.addCleanup(self.kernel.close)

    def sock(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        s.settimeout(2)
        return s

    def test_pastDeadlineGoesToTheStack(self) -> None:
        client, server, relayed, peer = (self.sock() for _ in range(4))
        c, s, r, p = (x.getsockname() for x in (client, server, relayed, peer))
        deadline = time.monotonic_ns() + 300_000_000
        self.kernel.track(9)
        self.kernel.forward.update(*forwardEntry(c, s, 0x4002, r, p, 9, 1, deadline))
        self.kernel.reverse.update(*reverseEntry(p, r, c, s, 0x4002, 9, 1, deadline, True))
        client.sendto(b"\x40\x02\x00\x03abc", s)
        self.assertEqual(peer.recvfrom(100), (b"abc", r))
        peer.sendto(b"xyz", r)
        self.assertEqual(client.recvfrom(100), (b"\x40\x02\x00\x03xyz", s))
        time.sleep(0.4)  # past the deadline (a real-time check of the kernel's clock)
        client.sendto(b"\x40\x02\x00\x03def", s)
        self.assertEqual(server.recvfrom(100), (b"\x40\x02\x00\x03def", c))
        peer.sendto(b"uvw", r)
        self.assertEqual(relayed.recvfrom(100), (b"uvw", p))
        counted = self.kernel.counters(9)
        self.assertEqual((counted.packetsOut, counted.bytesOut, counted.packetsIn,
                          counted.bytesIn), (1, 3, 1, 3))
        self.assertEqual(self.kernel.stats()["expired"], 2)


class NothingOutlivesTheProcess(unittest.TestCase):
    """A p2pnet killed with SIGKILL leaves no program attached: its tcx links were held
    by the process's file descriptors only."""

    timeout = 60

    def links(self) -> list[str]:
        bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
        if not os.path.exists(bpftool):
            raise unittest.SkipTest("bpftool is not installed (make test installs it)")
        shown = subprocess.run([bpftool, "-j", "link", "show"], capture_output=True,
                               text=True, timeout=10)
        ours = [link for link in json.loads(shown.stdout or "[]")
                if link.get("prog_id") in self.programs(bpftool)]
        return [str(link.get("id")) for link in ours]

    def programs(self, bpftool: str) -> set[int]:
        shown = subprocess.run([bpftool, "-j", "prog", "show"], capture_output=True,
                               text=True, timeout=10)
        return {p["id"] for p in json.loads(shown.stdout or "[]")
                if p.get("name") == "turn_fastpath"}

    @defer.inlineCallbacks
    def test_sigkill(self) -> Any:
        requireFastPath()
        before = self.links()
        child = TwistdChild(
            ["--services", "stun,turn", "--listen", "127.0.0.1", "--stun-port", "0",
             "--tls-port", "0", "--fast-path", "on", "--data-dir",
             os.path.abspath(self.mktemp())],
            ready=b"TURN on the STUN sockets", env={"PYTHONPATH": ROOT})
        yield child.start(self)
        self.addCleanup(child.stop)
        self.assertIn("channel data relayed in the kernel", child.text())
        running = self.links()
        self.assertGreater(len(running), len(before))
        child.process.signalProcess("KILL")
        yield child.ended
        for _ in range(50):  # the kernel frees the links as the process's files close
            if self.links() == before:
                break
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(self.links(), before)
