"""End to end on loopback: a KVM node (L{p2pnet.node.service.NodeService}) registered
with p2pnet's rendezvous server, and the viewer of C{p2pnet connect} reaching it over
the direct, LAN and relay paths, with UDP, TCP and WebSocket registration."""

from __future__ import annotations

import base64
import os
import sys
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from p2pnet.codecs.proto import message_pb2 as pb
from p2pnet.node.hid import FileHidSink
from p2pnet.node.identity import loadIdentity
from p2pnet.node.input import InputController
from p2pnet.node.service import NodeService
from p2pnet.node.viewer import ConnectError, connectDirect, findAndConnect
from p2pnet.services.relay import RelayService
from p2pnet.services.rendezvous import RendezvousService
from p2pnet.services.rendezvous_keys import loadServerKey
from p2pnet.store.peers import PeerStore
from test.unit.nodefakes import FakeFeed, FakeInputs, Frame

SECRET = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQGKiOPddAnxlf1S2y08ul1yymcJvx2UEhvzdIgBtA9vXA=="
PUBLIC = "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w="
SERVER_PK = base64.b64decode(PUBLIC)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def until(check: Any, timeout: float = 10.0) -> None:
    """Poll C{check()} every 20 ms until true (bounded)."""
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError("condition not reached")


def startServers(case: TestCase, directory: str, alwaysUseRelay: bool = False,
                 host: str = "127.0.0.1") -> tuple[RendezvousService, RelayService]:
    """p2pnet's rendezvous and relay on C{host} (ephemeral ports), the server key of
    rustdesk.md §9.4, the relay handed out by the server; stopped at cleanup."""
    store = PeerStore(os.path.join(directory, "peers.sqlite3"))
    relay = RelayService(reactor, key=PUBLIC, dataDir=directory, listen=(host,), port=0)
    relay.startService()
    case.addCleanup(relay.stopService)
    relayAt = f"[{host}]:{relay.boundPorts['tcp']}" if ":" in host else \
        f"{host}:{relay.boundPorts['tcp']}"
    rendezvous = RendezvousService(
        reactor, store, loadServerKey(SECRET, directory), listen=(host,), port=0,
        relayServers=(relayAt,), alwaysUseRelay=alwaysUseRelay, keepAlive=30)
    rendezvous.startService()
    case.addCleanup(rendezvous.stopService)
    return rendezvous, relay


class NodeHarness(TestCase):
    """Servers, a node and a viewer on loopback: what the end-to-end tests share."""

    timeout = 60

    host = "127.0.0.1"

    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)

    def servers(self, alwaysUseRelay: bool = False) -> None:
        self.rendezvous, self.relay = startServers(self, self.dir, alwaysUseRelay,
                                                   self.host)
        self.ports = self.rendezvous.boundPorts

    async def node(self, transport: str = "udp", directPort: int | None = None,
                   alwaysUseRelay: bool = False, realInput: bool = False) -> NodeService:
        self.servers(alwaysUseRelay)
        self.identity = loadIdentity(self.dir, "123456789", "pa55word")
        self.feed = FakeFeed()
        self.inputs: Any = FakeInputs()
        if realInput:
            self.keyboardPath = os.path.join(self.dir, "hidg0")
            self.mousePath = os.path.join(self.dir, "hidg1")
            self.inputs = InputController(
                FileHidSink(self.keyboardPath), FileHidSink(self.mousePath),
                lambda: (self.feed.width, self.feed.height))
        node = NodeService(reactor, self.identity, self.feed, self.inputs,
                           server=(self.host, self.ports["udp"]), transport=transport,
                           licenceKey=PUBLIC, tcpPort=self.ports["tcp"],
                           wsPort=self.ports["ws"], natPort=self.ports["nat"], directPort=directPort,
                           directListen="127.0.0.1")
        node.startService()
        self.addCleanup(node.stopService)
        await until(lambda: node.registration.status == "registered")
        await until(lambda: "123456789" in self.rendezvous.peers
                    and self.rendezvous.peers["123456789"].online(reactor.seconds()))
        self.nodeService = node
        return node

    async def connect(self, password: str = "pa55word", bind: str = "127.0.0.2",
                      **kw: Any) -> tuple[str, Any]:
        path, session = await findAndConnect(
            reactor, (self.host, self.ports["tcp"]), "123456789", password,
            serverPk=SERVER_PK, licenceKey=PUBLIC, bindAddress=bind, **kw)
        self.addCleanup(session.close)
        return path, session

    async def checkSession(self, session: Any) -> None:
        """Video flows both ways of the pipe; input reaches the node's controller."""
        self.assertTrue(session.encrypted)
        self.assertEqual(session.peerInfo.displays[0].width, 1280)
        frames: list[tuple[bytes, bool, int]] = []
        session.onFrame = lambda f, codec: frames.append((f.data, f.key, f.pts))
        await until(lambda: len(self.feed.viewers) == 1)
        self.feed.push(Frame(b"\x00\x00\x00\x01\x67key", True, 0))
        self.feed.push(Frame(b"\x00\x00\x00\x01\x41delta", False, 33))
        await until(lambda: len(frames) == 2)
        self.assertEqual(frames, [(b"\x00\x00\x00\x01\x67key", True, 0),
                                  (b"\x00\x00\x00\x01\x41delta", False, 33)])
        session.send(pb.Message(key_event=pb.KeyEvent(press=True, chr=ord("a"))))
        await until(lambda: len(self.inputs.events) == 1)
        session.close()
        await until(lambda: self.inputs.events[-1][1] == "release")
        await until(lambda: self.nodeService.viewers == {})


