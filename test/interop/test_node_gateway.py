"""The KVM node on a real p2pnet gateway: an operator runs every C{kvm.*} command with
C{node.invoke} (the node joins as C{role=node} with its own device identity)."""

from __future__ import annotations

import base64
import json
import os
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from p2pnet.node.gateway import COMMANDS
from p2pnet.node.identity import loadIdentity
from p2pnet.node.service import NodeService
from p2pnet.node.viewer import connectDirect
from p2pnet.protocols.gateway_client import (
    ClientOptions,
    GatewayClientProtocol,
    GatewayError,
    connectWebSocket,
)
from p2pnet.protocols.gateway_server import listenGateway
from p2pnet.services.gateway import GatewayService
from p2pnet.services.gateway_policy import AuthConfig
from p2pnet.store.gateway import GatewayStore
from test.interop.test_node_e2e import until
from test.unit.nodefakes import FakeFeed, FakeInputs

TOKEN = "node-e2e-token"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class NodeGatewayTests(TestCase):
    timeout = 60

    async def asyncSetUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        store = GatewayStore(os.path.join(self.dir, "gateway.sqlite"))
        self.gateway = GatewayService(
            clock=reactor, store=store, auth=AuthConfig("token", token=TOKEN),
            listen=lambda s: listenGateway(reactor, s, ("127.0.0.1",), 0, None))
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)
        self.url = f"ws://127.0.0.1:{self.gateway.ports[0].getHost().port}/"
        self.feed = FakeFeed()
        self.inputs = FakeInputs()
        # The rendezvous server is absent (port 9 discards): registration keeps trying.
        self.node = NodeService(reactor, loadIdentity(self.dir, "123456789", "pw"),
                                self.feed, self.inputs, server=("127.0.0.1", 9),
                                directPort=0, directListen="127.0.0.1", source="testsrc")
        self.node.joinGateway(self.url, token=TOKEN,
                              identityPath=os.path.join(self.dir, "node-identity.json"))
        self.node.startService()
        self.addCleanup(self.node.stopService)
        await self.node.gateway.whenConnected()
        options = ClientOptions(role="operator", clientId="cli", clientMode="cli",
                                scopes=("operator.admin",), token=TOKEN)
        self.op = await connectWebSocket(
            reactor, self.url, lambda: GatewayClientProtocol(reactor, options))
        await self.op.connected
        self.addCleanup(self.op.close)
        nodes = await self.op.request("node.list")
        (entry,) = nodes["nodes"]
        self.nodeId = entry["nodeId"]
        self.assertEqual(sorted(entry["commands"]), sorted(COMMANDS))

    async def invoke(self, command: str, params: Any = None) -> Any:
        request = {"nodeId": self.nodeId, "command": command, "idempotencyKey": command}
        if params is not None:
            request["params"] = params
        result = await self.op.request("node.invoke", request)
        return result.get("payload", result)

    async def test_everyCommand(self) -> None:
        await self.asyncSetUp()
        status = await self.invoke("kvm.status")
        self.assertEqual((status["id"], status["viewers"], status["source"]),
                         ("123456789", 0, "testsrc"))
        self.assertIn(status["registration"], ("registering", "offline"))
        self.assertEqual((status["width"], status["height"]), (1280, 720))

        shot = await self.invoke("kvm.snapshot", {"format": "png"})
        self.assertEqual(base64.b64decode(shot["data"]), b"\x89PNG fake png")

        self.assertEqual(await self.invoke("kvm.type", {"text": "hello"}), {"typed": 5})
        await self.invoke("kvm.key", {"keys": ["ctrl", "alt", "delete"]})
        await self.invoke("kvm.mouse", {"x": 5, "y": 6, "buttons": 1})
        self.assertEqual(self.inputs.events, [("gateway", "type", "hello"),
                                              ("gateway", "cad", None),
                                              ("gateway", "mouse", (5, 6, 1, 0))])

        port = self.node.directPortListening.getHost().port
        session = await connectDirect(reactor, ("127.0.0.1", port), "123456789", "pw")
        self.addCleanup(session.close)
        viewers = await self.invoke("kvm.viewers")
        (viewer,) = viewers["viewers"]
        self.assertEqual((viewer["id"], viewer["path"], viewer["address"]),
                         ("v1", "ip", "127.0.0.1"))
        kicked = await self.invoke("kvm.viewers", {"kick": "v1"})
        self.assertEqual((kicked["kicked"], kicked["viewers"]), ("v1", []))
        await session.closed
        self.assertEqual(self.inputs.events[-1], ("v1", "release", b""))

        with self.assertRaises(GatewayError):
            await self.invoke("kvm.mouse", {"x": -1, "y": 0})

    async def test_gatewayCallCommand(self) -> None:
        """C{p2pnet gateway call node.invoke ...} as a person types it."""
        await self.asyncSetUp()
        params = json.dumps({"nodeId": self.nodeId, "command": "kvm.type",
                             "params": {"text": "abc"}, "idempotencyKey": "k1"})
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "p2pnet.cli", "gateway", "call", "node.invoke", params,
                             "--url", self.url, "--token", TOKEN],
            env=dict(os.environ, PYTHONPATH=ROOT), path=ROOT)
        self.assertEqual(code, 0, err.decode())
        self.assertIn('"typed": 3', out.decode())
        await until(lambda: ("gateway", "type", "abc") in self.inputs.events)


