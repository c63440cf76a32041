"""Trial of the real OpenClaw 2026.9.6 CLI's frames (issue 14 item 1), without Node.

C{data/openclaw_2026_9_6.json} holds what the real CLI (`openclaw nodes …` and
`openclaw devices …`) and the real node host sent to a p2pnet gateway on loopback
(recorded by C{test/interop/openclaw_record.py}; the shared token replaced by
C{<token>}). Here each CLI session is replayed, frame for frame, through the real
server protocol on memory: the recorded C{connect} (device-less, protocol 4, the scopes
the CLI chose for that command) and the recorded method call, with the ids of the
recording (request ids, the node's id) replaced by this run's. The node is played by a
test device that connects as the real node host did (its recorded client, caps and
commands) from a non-local address, so both device pairing and node pairing are needed.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.services.gateway import GatewayService
from p2pnet.services.gateway_policy import AuthConfig
from test.gateway_helpers import Device, MemoryStore
from test.unit.test_gateway_preauth import Wire

TOKEN = "trial-token"
NODE_IP = "fd00::2"

with open(os.path.join(os.path.dirname(__file__), "data", "openclaw_2026_9_6.json")) as f:
    RECORDING = json.load(f)


def substitute(obj: Any, mapping: dict[str, str]) -> Any:
    """C{obj} with every string that is a key of C{mapping} replaced."""
    if isinstance(obj, str):
        return mapping.get(obj, obj)
    if isinstance(obj, list):
        return [substitute(item, mapping) for item in obj]
    if isinstance(obj, dict):
        return {k: substitute(v, mapping) for k, v in obj.items()}
    return obj


def session(method: str, scopes: list[str] | None = None) -> list[dict[str, Any]]:
    """The frames of the first recorded CLI session that called C{method} (connected
    with C{scopes}, if given)."""
    for recorded in RECORDING["cli"]:
        connect = recorded["frames"][0]["params"]
        if method in recorded["methods"] and (scopes is None or connect["scopes"] == scopes):
            return copy.deepcopy(recorded["frames"])
    raise AssertionError(f"nothing recorded for {method} {scopes}")


class OpenClawCliTrial(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_796_287_000)
        self.store = MemoryStore()
        self.service = GatewayService(clock=self.clock, store=self.store,
                                      auth=AuthConfig("token", token=TOKEN))
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.device = Device()
        self.ids = {"<token>": TOKEN, RECORDING["ids"]["node"]: self.device.id}
        self.node: Wire | None = None

    # -- the two kinds of client ----------------------------------------------------------

    def cli(self, method: str, scopes: list[str] | None = None,
            **ids: str) -> dict[str, Any]:
        """Replay a recorded CLI session; return the answer to its method call."""
        frames = substitute(session(method, scopes), {**self.ids, **ids})
        wire = Wire(self.service, "127.0.0.1")
        try:
            wire.send(json.dumps(frames[0]))
            hello = wire.texts()[-1]
            self.assertTrue(hello["ok"], hello)
            self.assertEqual(hello["payload"]["protocol"], 4)
            self.assertEqual(hello["payload"]["auth"]["scopes"], frames[0]["params"]["scopes"])
            call = next(f for f in frames[1:] if f.get("method") == method)
            wire.send(json.dumps(call))
            answers = [t for t in wire.texts() if t.get("id") == call["id"]]
            self.assertEqual(len(answers), 1, wire.texts())
            return answers[0]
        finally:
            wire.lose()

    def connectNode(self) -> dict[str, Any]:
        """The node host's connect, as recorded, signed by this run's device."""
        if self.node is not None:
            self.node.lose()
        self.node = Wire(self.service, NODE_IP)
        self.addCleanup(self.node.lose)
        nonce = self.node.texts()[0]["payload"]["nonce"]
        params = substitute(copy.deepcopy(RECORDING["node"]["connect"]), self.ids)
        params["device"] = self.device.block(nonce, int(self.clock.seconds() * 1000), params)
        self.node.send(json.dumps({"type": "req", "id": "n1", "method": "connect",
                                   "params": params}))
        return self.node.texts()[-1]

    def nodeClosed(self) -> tuple[int, str] | None:
        assert self.node is not None
        return self.node.close()

    # -- the walk -------------------------------------------------------------------------

    def test_everyNodesAndDevicesSubcommand(self) -> None:
        declared = RECORDING["node"]["connect"]["commands"]
        # The node host from elsewhere: device pairing first.
        refused = self.connectNode()
        self.assertEqual(refused["error"]["details"]["code"], "PAIRING_REQUIRED")
        deviceRequest = refused["error"]["details"]["requestId"]
        # openclaw devices list
        pending = self.cli("device.pair.list")["payload"]["pending"]
        self.assertEqual([(p["requestId"], p["deviceId"], p["roles"], p["remoteIp"])
                          for p in pending],
                         [(deviceRequest, self.device.id, ["node"], NODE_IP)])
        self.assertIsInstance(pending[0]["ts"], int)
        # openclaw devices approve <requestId>
        recordedId = session("device.pair.approve")[1]["params"]["requestId"]
        approved = self.cli("device.pair.approve", **{recordedId: deviceRequest})
        self.assertEqual(approved["payload"]["device"]["deviceId"], self.device.id)
        # The node reconnects: connected, but node pairing must approve its commands.
        hello = self.connectNode()
        self.assertTrue(hello["ok"], hello)
        listed = self.cli("node.pair.list")["payload"]
        [nodeRequest] = listed["pending"]
        self.assertEqual(nodeRequest["nodeId"], self.device.id)
        self.assertEqual(nodeRequest["commands"], declared)
        self.assertEqual(nodeRequest["requiredApproveScopes"],
                         ["operator.pairing", "operator.admin"])
        nodes = self.cli("node.list")["payload"]["nodes"]
        self.assertEqual([(n["nodeId"], n["connected"], n["commands"]) for n in nodes],
                         [(self.device.id, True, [])])
        # openclaw nodes approve <requestId>: the CLI connects with the scopes the request
        # names; pairing alone is not enough for a node that runs programs.
        recordedId = session("node.pair.approve")[1]["params"]["requestId"]
        mapping = {recordedId: nodeRequest["requestId"]}
        frames = substitute(session("node.pair.approve"), {**self.ids, **mapping})
        self.assertEqual(frames[0]["params"]["scopes"], ["operator.pairing", "operator.admin"])
        approvedNode = self.cli("node.pair.approve", **mapping)
        self.assertTrue(approvedNode["ok"], approvedNode)
        self.assertEqual(approvedNode["payload"]["node"]["commands"], declared)
        # openclaw nodes describe / status / invoke
        described = self.cli("node.describe")["payload"]
        self.assertEqual((described["connected"], described["commands"]), (True, declared))
        assert self.node is not None
        before = len(self.node.texts())
        invokeFrames = substitute(session("node.invoke"), self.ids)
        wire = Wire(self.service, "127.0.0.1")
        self.addCleanup(wire.lose)
        wire.send(json.dumps(invokeFrames[0]))
        wire.send(json.dumps(invokeFrames[1]))
        [request] = [t for t in self.node.texts()[before:] if t.get("event") ==
                     "node.invoke.request"]
        self.assertEqual(request["payload"]["command"], "system.which")
        self.assertEqual(json.loads(request["payload"]["paramsJSON"]), {"bins": ["uname"]})
        result = substitute(copy.deepcopy(RECORDING["node"]["invokeResult"]),
                            {**self.ids, RECORDING["node"]["invokeResult"]["id"]:
                             request["payload"]["id"]})
        self.node.send(json.dumps({"type": "req", "id": "r1", "method": "node.invoke.result",
                                   "params": result}))
        answer = wire.texts()[-1]
        self.assertEqual((answer["ok"], answer["payload"]["ok"], answer["payload"]["payload"]),
                         (True, True, {"bins": {"uname": "/usr/bin/uname"}}))
        # openclaw nodes rename --node vm --name kvm-one
        renamed = self.cli("node.rename")["payload"]
        self.assertEqual(renamed, {"nodeId": self.device.id, "displayName": "kvm-one"})
        self.assertEqual(self.cli("node.list")["payload"]["nodes"][0]["displayName"],
                         "kvm-one")
        # openclaw devices rename --device ID --name "KVM box"
        self.assertEqual(self.cli("device.pair.rename")["payload"],
                         {"deviceId": self.device.id, "label": "KVM box"})
        [paired] = self.cli("device.pair.list")["payload"]["paired"]
        self.assertEqual(paired["operatorLabel"], "KVM box")
        self.assertEqual([t["role"] for t in paired["tokens"]], ["node"])
        self.assertNotIn("token", paired["tokens"][0])
        # openclaw devices rotate / revoke --device ID --role node: the node is closed.
        rotated = self.cli("device.token.rotate")["payload"]
        self.assertEqual((rotated["deviceId"], rotated["role"], len(rotated["token"])),
                         (self.device.id, "node", 43))
        self.assertEqual(self.nodeClosed(), (4001, "device removed"))
        self.assertTrue(self.connectNode()["ok"])
        revoked = self.cli("device.token.revoke")["payload"]
        self.assertEqual((revoked["deviceId"], revoked["role"]), (self.device.id, "node"))
        self.assertEqual(self.nodeClosed(), (4001, "device removed"))
        # openclaw nodes remove --node kvm-one: closed; reconnecting asks again.
        self.assertTrue(self.connectNode()["ok"])
        self.assertEqual(self.cli("node.pair.remove")["payload"], {"nodeId": self.device.id})
        self.assertEqual(self.nodeClosed(), (4001, "device removed"))
        self.assertTrue(self.connectNode()["ok"])
        [again] = self.cli("node.pair.list")["payload"]["pending"]
        # openclaw nodes reject <requestId>
        recordedId = session("node.pair.reject")[1]["params"]["requestId"]
        rejected = self.cli("node.pair.reject", **{recordedId: again["requestId"]})
        self.assertEqual(rejected["payload"], {"requestId": again["requestId"],
                                               "nodeId": self.device.id})
        unknown = self.cli("node.pair.reject")
        self.assertEqual((unknown["error"]["code"], unknown["error"]["message"]),
                         ("INVALID_REQUEST", "unknown requestId"))
        # openclaw devices remove ID: closed; reconnecting needs pairing; devices reject.
        self.assertTrue(self.cli("device.pair.remove")["ok"])
        self.assertEqual(self.nodeClosed(), (4001, "device removed"))
        refused = self.connectNode()
        requestId = refused["error"]["details"]["requestId"]
        recordedId = session("device.pair.reject")[1]["params"]["requestId"]
        self.assertTrue(self.cli("device.pair.reject", **{recordedId: requestId})["ok"])
        self.assertEqual(self.cli("device.pair.list")["payload"],
                         {"pending": [], "paired": []})

    def test_approveNeedsAdminForExecCommands(self) -> None:
        """gateway.md §2.6: a node that runs programs is approved by an admin only."""
        self.connectNode()
        recordedId = session("device.pair.approve")[1]["params"]["requestId"]
        pending = self.cli("device.pair.list")["payload"]["pending"]
        self.cli("device.pair.approve", **{recordedId: pending[0]["requestId"]})
        self.connectNode()
        [nodeRequest] = self.cli("node.pair.list")["payload"]["pending"]
        recordedId = session("node.pair.approve")[1]["params"]["requestId"]
        frames = substitute(session("node.pair.approve"),
                            {**self.ids, recordedId: nodeRequest["requestId"]})
        frames[0]["params"]["scopes"] = ["operator.pairing"]
        wire = Wire(self.service, "127.0.0.1")
        self.addCleanup(wire.lose)
        wire.send(json.dumps(frames[0]))
        wire.send(json.dumps(frames[1]))
        error = wire.texts()[-1]["error"]
        self.assertEqual((error["code"], error["details"]["missingScope"]),
                         ("FORBIDDEN", "operator.admin"))
        self.assertEqual(len(self.cli("node.pair.list")["payload"]["pending"]), 1)

    def test_nodeHostOptionalMethodsAreUnknownNotDenied(self) -> None:
        """The node host's optional calls (skills, plugin tools, runner inventory) get
        "unknown method", which it tolerates, and never close it as a role offender."""
        self.connectNode()
        pending = self.cli("device.pair.list")["payload"]["pending"]
        recordedId = session("device.pair.approve")[1]["params"]["requestId"]
        self.cli("device.pair.approve", **{recordedId: pending[0]["requestId"]})
        self.assertTrue(self.connectNode()["ok"])
        assert self.node is not None
        for i in range(12):
            self.node.send(json.dumps({"type": "req", "id": f"s{i}",
                                       "method": "node.skills.update",
                                       "params": {"skills": []}}))
        answer = self.node.texts()[-1]
        self.assertEqual(answer["error"]["message"], "unknown method: node.skills.update")
        self.assertIsNone(self.nodeClosed())
