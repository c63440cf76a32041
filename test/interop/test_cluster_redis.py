"""p2pnet nodes sharing one Redis (issue 11, the shared store): real C{twistd -n p2pnet}
children on 127.0.0.2, .3 and .4 and a private redis-server (or a primary, a replica and
a Sentinel)."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from typing import Any

from nacl.signing import SigningKey
from twisted.internet import defer, reactor, utils
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from p2pnet.codecs import addrmangle
from p2pnet.codecs.proto.rendezvous_pb2 import (
    RegisterPeer,
    RegisterPkResponse,
    RelayResponse,
    RendezvousMessage,
)
from p2pnet.codecs.stun import Attr, decodeAddress
from p2pnet.protocols.rustdesk_client import ControlledPeer, Controller
from p2pnet.protocols.stun_client import StunErrorResponse
from p2pnet.protocols.turn_client import TurnClientProtocol
from test.interop.redis_server import RedisServer, SentinelGroup, command, startRedis
from test.interop.twistd_child import TwistdChild, twistdArgv

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = [sys.executable, "-c", "import sys; from p2pnet.cli import main; sys.exit(main())"]
Result = RegisterPkResponse.Result
#: One RustDesk key pair for every node, as docs/cluster.md asks.
SIGNING = SigningKey.generate()
SECRET = base64.b64encode(bytes(SIGNING) + bytes(SIGNING.verify_key)).decode()
PUBLIC = base64.b64encode(bytes(SIGNING.verify_key)).decode()


class ClusterTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def node(self, host: str, store: str, name: str = "", *extra: str,
             services: str = "stun,turn,rendezvous") -> Any:
        child = TwistdChild(
            [*extra, "--node-name", name or host, "--key", SECRET, "--services", services,
             "--listen",
             host, "--stun-port", "0",
             "--tls-port", "0", "--alt-port", "0", "--rendezvous-port", "0", "--store", store,
             "--allow-loopback-peers", "--data-dir", os.path.abspath(self.mktemp())],
            ready=b"rendezvous server listening on", env={"PYTHONPATH": ROOT})
        yield child.start(self)
        self.addCleanup(child.stop)
        text = child.text()
        stun = re.search(r"STUN listening on udp [0-9.]+:([0-9]+)", text)
        rendezvous = re.search(
            r"rendezvous server listening on udp [0-9.]+:([0-9]+), tcp [0-9.]+:([0-9]+)", text)
        assert stun and rendezvous, text
        return child, int(stun.group(1)), int(rendezvous.group(1)), int(rendezvous.group(2))

    def users(self, store: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "users", "--store", store, *argv], capture_output=True,
                              text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))

    @defer.inlineCallbacks
    def allocate(self, host: str, port: int, user: str, password: str) -> Any:
        client = TurnClientProtocol((host, port), user, password, reactor=reactor)
        listening = reactor.listenUDP(0, client, interface="127.0.0.1")
        try:
            allocation = yield client.allocate()
            yield client.close()
            return allocation
        finally:
            yield listening.stopListening()

    @defer.inlineCallbacks
    def allocateOnceRead(self, child: TwistdChild, host: str, port: int, user: str,
                         password: str) -> Any:
        """Allocate as C{user} at C{child} once it has read the user table (a reload
        reads it after logging "reloaded"); bounded to ten seconds."""
        for _ in range(40):
            try:
                return (yield self.allocate(host, port, user, password))
            except StunErrorResponse:
                yield deferLater(reactor, 0.25, lambda: None)
        self.fail(f"{user} never logged in: " + child.text())

    @defer.inlineCallbacks
    def test_usersAndPeersShared(self) -> Any:
        store = startRedis(self)
        # beta first, so that alpha's first beat already reads beta's entry.
        b, stunB, udpB, tcpB = yield self.node("127.0.0.3", store, "beta",
                                               "--user-quota", "1")
        a, stunA, udpA, tcpA = yield self.node("127.0.0.2", store, "alpha",
                                               "--turn-redirect-above", "1", "--user-quota", "1")

        # Both nodes are in the node table.
        table = self.cli("cluster", "--store", store, "--json")
        nodes = json.loads(table.stdout or "{}")
        self.assertEqual(sorted(nodes), ["alpha", "beta"], table.stderr)
        self.assertEqual(nodes["alpha"]["services"], ["rendezvous", "stun", "turn"])
        text = self.cli("cluster", "--store", store).stdout
        self.assertEqual(text.splitlines()[0].split()[:2], ["NODE", "SERVICES"])

        # A user added once, for the cluster, logs in at both nodes.
        added = self.users(store, "add", "bob", "--password", "pw-2")
        self.assertEqual(added.stdout, "added bob\n", added.stderr)
        listed = self.users(store, "list")
        self.assertTrue(listed.stdout.startswith("1 users\nbob\tp2pnet\t"), listed.stdout)
        for child, host, port in ((a, "127.0.0.2", stunA), (b, "127.0.0.3", stunB)):
            yield self.reload(child)  # a reload reads the table at once (else within 10 s)
            yield self.allocateOnceRead(child, host, port, "bob", "pw-2")

        # Above one allocation alpha sends new ones to beta, which holds none.
        held = TurnClientProtocol(("127.0.0.2", stunA), "bob", "pw-2", reactor=reactor)
        heldPort = reactor.listenUDP(0, held, interface="127.0.0.1")
        self.addCleanup(heldPort.stopListening)
        yield held.allocate()
        with self.assertRaises(StunErrorResponse) as redirected:
            yield self.allocate("127.0.0.2", stunA, "bob", "pw-2")
        self.assertEqual(redirected.exception.code, 300)
        self.assertEqual(decodeAddress(
            redirected.exception.response.get(Attr.ALTERNATE_SERVER)), ("127.0.0.3", stunB))
        yield held.close()

        # user-quota counts at every node: an allocation at beta leaves none at alpha.
        yield self.quotaAcrossNodes(a, b, stunA, stunB, store)

        deleted = self.users(store, "del", "bob")
        self.assertEqual(deleted.stdout, "deleted bob\n", deleted.stderr)
        yield self.reload(b)
        yield deferLater(reactor, 0.2, lambda: None)  # the table read that follows
        with self.assertRaises(StunErrorResponse):
            yield self.allocate("127.0.0.3", stunB, "bob", "pw-2")

        # A RustDesk id registered at A is taken at B: another device gets UUID_MISMATCH.
        first = ControlledPeer(reactor, "127.0.0.2", udpA, tcpA, "123456789")
        pkReply, _ = yield first.registerUDP()
        self.addCleanup(first.udp.transport.stopListening)
        self.assertEqual(pkReply.register_pk_response.result, Result.OK)
        other = ControlledPeer(reactor, "127.0.0.3", udpB, tcpB, "123456789")
        other.openUDP()
        self.addCleanup(other.udp.transport.stopListening)
        other.udp.send(other.registerPkMessage())
        reply = yield other.udp.receive()
        self.assertEqual(reply.register_pk_response.result, Result.UUID_MISMATCH)
        # OnlineRequest at B: the peer registered at A, not at B, is online
        # (B's answer comes from the presence table A writes).
        flags = yield self.onlineAt("127.0.0.3", b, tcpB, "123456789", "987654321")
        self.assertEqual(flags, [True, False])

        # A controller at B reaches the peer held by A: the punch request goes through A,
        # the peer's answer comes back to B, which answers the controller.
        controller = Controller(reactor, "127.0.0.3", tcpB, bindAddress="127.0.0.5",
                                licenceKey=PUBLIC, serverPk=bytes(SIGNING.verify_key))
        served = first.serveOnce(first.udp)
        stream, reply = yield controller.punchHole("123456789")
        self.addCleanup(stream.transport.loseConnection)
        kind, message = yield served
        self.assertEqual(kind, "punch_hole")
        self.assertEqual(addrmangle.decode(message.punch_hole.socket_addr)[0], "127.0.0.5")
        phr = reply.punch_hole_response
        self.assertEqual(addrmangle.decode(phr.socket_addr), first.answeredFrom)
        # B signed the peer's key, read from the shared registry.
        self.assertEqual(controller.verifyPk("123456789", phr.pk), first.pk)
        # RequestRelay the same way; the peer's RelayResponse reaches the controller.
        asked = controller.requestRelay("123456789", "relay.example:21117")
        relayAsk = yield first.udp.receive()
        self.assertEqual(relayAsk.request_relay.relay_server, "relay.example:21117")
        yield first._answer(RendezvousMessage(relay_response=RelayResponse(
            socket_addr=relayAsk.request_relay.socket_addr, uuid=relayAsk.request_relay.uuid,
            relay_server="relay.example:21117", version="1.4.5")))
        uuid, relayReply = yield asked
        self.assertEqual((relayReply.relay_response.uuid, relayReply.relay_response.relay_server),
                         (uuid, "relay.example:21117"))

        # The same device (same uuid and key) is welcome at B.
        same = ControlledPeer(reactor, "127.0.0.3", udpB, tcpB, "123456789",
                              signingKey=first.signingKey, uuid=first.uuid)
        pkReply, _ = yield same.registerUDP()
        self.addCleanup(same.udp.transport.stopListening)
        self.assertEqual(pkReply.register_pk_response.result, Result.OK)

        # The registry from the command line, and hbbs's peers imported into it.
        listed = self.cli("peers", "--store", store, "list")
        self.assertEqual(listed.stdout.splitlines()[:2][0], "1 peers", listed.stderr)
        self.assertTrue(listed.stdout.splitlines()[1].startswith("123456789\t"))
        hbbs = os.path.abspath(self.mktemp())
        conn = sqlite3.connect(hbbs)
        conn.execute("create table peer (guid blob primary key not null, id varchar(100) not "
                     "null, uuid blob not null, pk blob not null, created_at datetime not null "
                     "default(current_timestamp), user blob, status tinyint, note "
                     "varchar(300), info text not null) without rowid")
        conn.execute("insert into peer (guid, id, uuid, pk, info) values (x'01', '555555555', "
                     "x'02', x'03', '{\"ip\": \"192.0.2.9\"}'), (x'04', '123456789', x'05', "
                     "x'06', '{}')")
        conn.commit()
        conn.close()
        imported = self.cli("peers", "--store", store, "import-hbbs", hbbs)
        self.assertEqual(imported.stdout, f"imported 1 peers from {hbbs}\n", imported.stderr)
        shown = self.cli("peers", "--store", store, "show", "555555555")
        self.assertIn("ip:         192.0.2.9", shown.stdout)

    @defer.inlineCallbacks
    def test_threeNodes(self) -> Any:
        """Three nodes, one Redis: a TURN user added through one logs in at all three; a
        RustDesk peer registered at A is punched by a controller at B and relayed through
        C's relay, bytes flowing both ways."""
        store = startRedis(self)
        c, stunC, _, _ = yield self.node("127.0.0.4", store, "gamma", "--relay-port", "0",
                                         services="stun,turn,rendezvous,relay")
        for _ in range(100):
            relay = re.search(r"relay server listening on tcp [0-9.]+:([0-9]+)", c.text())
            if relay:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        assert relay, c.text()
        relayServer = f"127.0.0.4:{relay.group(1)}"
        a, stunA, udpA, tcpA = yield self.node("127.0.0.2", store, "alpha",
                                               "--relay-servers", relayServer)
        b, stunB, udpB, tcpB = yield self.node("127.0.0.3", store, "beta",
                                               "--relay-servers", relayServer)

        missing = self.cli("gateway", "token", "--store", store)  # no gateway ran here
        self.assertEqual((missing.returncode, missing.stdout), (1, ""))
        self.assertIn("no gateway token in the store", missing.stderr)
        added = self.users(store, "add", "dave", "--password", "pw-4")
        self.assertEqual(added.stdout, "added dave\n", added.stderr)
        for child, host, port in ((a, "127.0.0.2", stunA), (b, "127.0.0.3", stunB),
                                  (c, "127.0.0.4", stunC)):
            yield self.reload(child)
            yield self.allocateOnceRead(child, host, port, "dave", "pw-4")

        peer = ControlledPeer(reactor, "127.0.0.2", udpA, tcpA, "123456789",
                              licenceKey=PUBLIC)
        pkReply, _ = yield peer.registerUDP()
        self.addCleanup(peer.udp.transport.stopListening)
        self.assertEqual(pkReply.register_pk_response.result, Result.OK)
        yield self.onlineAt("127.0.0.3", b, tcpB, "123456789")
        controller = Controller(reactor, "127.0.0.3", tcpB, bindAddress="127.0.0.5",
                                licenceKey=PUBLIC, serverPk=bytes(SIGNING.verify_key))
        served = peer.serveOnce(peer.udp).addTimeout(20, reactor)
        stream, reply = yield controller.punchHole("123456789")
        self.addCleanup(stream.transport.loseConnection)
        kind, _ = yield served
        self.assertEqual(kind, "punch_hole")
        self.assertEqual(reply.punch_hole_response.relay_server, relayServer)

        served = peer.serveOnce(peer.udp).addTimeout(20, reactor)
        # As RustDesk's client: the relay the punch response named, for both legs.
        named = reply.punch_hole_response.relay_server
        uuid, _ = yield controller.requestRelay("123456789", named)
        kind, message = yield served
        self.assertEqual((kind, message.request_relay.relay_server),
                         ("request_relay", relayServer))
        legController = yield controller.connectRelay(named, uuid, "123456789")
        self.addCleanup(legController.transport.loseConnection)
        legPeer = peer.relayLegs[0]
        self.addCleanup(legPeer.transport.loseConnection)
        legController.transport.write(b"from the controller at beta " * 1000)
        legPeer.transport.write(b"from the peer at alpha")
        atPeer = yield legPeer.waitFor(28000).addTimeout(20, reactor)
        atController = yield legController.waitFor(22).addTimeout(20, reactor)
        self.assertEqual(atPeer, b"from the controller at beta " * 1000)
        self.assertEqual(atController, b"from the peer at alpha")
        self.assertIn("relay pair", c.text())

    @defer.inlineCallbacks
    def quotaAcrossNodes(self, a: TwistdChild, b: TwistdChild, stunA: int, stunB: int,
                         store: str) -> Any:
        self.cli("users", "--store", store, "add", "quota1", "--password", "pw-q")
        for child in (a, b):
            child.process.signalProcess(signal.SIGHUP)  # the user table, and a beat
        held = TurnClientProtocol(("127.0.0.3", stunB), "quota1", "pw-q", reactor=reactor)
        port = reactor.listenUDP(0, held, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        for _ in range(50):
            try:
                yield held.allocate()
                break
            except StunErrorResponse:  # beta has not read the new user yet
                yield deferLater(reactor, 0.1, lambda: None)
        b.process.signalProcess(signal.SIGHUP)  # beta writes its entry: quota1 holds 1
        yield deferLater(reactor, 0.5, lambda: None)
        a.process.signalProcess(signal.SIGHUP)  # alpha reads it
        code = 0
        for _ in range(50):
            yield deferLater(reactor, 0.1, lambda: None)
            try:
                yield self.allocate("127.0.0.2", stunA, "quota1", "pw-q")
            except StunErrorResponse as e:
                code = e.code
                if code == 486:
                    break
        self.assertEqual(code, 486)
        yield held.close()

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PYTHONPATH=ROOT))

    @defer.inlineCallbacks
    def test_failures(self) -> Any:
        """Redis killed: what needs it is refused with the protocol's error, not a hang,
        and what memory knows is still served; Redis back (its append-only file): nothing
        acknowledged was lost. A node killed with SIGKILL: its peer registers again at the
        other node and is reached there."""
        redis = RedisServer(self)
        store = redis.url
        b, stunB, udpB, tcpB = yield self.node("127.0.0.3", store, "beta")
        a, stunA, udpA, tcpA = yield self.node("127.0.0.2", store, "alpha")
        peer = ControlledPeer(reactor, "127.0.0.2", udpA, tcpA, "123456789")
        pkReply, _ = yield peer.registerUDP()
        self.addCleanup(peer.udp.transport.stopListening)
        self.assertEqual(pkReply.register_pk_response.result, Result.OK)
        self.assertEqual(self.cli("users", "--store", store, "add", "carol", "--password",
                                  "pw-3").stdout, "added carol\n")

        redis.kill()
        newcomer = ControlledPeer(reactor, "127.0.0.2", udpA, tcpA, "555555555")
        newcomer.openUDP()
        self.addCleanup(newcomer.udp.transport.stopListening)
        newcomer.udp.send(newcomer.registerPkMessage())
        reply = yield newcomer.udp.receive().addTimeout(20, reactor)
        self.assertEqual(reply.register_pk_response.result, Result.SERVER_ERROR)
        peer.udp.send(RendezvousMessage(register_peer=RegisterPeer(id="123456789")))
        refreshed = yield peer.udp.receive().addTimeout(10, reactor)
        self.assertFalse(refreshed.register_peer_response.request_pk)  # served from memory

        redis.start()
        listed = self.cli("users", "--store", store, "list")
        self.assertIn("carol\tp2pnet", listed.stdout, listed.stderr)
        shown = self.cli("peers", "--store", store, "show", "123456789")
        self.assertIn("id:         123456789", shown.stdout, shown.stderr)
        yield self.registerWhenBack(newcomer)  # the nodes reconnect by themselves

        a.process.signalProcess("KILL")
        yield a.ended
        again = ControlledPeer(reactor, "127.0.0.3", udpB, tcpB, "123456789",
                               signingKey=peer.signingKey, uuid=peer.uuid)
        pkReply, _ = yield again.registerUDP()
        self.addCleanup(again.udp.transport.stopListening)
        self.assertEqual(pkReply.register_pk_response.result, Result.OK)
        controller = Controller(reactor, "127.0.0.3", tcpB, bindAddress="127.0.0.5",
                                licenceKey=PUBLIC)
        served = again.serveOnce(again.udp)
        stream, reply = yield controller.punchHole("123456789")
        self.addCleanup(stream.transport.loseConnection)
        kind, _ = yield served
        self.assertEqual(kind, "punch_hole")
        self.assertTrue(reply.punch_hole_response.socket_addr)

    @defer.inlineCallbacks
    def registerWhenBack(self, peer: ControlledPeer) -> Any:
        """Send C{peer}'s RegisterPk until the store takes it (bounded: 100 tries)."""
        for _ in range(100):
            peer.udp.send(peer.registerPkMessage())
            reply = yield peer.udp.receive().addTimeout(20, reactor)
            if reply.register_pk_response.result == Result.OK:
                return
            yield deferLater(reactor, 0.2, lambda: None)
        self.fail(f"never registered: {reply.register_pk_response.result}")

    @defer.inlineCallbacks
    def onlineAt(self, host: str, child: TwistdChild, tcpPort: int, *peerIds: str) -> Any:
        """Ask the node C{child} whether C{peerIds} are online until the first is
        (presence is written in batches, every half second); the last answer."""
        nat = re.search(r"rendezvous server listening on udp [0-9.]+:[0-9]+, tcp [0-9.]+:"
                        r"[0-9]+, tcp [0-9.]+:([0-9]+)", child.text())
        assert nat, child.text()
        controller = Controller(reactor, host, tcpPort, natPort=int(nat.group(1)))
        for _ in range(40):
            flags = yield controller.online(list(peerIds))
            if flags[0]:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        return flags

    @defer.inlineCallbacks
    def reload(self, child: TwistdChild) -> Any:
        """SIGHUP C{child} and wait (bounded) for its next "reloaded" line."""
        before = child.text().count("reloaded")
        child.process.signalProcess(signal.SIGHUP)
        for _ in range(100):
            if child.text().count("reloaded") > before:
                return
            yield deferLater(reactor, 0.05, lambda: None)
        self.fail("no reload: " + child.text())

    @defer.inlineCallbacks
    def test_sentinelFailover(self) -> Any:
        """A store behind Redis Sentinel (redis-sentinel://): the primary is killed, the
        Sentinel promotes the replica, and the node and the command line carry on with
        the new primary, where what was replicated before the failover is."""
        group = SentinelGroup(self)
        store = group.url
        a, stunA, udpA, tcpA = yield self.node("127.0.0.2", store, "alpha")
        self.assertEqual(self.users(store, "add", "bob", "--password", "pw-2").stdout,
                         "added bob\n")
        yield self.reload(a)
        yield self.allocate("127.0.0.2", stunA, "bob", "pw-2")
        peer = ControlledPeer(reactor, "127.0.0.2", udpA, tcpA, "123456789")
        pkReply, _ = yield peer.registerUDP()
        self.addCleanup(peer.udp.transport.stopListening)
        self.assertEqual(pkReply.register_pk_response.result, Result.OK)
        # Replication is asynchronous: wait until the replica has every write so far.
        self.assertEqual(command(group.primary.port, "wait", "1", "5000").strip(), "1")

        group.primary.kill()
        for _ in range(300):
            if group.primaryPort() == group.replica.port:
                break
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(group.primaryPort(), group.replica.port)

        # The command line finds the new primary; what was acknowledged is there.
        added = self.users(store, "add", "carol", "--password", "pw-3")
        self.assertEqual(added.stdout, "added carol\n", added.stderr)
        listed = self.users(store, "list")
        self.assertIn("bob\tp2pnet", listed.stdout, listed.stderr)
        shown = self.cli("peers", "--store", store, "show", "123456789")
        self.assertIn("id:         123456789", shown.stdout, shown.stderr)
        # The node reconnects to it by itself: a new key is stored, the new user logs in.
        newcomer = ControlledPeer(reactor, "127.0.0.2", udpA, tcpA, "555555555")
        newcomer.openUDP()
        self.addCleanup(newcomer.udp.transport.stopListening)
        yield self.registerWhenBack(newcomer)
        yield self.reload(a)
        yield self.allocateOnceRead(a, "127.0.0.2", stunA, "carol", "pw-3")
        self.assertIn("555555555", command(group.replica.port, "hkeys",
                                           "p2pnet:rendezvous:peers"))

    @defer.inlineCallbacks
    def gateway(self, host: str, store: str, name: str) -> Any:
        child = TwistdChild(
            ["--node-name", name, "--services", "gateway", "--listen", host,
             "--gateway-port", "0", "--store", store,
             "--data-dir", os.path.abspath(self.mktemp())],
            ready=b"gateway listening on", env={"PYTHONPATH": ROOT})
        yield child.start(self)
        self.addCleanup(child.stop)
        found = re.search(r"gateway listening on tcp [0-9.]+:([0-9]+)", child.text())
        assert found, child.text()
        return child, f"ws://{host}:{found.group(1)}/"

    @defer.inlineCallbacks
    def test_nodeInvokeAcrossGateways(self) -> Any:
        """A node connected to gateway A is invoked by an operator at gateway B (p2pnet
        gateway call): the result comes back through both gateways."""
        from p2pnet.protocols.gateway_client import (
            ClientOptions,
            DeviceIdentity,
            GatewayClient,
            GatewayClientProtocol,
            GatewayError,
            connectWebSocket,
        )

        store = startRedis(self)
        _, urlA = yield self.gateway("127.0.0.2", store, "gw-a")
        _, urlB = yield self.gateway("127.0.0.3", store, "gw-b")
        # No gateway-token given: the first gateway generated one into the store, the
        # other took it, and the command line prints it.
        printed = self.cli("gateway", "token", "--store", store)
        self.assertEqual(printed.returncode, 0, printed.stderr)
        token = printed.stdout.strip()
        self.assertEqual(len(token), 43)
        identity = DeviceIdentity.load(os.path.join(os.path.abspath(self.mktemp())))
        calls: list[Any] = []

        def echo(command: str, params: Any) -> Any:
            calls.append(params)
            return {"echo": params}

        node = GatewayClient(reactor, urlA, ClientOptions(
            role="node", clientId="node-host", clientMode="node", token=token,
            identity=identity, handlers={"kvm.echo": echo}, caps=("kvm",)),
            initialDelay=0.05, maxDelay=0.2)
        node.start()
        self.addCleanup(node.stop)
        yield node.whenConnected()
        invoke = json.dumps({"nodeId": identity.deviceId, "command": "kvm.echo",
                             "params": {"x": 1}, "idempotencyKey": "k1"})
        def call(params: str) -> Any:
            # Not subprocess.run: the node answering the invoke runs on this reactor.
            return utils.getProcessOutputAndValue(
                sys.executable, [*CLI[1:], "gateway", "call", "node.invoke", params, "--url",
                                 urlB, "--token", token, "--timeout", "10"],
                env=dict(os.environ, PYTHONPATH=ROOT), path=ROOT)

        answer = None
        for _ in range(20):  # the node directory entry is written as the node connects
            out, err, code = yield call(invoke)
            if code == 0:
                answer = json.loads(out)
                break
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertIsNotNone(answer, err.decode())
        self.assertEqual(answer["payload"], {"echo": {"x": 1}})
        self.assertEqual(calls, [{"x": 1}])
        out, err, code = yield call(json.dumps(
            {"nodeId": "nobody", "command": "kvm.echo", "idempotencyKey": "k2"}))
        self.assertEqual(code, 1)
        self.assertIn("NOT_CONNECTED", err.decode())

        # Paired at A, the node's device token alone authenticates it at B (the gateways
        # share devices and tokens); revoked at B, its session at A is closed and it is
        # refused there.
        # (The node client stops: holding the gateway token, it would pair again.)
        protocol = node.protocol
        node.stop()
        if protocol is not None:
            yield protocol.disconnected
        alone = ClientOptions(role="node", clientId="node-host", clientMode="node",
                              identity=identity, handlers={"kvm.echo": echo})
        # (The invokes above took longer than B's quarter-second poll.)
        atB = yield connectWebSocket(reactor, urlB,
                                     lambda: GatewayClientProtocol(reactor, alone))
        yield atB.connected
        self.assertEqual(atB.hello["auth"]["method"], "device-token")
        atB.close()
        yield atB.disconnected
        heldAtA = yield connectWebSocket(reactor, urlA,
                                         lambda: GatewayClientProtocol(reactor, alone))
        yield heldAtA.connected
        revoke = json.dumps({"deviceId": identity.deviceId, "role": "node"})
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable, [*CLI[1:], "gateway", "call", "device.token.revoke", revoke,
                             "--url", urlB, "--token", token, "--timeout", "10"],
            env=dict(os.environ, PYTHONPATH=ROOT), path=ROOT)
        self.assertEqual(code, 0, err.decode())
        # A closes the device's open session as B closed its own.
        yield heldAtA.disconnected.addTimeout(5, reactor)
        refused = False
        for _ in range(40):  # A reads the shared tables within a quarter of a second
            yield deferLater(reactor, 0.1, lambda: None)
            atA = yield connectWebSocket(reactor, urlA,
                                         lambda: GatewayClientProtocol(reactor, alone))
            try:
                yield atA.connected
            except GatewayError:
                refused = True
                break
            atA.close()
            yield atA.disconnected
        self.assertTrue(refused)

    def test_unreachableAtStart(self) -> None:
        """Redis (or every Sentinel) not there at start: one line naming the setting,
        status 1."""
        for url, line in (("redis://127.0.0.1:1/0", "cannot reach Redis at 127.0.0.1:1"),
                          ("redis-sentinel://127.0.0.1:1,127.0.0.1:2/0",
                           "cannot reach Redis Sentinel at 127.0.0.1:1: ")):
            done = subprocess.run(
                [*twistdArgv(), "-n", "--pidfile=", "--logfile=-", "p2pnet", "--services",
                 "turn", "--listen", "127.0.0.1", "--store", url, "--data-dir",
                 os.path.abspath(self.mktemp())],
                capture_output=True, text=True, timeout=60,
                env=dict(os.environ, PYTHONPATH=ROOT))
            self.assertEqual(done.returncode, 1)
            self.assertIn(f"p2pnet: store: {line}", done.stderr)
            self.assertEqual(len(done.stderr.strip().splitlines()), 1, done.stderr)
