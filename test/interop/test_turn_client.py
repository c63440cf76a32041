"""Tests for L{p2pnet.protocols.turn_client} and C{p2pnet turn}: against the real TURN
service on loopback, and with a Clock for the keep-alive timers."""

from __future__ import annotations

import argparse
import io
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.trial import unittest

from p2pnet.app import buildService
from p2pnet.commands.turn import turnMain
from p2pnet.config import Config
from p2pnet.protocols.stun_client import StunErrorResponse
from p2pnet.protocols.turn_client import TurnClientProtocol, connectTurnStream


class Echo(DatagramProtocol):
    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.transport.write(data, addr)  # type: ignore[union-attr]


class ServerMixin:
    """The appliance's STUN+TURN services on 127.0.0.1 and a UDP echo peer."""

    def setUp(self) -> None:
        self.startServer()

    def startServer(self) -> None:
        test: Any = self
        root = buildService(Config(
            services=("stun", "turn"), listen=("127.0.0.1",), stun_port=0, tls_port=0,
            data_dir=test.mktemp(), user=(("alice", "pw"),), allow_loopback_peers=True,
            relay_ports=(40000, 49999)))
        root.startService()
        test.addCleanup(root.stopService)
        stun: Any = root.getServiceNamed("stun")
        self.turn: Any = root.getServiceNamed("turn")
        self.stun = stun
        self.port = [p.getHost().port for p in stun.ports if getattr(p, "factory", None) is None][0]
        self.echo = reactor.listenUDP(0, Echo(), interface="127.0.0.1")
        test.addCleanup(self.echo.stopListening)
        self.peer = ("127.0.0.1", self.echo.getHost().port)


class LoopbackTests(ServerMixin, unittest.TestCase):
    """The UDP client against the server on 127.0.0.1."""

    def client(self, password: str = "pw") -> TurnClientProtocol:
        client = TurnClientProtocol(("127.0.0.1", self.port), "alice", password,
                                    reactor=reactor)
        port = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return client

    @defer.inlineCallbacks
    def test_relay(self) -> Any:
        """Allocate, permission, Send indication, channel, refresh, close."""
        client = self.client()
        allocation = yield client.allocate()
        self.assertEqual(allocation.relayed[0][0], "127.0.0.1")
        self.assertEqual(allocation.lifetime, 600)
        received: list[tuple[tuple[str, int], bytes]] = []
        got: Deferred[None] = Deferred()

        def onData(peer: tuple[str, int], data: bytes) -> None:
            received.append((peer, data))
            if len(received) == 2:
                got.callback(None)

        client.onData = onData
        yield client.createPermission("127.0.0.1")
        client.send(self.peer, b"by indication")
        channel = yield client.channelBind(self.peer)
        self.assertEqual(channel, 0x4000)
        client.send(self.peer, b"by channel")
        yield got
        self.assertEqual(sorted(received), sorted([(self.peer, b"by indication"),
                                                   (self.peer, b"by channel")]))
        granted = yield client.refresh(1200)
        self.assertEqual(granted, 1200)
        self.assertEqual(len(self.turn.allocations), 1)
        yield client.close()
        self.assertEqual(self.turn.allocations, {})

    @defer.inlineCallbacks
    def test_badPassword(self) -> Any:
        """Wrong credentials fail with the 401."""
        client = self.client("wrong")
        with self.assertRaises(StunErrorResponse) as caught:
            yield client.allocate()
        self.assertEqual(caught.exception.code, 401)

    @defer.inlineCallbacks
    def test_command(self) -> Any:
        """C{p2pnet turn} prints the relayed address and the round-trip time."""
        out, err = io.StringIO(), io.StringIO()
        args = argparse.Namespace(host="127.0.0.1", port=self.port, user="alice",
                                  password="pw", peer=None, count=2, size=50, timeout=5.0)
        status = yield Deferred.fromCoroutine(turnMain(reactor, args, out, err))
        self.assertEqual(status, 0, err.getvalue())
        self.assertRegex(out.getvalue(), r"relayed address: 127\.0\.0\.1:\d+")
        self.assertRegex(out.getvalue(), r"round-trip time: [\d.]+ ms average")
        self.assertEqual(self.turn.allocations, {})

    @defer.inlineCallbacks
    def test_commandFailure(self) -> Any:
        """A refused allocation is reported with status 1."""
        out, err = io.StringIO(), io.StringIO()
        args = argparse.Namespace(host=f"127.0.0.1:{self.port}", port=0, user="alice",
                                  password="no", peer=None, count=1, size=50, timeout=1.0)
        status = yield Deferred.fromCoroutine(turnMain(reactor, args, out, err))
        self.assertEqual(status, 1)
        self.assertIn("401", err.getvalue())


