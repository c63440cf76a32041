"""C{twistd -n p2pnet --services node} as a device runs it: it prints its generated
password once, registers (over TCP here) with p2pnet's rendezvous server, and a viewer
logs in with that password, receives video and types into the keyboard file."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import SkipTest, TestCase

from p2pnet.codecs.proto import message_pb2 as pb
from p2pnet.node.viewer import findAndConnect
from test.interop.test_node_e2e import PUBLIC, SERVER_PK, startServers, until
from test.interop.test_node_video import ffmpeg

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


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

    async def test_deviceStartsRegistersAndServes(self) -> None:
        if not os.path.exists(TWISTD) or shutil.which("ffmpeg") is None:
            raise SkipTest("needs twistd and Debian's ffmpeg")
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        source = os.path.join(work, "src.h264")
        await ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-frames:v", "30",
                     "-c:v", "libx264", "-g", "10", "-bf", "0", "-f", "h264", source)
        rendezvous, _ = startServers(self, work)
        keyboard = os.path.join(work, "keyboard")
        output = Output()
        env = {k: v for k, v in os.environ.items() if k != "P2PNET_NODE_PASSWORD"}
        process = reactor.spawnProcess(output, TWISTD, [
            TWISTD, "-n", "--pidfile=", "--logfile=-", "p2pnet", "--services", "node",
            "--data-dir", os.path.join(work, "data"), "--node-id", "kvm-device",
            "--node-server", f"127.0.0.1:{rendezvous.boundPorts['tcp']}",
            "--node-transport", "tcp", "--node-key", PUBLIC,
            "--node-video", f"file:{source}", "--node-keyboard", keyboard],
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
        session.close()
        await stop()
        self.assertNotIn("Traceback", output.text)
        with open(os.path.join(work, "data", "node.json")) as f:
            self.assertNotIn(password, f.read())