class NodeEndToEndTests(NodeHarness):
    """The node's paths and sessions over IPv4."""

    async def test_directPathUdpRegistration(self) -> None:
        """Controller on another address: PunchHole, PunchHoleSent, TCP to L (rustdesk.md §6.2)."""
        node = await self.node()
        # The NAT test against the real server: one local port seen the same by both
        # ports on loopback.
        await until(lambda: node.status()["nat"] == "asymmetric")
        path, session = await self.connect()
        self.assertEqual(path, "direct")
        self.assertEqual([s.path for s in node.viewers.values()], ["direct"])
        self.assertEqual(node.stats.counters["nat_open"], 1)  # rustdesk.md §6.2 step 5.2
        await self.checkSession(session)

    async def test_lanPath(self) -> None:
        """Same address as the node: FetchLocalAddr, LocalAddr, TCP to L (rustdesk.md §6.3)."""
        node = await self.node()
        path, session = await self.connect(bind="127.0.0.1")
        self.assertEqual(path, "lan")
        self.assertEqual([s.path for s in node.viewers.values()], ["lan"])
        await self.checkSession(session)

    async def test_relayPathForced(self) -> None:
        """--relay: the node chooses the relay on PunchHole (rustdesk.md §6.2 step 3, §6.4)."""
        node = await self.node()
        path, session = await self.connect(forceRelay=True)
        self.assertEqual(path, "relay")
        self.assertEqual([s.path for s in node.viewers.values()], ["relay"])
        await self.checkSession(session)

    async def test_relayAfterDirectFails(self) -> None:
        """No direct attempt succeeds: RequestRelay through the server, the node answers
        RelayResponse and opens its leg (rustdesk.md §4.5 steps 4-7)."""
        node = await self.node()
        path, session = await self.connect(directAttempts=0)
        self.assertEqual(path, "relay")
        self.assertEqual([s.path for s in node.viewers.values()], ["relay"])
        await self.checkSession(session)

    async def test_alwaysUseRelay(self) -> None:
        node = await self.node(alwaysUseRelay=True)
        path, session = await self.connect()
        self.assertEqual(path, "relay")
        self.assertEqual([s.path for s in node.viewers.values()], ["relay"])
        await self.checkSession(session)

    async def test_tcpRegistration(self) -> None:
        node = await self.node(transport="tcp")
        path, session = await self.connect()
        self.assertEqual(path, "direct")
        await self.checkSession(session)
        self.assertIsNotNone(node.registration.link)

    async def test_webSocketRegistrationRelays(self) -> None:
        """Over WebSocket the node always answers with the relay (rustdesk.md §6.2 step 3)."""
        await self.node(transport="ws")
        path, session = await self.connect()
        self.assertEqual(path, "relay")
        await self.checkSession(session)

    async def test_wrongPassword(self) -> None:
        node = await self.node()
        with self.assertRaises(ConnectError) as caught:
            await self.connect(password="wrong")
        self.assertEqual(str(caught.exception), "Wrong Password")
        self.assertEqual(node.viewers, {})
        self.assertEqual(node.stats.counters["login_failed"], 1)

    async def test_unknownId(self) -> None:
        await self.node()
        with self.assertRaises(ConnectError) as caught:
            await findAndConnect(reactor, ("127.0.0.1", self.ports["tcp"]), "555555555",
                                 "x", serverPk=SERVER_PK, licenceKey=PUBLIC)
        self.assertEqual(str(caught.exception), "ID does not exist")

    async def test_directIpAccess(self) -> None:
        """--node-direct-port: no rendezvous, no handshake, password still checked."""
        node = await self.node(directPort=0)
        port = node.directPortListening.getHost().port
        session = await connectDirect(reactor, ("127.0.0.1", port), "123456789", "pa55word")
        self.addCleanup(session.close)
        self.assertFalse(session.encrypted)
        self.assertEqual([s.path for s in node.viewers.values()], ["ip"])

    def command(self, *args: str) -> Any:
        return getProcessOutputAndValue(
            sys.executable,
            ["-m", "p2pnet.cli", "connect", "123456789", "--server",
             f"127.0.0.1:{self.ports['tcp']}", "--server-key", PUBLIC, "--bind", "127.0.0.2",
             *args], env=dict(os.environ, PYTHONPATH=ROOT), path=ROOT)

    async def test_connectCommandWrongPassword(self) -> None:
        await self.node()
        out, err, code = await self.command("--password", "nope")
        self.assertEqual((code, out), (1, b""))
        self.assertEqual(err.decode(), "p2pnet connect: Wrong Password; check --password\n")

    async def test_connectCommand(self) -> None:
        """The real C{p2pnet connect} process: path, fps and bitrate printed."""
        node = await self.node()
        pushing = [True]

        async def push() -> None:
            n = 0
            while pushing[0]:
                self.feed.push(Frame(b"\x00\x00\x00\x01\x65" + bytes(1000), n % 30 == 0,
                                     n * 33))
                n += 1
                await deferLater(reactor, 0.033, lambda: None)

        pusher = defer.ensureDeferred(push())
        out, err, code = await self.command("--password", "pa55word", "--duration", "1",
                                            "--type", "hi", "--click", "10,20")
        pushing[0] = False
        await pusher
        self.assertEqual(code, 0, err.decode())
        text = out.decode()
        self.assertIn("connected to 123456789 via direct (encrypted), 1280x720 h264", text)
        self.assertRegex(text, r"received \d+ frames in 1\.\d s: [\d.]+ fps, [\d.]+ Mbit/s")
        kinds = [kind for _, kind, _ in self.inputs.events]
        self.assertEqual(kinds, ["key", "key", "mouse", "mouse", "mouse", "release"])
        self.assertEqual(node.viewers, {})

    def reports(self, path: str, size: int) -> list[bytes]:
        with open(path, "rb") as f:
            data = f.read()
        return [data[i:i + size] for i in range(0, len(data), size)]

    async def test_inputBecomesExactReports(self) -> None:
        """p2pnet connect --type and --click through the real process: the HID files
        get exactly the boot keyboard and absolute mouse reports, and a key held when
        the viewer leaves is released."""
        node = await self.node(realInput=True)
        out, err, code = await self.command("--password", "pa55word", "--duration", "0.2",
                                            "--type", "Hi", "--click", "640,360")
        self.assertEqual(code, 0, err.decode())
        await until(lambda: node.viewers == {})
        shiftH = bytes([0x02, 0, 0x0B, 0, 0, 0, 0, 0])
        i = bytes([0, 0, 0x0C, 0, 0, 0, 0, 0])
        none = bytes(8)
        self.assertEqual(self.reports(self.keyboardPath, 8), [shiftH, none, i, none])
        # 1280x720 display: x = round(640 * 32767 / 1279), y = round(360 * 32767 / 719).
        x, y = 16396, 16406
        at = bytes([x & 0xFF, x >> 8, y & 0xFF, y >> 8, 0])
        self.assertEqual(self.reports(self.mousePath, 6),
                         [b"\x00" + at, b"\x01" + at, b"\x00" + at])

        # A viewer that leaves with a key down: the node lets go of it.
        path, session = await self.connect()
        session.send(pb.Message(key_event=pb.KeyEvent(down=True, chr=ord("a"))))
        await until(lambda: len(self.reports(self.keyboardPath, 8)) == 5)
        session.close()
        await until(lambda: len(self.reports(self.keyboardPath, 8)) == 6)
        self.assertEqual(self.reports(self.keyboardPath, 8)[4:],
                         [bytes([0, 0, 0x04, 0, 0, 0, 0, 0]), none])


class NodeOverIPv6Tests(NodeHarness):
    """The node's paths with the servers, the node and the viewer on ::1."""

    host = "::1"

    async def connect(self, password: str = "pa55word", bind: str = "::1",
                      **kw: Any) -> tuple[str, Any]:
        return await super().connect(password, bind, **kw)

    async def test_directPathIPv6(self) -> None:
        """UDP registration over IPv6; the viewer shares the node's address, so the LAN
        path (FetchLocalAddr, LocalAddr) carries the IPv6 address."""
        node = await self.node()
        path, session = await self.connect()
        self.assertIn(path, ("direct", "lan"))
        self.assertEqual(node.registration.status, "registered")
        await self.checkSession(session)

    async def test_relayIPv6(self) -> None:
        await self.node()
        path, session = await self.connect(directAttempts=0)
        self.assertEqual(path, "relay")
        await self.checkSession(session)

    async def test_tcpRegistrationIPv6(self) -> None:
        node = await self.node(transport="tcp")
        path, session = await self.connect()
        await self.checkSession(session)
        self.assertIsNotNone(node.registration.link)