class TcpEcho(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class Collect(protocol.Protocol):
    """A peer connecting in: collects what arrives, fires C{done} at C{want} bytes."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.want and not self.done.called:
            self.done.callback(self.received)


class TcpRelayClientTests(ServerMixin, unittest.TestCase):
    """The RFC 6062 client (TurnStreamClientProtocol, TurnDataConnection) against the
    server on loopback."""

    def tcpPort(self) -> int:
        return [p.getHost().port for p in self.stun.ports
                if getattr(p, "factory", None) is not None][0]

    @defer.inlineCallbacks
    def control(self) -> Any:
        control = yield connectTurnStream("127.0.0.1", self.tcpPort(), "alice", "pw",
                                          reactor=reactor)
        self.addCleanup(control.close)
        allocation = yield control.allocate(tcp=True)
        return control, allocation

    @defer.inlineCallbacks
    def dataConnection(self, control: Any, connectionId: int) -> Any:
        data = yield connectTurnStream("127.0.0.1", self.tcpPort(), "", "", reactor=reactor,
                                       credentials=control.credentials,
                                       dataConnection=True)
        self.addCleanup(data.transport.loseConnection)
        yield data.bind(connectionId)
        return data

    @defer.inlineCallbacks
    def test_connect(self) -> Any:
        """Connect to a TCP echo peer, bind a data connection, bytes come back."""
        factory = protocol.Factory.forProtocol(TcpEcho)
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        peer = ("127.0.0.1", listening.getHost().port)
        control, allocation = yield self.control()
        self.assertEqual(allocation.relayed[0][0], "127.0.0.1")
        connectionId = yield control.connect(peer)
        with self.assertRaises(StunErrorResponse) as caught:
            yield control.connect(peer)
        self.assertEqual(caught.exception.code, 446)
        data = yield self.dataConnection(control, connectionId)
        got: Deferred[None] = Deferred()
        received = []

        def onData(chunk: bytes) -> None:
            received.append(chunk)
            if len(b"".join(received)) >= 10000 and not got.called:
                got.callback(None)

        data.setReceiver(onData)
        data.write(b"x" * 10000)
        yield got
        self.assertEqual(b"".join(received), b"x" * 10000)

    @defer.inlineCallbacks
    def test_connectionAttempt(self) -> Any:
        """A peer connecting in is announced; the bound data connection carries bytes
        both ways, including what the peer sent before the bind."""
        control, allocation = yield self.control()
        yield control.createPermission("127.0.0.1")
        attempts: Deferred[tuple[Any, int]] = Deferred()
        control.onConnectionAttempt = lambda peer, cid: attempts.callback((peer, cid))
        peerSide = Collect(5)
        yield protocol.ClientCreator(reactor, lambda: peerSide).connectTCP(
            *allocation.relayed[0])
        self.addCleanup(peerSide.transport.loseConnection)
        peerSide.transport.write(b"early")
        peer, connectionId = yield attempts
        self.assertEqual(peer[0], "127.0.0.1")
        data = yield self.dataConnection(control, connectionId)
        early = Collect(5)
        data.setReceiver(early.dataReceived)
        received = yield early.done
        self.assertEqual(received, b"early")
        data.write(b"hello")
        result = yield peerSide.done
        self.assertEqual(result, b"hello")
