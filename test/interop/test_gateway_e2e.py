"""End to end: the gateway client as operator and as node through a real listener.

The service listens on 127.0.0.1 with a kernel-chosen port and a real SQLite store;
the clients are L{p2pnet.protocols.gateway_client}'s, over twisted.web.websocket.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from p2pnet.codecs.gateway_frames import Event
from p2pnet.protocols.gateway_client import (
    ClientOptions,
    DeviceIdentity,
    GatewayClient,
    GatewayClientProtocol,
    GatewayError,
    connectWebSocket,
)
from p2pnet.protocols.gateway_server import listenGateway
from p2pnet.services.gateway import GatewayService
from p2pnet.services.gateway_policy import AuthConfig
from p2pnet.store.gateway import GatewayStore
from test.gateway_helpers import until

TOKEN = "e2e-token"




class EndToEndTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.store = GatewayStore(os.path.join(self.dir, "gateway.sqlite"))
        self.service = GatewayService(
            clock=reactor, store=self.store, auth=AuthConfig("token", token=TOKEN),
            listen=lambda s: listenGateway(reactor, s, ("127.0.0.1",), 0, None),
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.url = f"ws://127.0.0.1:{self.service.ports[0].getHost().port}/"

    @inlineCallbacks
    def operator(self, events: list[Event] | None = None, **kw: Any):
        options = ClientOptions(role="operator", clientId="cli", clientMode="cli",
                                scopes=("operator.admin",), token=TOKEN, **kw)
        protocol = yield connectWebSocket(
            reactor, self.url,
            lambda: GatewayClientProtocol(reactor, options,
                                          events.append if events is not None else None))
        yield protocol.connected
        self.addCleanup(protocol.close)
        return protocol

    @inlineCallbacks
    def test_pairInvokeRotateReconnect(self):
        events: list[Event] = []
        op = yield self.operator(events)
        self.assertEqual(op.hello["auth"]["scopes"], ["operator.admin"])

        # A node with a device identity, paired by local auto-approval on first connect.
        identity = DeviceIdentity.load(os.path.join(self.dir, "node-identity.json"))
        calls: list[Any] = []

        def echo(command: str, params: Any) -> Any:
            calls.append(params)
            return {"echo": params}

        node = GatewayClient(
            reactor, self.url,
            ClientOptions(role="node", clientId="node-host", clientMode="node", token=TOKEN,
                          identity=identity, handlers={"kvm.echo": echo}, caps=("kvm",),
                          displayName="kvm-1"),
            initialDelay=0.05, maxDelay=0.2,
        )
        node.start()
        self.addCleanup(node.stop)
        first = yield node.whenConnected()
        token = first.hello["auth"]["deviceToken"]
        self.assertEqual(DeviceIdentity.load(identity.path).token("node"), token)
        self.assertIn(identity.deviceId, self.store.devices)

        nodes = yield op.request("node.list")
        self.assertEqual(nodes["nodes"][0]["nodeId"], identity.deviceId)
        self.assertEqual(nodes["nodes"][0]["commands"], ["kvm.echo"])

        result = yield op.request("node.invoke", {
            "nodeId": identity.deviceId, "command": "kvm.echo",
            "params": {"x": 1}, "idempotencyKey": "a"})
        self.assertEqual(result["payload"], {"echo": {"x": 1}})
        self.assertEqual(calls, [{"x": 1}])

        # Rotating the node's token closes it with 4001; it reconnects by itself and
        # learns the new token in hello-ok.
        rotated = yield op.request("device.token.rotate",
                                   {"deviceId": identity.deviceId, "role": "node"})
        self.assertNotEqual(rotated["token"], token)
        yield first.disconnected
        second = yield node.whenConnected()
        self.assertIsNot(second, first)
        self.assertEqual(second.hello["auth"]["deviceToken"], rotated["token"])
        self.assertEqual(DeviceIdentity.load(identity.path).token("node"), rotated["token"])

        result = yield op.request("node.invoke", {
            "nodeId": identity.deviceId, "command": "kvm.echo", "params": [2],
            "idempotencyKey": "b"})
        self.assertEqual(result["payload"], {"echo": [2]})

        # The device token alone (no shared secret) now authenticates the node.
        alone = ClientOptions(role="node", clientId="node-host", clientMode="node",
                              identity=identity, handlers={"kvm.echo": echo})
        third = yield connectWebSocket(reactor, self.url,
                                       lambda: GatewayClientProtocol(reactor, alone))
        yield third.connected
        self.assertEqual(third.hello["auth"]["method"], "device-token")
        third.close()
        yield third.disconnected

        # Presence events (gathered over a second after disconnects) reached the operator.
        yield until(lambda: [e for e in events if e.event == "presence"])

    @inlineCallbacks
    def test_explicitApprovalAndRestart(self):
        op = yield self.operator()
        identity = DeviceIdentity.load(os.path.join(self.dir, "op-identity.json"))
        read = ClientOptions(role="operator", clientId="test", clientMode="test",
                             scopes=("operator.read",), token=TOKEN, identity=identity)
        first = yield connectWebSocket(reactor, self.url,
                                       lambda: GatewayClientProtocol(reactor, read))
        yield first.connected
        first.close()
        yield first.disconnected

        # Asking for more scopes needs an operator's approval, even on loopback.
        wider = ClientOptions(role="operator", clientId="test", clientMode="test",
                              scopes=("operator.read", "operator.pairing"), token=TOKEN,
                              identity=identity)
        client = GatewayClient(reactor, self.url, wider, initialDelay=0.05)
        client.start()
        error = yield self.assertFailure(client.whenConnected(), GatewayError)
        self.assertEqual(error.detailCode, "PAIRING_REQUIRED")
        self.assertEqual(client.stopped, error)

        pending = yield op.request("device.pair.list")
        [request] = pending["pending"]
        self.assertEqual(request["reason"], "scope-upgrade")
        yield op.request("device.pair.approve", {"requestId": request["requestId"]})

        client.start()
        self.addCleanup(client.stop)
        connected = yield client.whenConnected()
        self.assertEqual(connected.hello["auth"]["scopes"], ["operator.read", "operator.pairing"])

        # The pairing survives a restart of the store.
        yield self.service.stopService()
        again = GatewayStore(self.store.db.path)
        self.addCleanup(again.close)
        self.assertEqual(again.devices[identity.deviceId].scopes,
                         ("operator.read", "operator.pairing"))
