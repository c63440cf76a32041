"""C{twistd -n p2pnet --services node} as a device runs it: it prints its generated
password once, registers (over TCP here) with p2pnet's rendezvous server, and a viewer
logs in with that password, receives video and types into the keyboard file; the node
joins a gateway from its --node-gateway settings and answers kvm.status there."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys

from twisted.internet import defer, protocol, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from p2pnet.codecs.proto import message_pb2 as pb
from p2pnet.node.viewer import findAndConnect
from test.interop.test_node_e2e import PUBLIC, SERVER_PK, startServers, until
from test.interop.test_node_video import ffmpeg

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
GATEWAY_TOKEN = "node-twistd-token"


class Output(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.text = ""
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.text += data.decode(errors="replace")

    errReceived = outReceived

    def processEnded(self, reason: object) -> None:
        self.ended.callback(None)


class NodeTwistdTests(TestCase):
    timeout = 90

    def gateway(self, work: str) -> str:
        """A p2pnet gateway on 127.0.0.1 (token auth); its URL."""
        from p2pnet.protocols.gateway_server import listenGateway
        from p2pnet.services.gateway import GatewayService
        from p2pnet.services.gateway_policy import AuthConfig
        from p2pnet.store.gateway import GatewayStore

        store = GatewayStore(os.path.join(work, "gateway.sqlite"))
        service = GatewayService(
            clock=reactor, store=store, auth=AuthConfig("token", token=GATEWAY_TOKEN),
            listen=lambda s: listenGateway(reactor, s, ("127.0.0.1",), 0, None))
        service.startService()
        self.addCleanup(service.stopService)
        return f"ws://127.0.0.1:{service.ports[0].getHost().port}/"

    async def invoke(self, url: str, command: str) -> dict:
        """node.invoke on the only node, as an operator."""
        from p2pnet.protocols.gateway_client import (
            ClientOptions,
            GatewayClientProtocol,
            connectWebSocket,
        )

        options = ClientOptions(role="operator", clientId="cli", clientMode="cli",
                                scopes=("operator.admin",), token=GATEWAY_TOKEN)
        op = await connectWebSocket(reactor, url,
                                    lambda: GatewayClientProtocol(reactor, options))
        await op.connected
        self.addCleanup(op.close)
        nodes: list = []

        async def listed() -> None:
            nodes[:] = (await op.request("node.list"))["nodes"]

        for _ in range(100):
            await listed()
            if nodes:
                break
            await deferLater(reactor, 0.1, lambda: None)
        result = await op.request("node.invoke", {
            "nodeId": nodes[0]["nodeId"], "command": command, "idempotencyKey": command})
        return result.get("payload", result)

    async def test_deviceStartsRegistersAndServes(self) -> None:
        if not os.path.exists(TWISTD) or shutil.which("ffmpeg") is None:
            raise SkipTest("needs twistd and Debian's ffmpeg")
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        source = os.path.join(work, "src.h264")
        await ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-frames:v", "30",
                     "-c:v", "libx264", "-g", "10", "-bf", "0", "-f", "h264", source)
        rendezvous, _ = startServers(self, work)
        gatewayUrl = self.gateway(work)
        keyboard = os.path.join(work, "keyboard")
        output = Output()
        env = {k: v for k, v in os.environ.items() if k != "P2PNET_NODE_PASSWORD"}
        process = reactor.spawnProcess(output, TWISTD, [
            TWISTD, "-n", "--pidfile=", "--logfile=-", "p2pnet", "--services", "node",
            "--data-dir", os.path.join(work, "data"), "--node-id", "kvm-device",
            "--node-server", f"127.0.0.1:{rendezvous.boundPorts['tcp']}",
            "--node-transport", "tcp", "--node-key", PUBLIC,
            "--node-video", f"file:{source}", "--node-keyboard", keyboard,
            "--node-gateway", gatewayUrl, "--node-gateway-token", GATEWAY_TOKEN],
            env=env, path=work)

        def stop() -> defer.Deferred[None]:
            if not output.ended.called:
                process.signalProcess(signal.SIGTERM)
            return output.ended

        self.addCleanup(stop)
        await until(lambda: "generated password" in output.text
                    or output.ended.called, timeout=30)
        match = re.search(r"KVM node kvm-device: generated password (\S+)", output.text)
        self.assertIsNotNone(match, output.text)
        assert match is not None
        password = match.group(1)
        await until(lambda: rendezvous.peers.get("kvm-device") is not None, timeout=30)
        path, session = await findAndConnect(
            reactor, ("127.0.0.1", rendezvous.boundPorts["tcp"]), "kvm-device", password,
            serverPk=SERVER_PK, licenceKey=PUBLIC, bindAddress="127.0.0.2")
        self.addCleanup(session.close)
        self.assertEqual(path, "direct")
        self.assertEqual(session.peerInfo.displays[0].width, 320)
        await until(lambda: session.frames >= 10, timeout=20)
        session.send(pb.Message(key_event=pb.KeyEvent(press=True, chr=ord("x"))))
        await until(lambda: os.path.exists(keyboard) and os.path.getsize(keyboard) == 16)
        with open(keyboard, "rb") as f:
            self.assertEqual(f.read(), bytes([0, 0, 0x1B, 0, 0, 0, 0, 0]) + bytes(8))
        status = await self.invoke(gatewayUrl, "kvm.status")
        self.assertEqual((status["id"], status["viewers"], status["width"]),
                         ("kvm-device", 1, 320))
        self.assertEqual(status["registration"], "registered")
        session.close()
        await stop()
        self.assertNotIn("Traceback", output.text)
        with open(os.path.join(work, "data", "node.json")) as f:
            self.assertNotIn(password, f.read())
