"""Tests for L{p2pnet.protocols.gateway_server} on real loopback sockets: the wire,
close codes, HTTP endpoints, TLS."""

from __future__ import annotations

import ipaddress
import json
import os
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    RejectConnection,
    TextMessage,
)
from wsproto.events import Request as WSRequest

from p2pnet.certs import generateSelfSigned, loadServerTLS
from p2pnet.protocols.gateway_server import listenGateway
from p2pnet.services.gateway import GatewayService
from p2pnet.services.gateway_policy import AuthConfig
from test.gateway_helpers import MemoryStore, until

TOKEN = "wire-token"


class RawClient(Protocol):
    """A WebSocket client on wsproto that keeps every event (close codes included)."""

    def __init__(self, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.headers = headers or []
        self.texts: list[str] = []
        self.events: list[Any] = []
        self.lost: Deferred[None] = Deferred()
        self.opened: Deferred[Any] = Deferred()
        self._textWaiters: list[Deferred[str]] = []

    def connectionMade(self) -> None:
        self.transport.write(self.ws.send(
            WSRequest(host="127.0.0.1", target="/", extra_headers=self.headers)))

    def dataReceived(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            self.events.append(event)
            if isinstance(event, AcceptConnection | RejectConnection):
                if not self.opened.called:
                    self.opened.callback(event)
            elif isinstance(event, TextMessage):
                self.texts.append(event.data)
                waiters, self._textWaiters = self._textWaiters, []
                for d in waiters:
                    d.callback(event.data)
            elif isinstance(event, CloseConnection):
                self.transport.loseConnection()

    def nextText(self) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        self._textWaiters.append(d)
        return d

    def send(self, text: str) -> None:
        self.transport.write(self.ws.send(TextMessage(data=text)))

    def connectionLost(self, reason: Any) -> None:
        self.lost.callback(None)

    @property
    def close(self) -> CloseConnection | None:
        closes = [e for e in self.events if isinstance(e, CloseConnection)]
        return closes[0] if closes else None


class WireTests(TestCase):
    timeout = 20

    def setUp(self) -> None:
        self.service = self.start()

    def start(self, **kwargs: Any) -> GatewayService:
        service = GatewayService(
            clock=reactor, store=MemoryStore(), auth=AuthConfig("token", token=TOKEN),
            listen=lambda s: listenGateway(reactor, s, ("127.0.0.1",), 0, None), **kwargs)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    @property
    def port(self) -> int:
        return self.service.ports[0].getHost().port

    @inlineCallbacks
    def open(self, headers: list | None = None):
        client = RawClient(headers)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), client)
        yield client.opened
        self.addCleanup(lambda: client.transport.loseConnection())
        return client

    @inlineCallbacks
    def test_challengeThenHelloOk(self):
        client = yield self.open()
        yield until(lambda: client.texts)
        challenge = json.loads(client.texts[0])
        self.assertEqual(challenge["event"], "connect.challenge")
        client.send(json.dumps({"type": "req", "id": "1", "method": "connect", "params": {
            "minProtocol": 4, "maxProtocol": 4,
            "client": {"id": "cli", "version": "1", "platform": "linux", "mode": "cli"},
            "auth": {"token": TOKEN}}}))
        hello = json.loads((yield client.nextText()))
        self.assertEqual(hello["payload"]["type"], "hello-ok")

    @inlineCallbacks
    def test_forwardedForLinesJoined(self):
        """Behind a trusted proxy that appends its own X-Forwarded-For line (HAProxy
        C{option forwardfor}), the line the client wrote first does not choose its
        address (RFC 9110 §5.3; issue 14 item 17), through twisted.web's real headers."""
        self.service.auth = AuthConfig(
            "token", token=TOKEN, trustedProxies=(ipaddress.ip_network("127.0.0.1/32"),))
        client = yield self.open([(b"X-Forwarded-For", b"6.6.6.6"),
                                  (b"X-Forwarded-For", b"198.51.100.4")])
        yield until(lambda: client.texts)
        [session] = self.service.sessions
        self.assertEqual(session.info.clientIp, "198.51.100.4")
        self.assertFalse(session.info.localDirect)

    @inlineCallbacks
    def test_oversizedPreauthFrame(self):
        client = yield self.open()
        client.send("x" * (64 * 1024 + 1))
        yield client.lost
        self.assertEqual(client.close.code, 1009)
        self.assertEqual(client.close.reason, "preauth payload too large")

    @inlineCallbacks
    def test_exactlyCapIsNotOversized(self):
        client = yield self.open()
        client.send(" " * (64 * 1024 - 2) + "{}")
        yield client.lost
        self.assertEqual((client.close.code, client.close.reason), (1008, "invalid request frame"))

    @inlineCallbacks
    def test_badJsonCloses1000(self):
        client = yield self.open()
        client.send("{nope")
        yield client.lost
        self.assertEqual(client.close.code, 1000)

    @inlineCallbacks
    def test_handshakeTimeout(self):
        self.service = self.start(handshakeTimeout=0.2)
        client = yield self.open()
        yield client.lost
        self.assertEqual((client.close.code, client.close.reason), (1000, ""))

    @inlineCallbacks
    def test_preauthSocketBudget(self):
        clients = []
        for _ in range(32):
            clients.append((yield self.open()))
        extra = yield self.open()
        [rejected] = [e for e in extra.events if isinstance(e, RejectConnection)]
        self.assertEqual(rejected.status_code, 503)
        self.assertEqual(self.service.stats.snapshot()["preauth_rejected"], 1)

    @inlineCallbacks
    def test_garbageAfterUpgrade(self):
        client = yield self.open()
        client.transport.write(os.urandom(64) + b"\xff" * 64)
        yield client.lost
        self.assertEqual(len(self.service.sessions), 0)

    @inlineCallbacks
    def test_healthzAndMetrics(self):
        agent = Agent(reactor)
        response = yield agent.request(b"GET", f"http://127.0.0.1:{self.port}/healthz".encode())
        body = json.loads((yield readBody(response)))
        self.assertEqual(body["ok"], True)
        response = yield agent.request(b"GET", f"http://127.0.0.1:{self.port}/metrics".encode())
        self.assertEqual(response.headers.getRawHeaders(b"content-type")[0],
                         b"text/plain; version=0.0.4; charset=utf-8")
        text = (yield readBody(response)).decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        self.assertEqual(families["p2pnet_gateway_connections_open"].type, "gauge")
        self.assertEqual([s.value for s in families["p2pnet_gateway_connections_open"].samples],
                         [0])
        self.assertEqual(families["p2pnet_gateway_connections"].type, "counter")
        self.assertIn("process_cpu_seconds", families)


class Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"GET /healthz HTTP/1.0\r\n\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any) -> None:
        self.done.callback(self.data)


class TLSTests(TestCase):
    @inlineCallbacks
    def test_healthzOverTLSWithALPN(self):
        directory = self.mktemp()
        os.makedirs(directory)
        cert, key = os.path.join(directory, "c.pem"), os.path.join(directory, "k.pem")
        generateSelfSigned(cert, key)
        service = GatewayService(
            clock=reactor, store=MemoryStore(), auth=AuthConfig("token", token=TOKEN),
            listen=lambda s: listenGateway(reactor, s, ("127.0.0.1",), 0,
                                           loadServerTLS(cert, key)))
        service.startService()
        self.addCleanup(service.stopService)
        port = service.ports[0].getHost().port
        client = ssl.CertificateOptions(verify=False, acceptableProtocols=[b"h2", b"http/1.1"])
        collect = Collect()
        yield connectProtocol(SSL4ClientEndpoint(reactor, "127.0.0.1", port, client), collect)
        response = yield collect.done
        self.assertTrue(response.startswith(b"HTTP/1.0 200"), response[:40])
        self.assertIn(b'"ok": true', response)
