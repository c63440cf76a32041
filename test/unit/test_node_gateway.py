"""The node's C{kvm.*} gateway commands (L{p2pnet.node.gateway}) on fakes."""

from __future__ import annotations

import base64
import os

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from p2pnet.node.gateway import COMMANDS, MAX_TEXT, KvmCommands
from p2pnet.node.identity import loadIdentity
from p2pnet.node.service import NodeService
from test.unit.nodefakes import FakeFeed, FakeInputs


class KvmCommandTests(TestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.feed = FakeFeed()
        self.inputs = FakeInputs()
        self.node = NodeService(Clock(), loadIdentity(self.dir, "123456789", "pw"),
                                self.feed, self.inputs, server=("127.0.0.1", 21116),
                                source="testsrc")
        self.commands = KvmCommands(self.node)

    def test_everyCommandHandled(self) -> None:
        self.assertEqual(sorted(self.commands.handlers()), sorted(COMMANDS))

    def test_status(self) -> None:
        status = self.commands.run("kvm.status", None)
        self.assertEqual(status["id"], "123456789")
        self.assertEqual(status["registration"], "registering")
        self.assertEqual((status["width"], status["height"], status["codec"]),
                         (1280, 720, "h264"))
        self.assertEqual((status["viewers"], status["source"]), (0, "testsrc"))

    def test_snapshot(self) -> None:
        result = self.successResultOf(self.commands.run("kvm.snapshot", {"format": "jpeg"}))
        self.assertEqual(base64.b64decode(result["data"]), b"\x89PNG fake jpeg")
        self.assertRaises(ValueError, self.commands.run, "kvm.snapshot", {"format": "gif"})

    def test_type(self) -> None:
        self.assertEqual(self.commands.run("kvm.type", {"text": "hi"}), {"typed": 2})
        self.assertEqual(self.inputs.events, [("gateway", "type", "hi")])
        for bad in ({}, {"text": ""}, {"text": 5}, {"text": "x" * (MAX_TEXT + 1)}):
            self.assertRaises(ValueError, self.commands.run, "kvm.type", bad)

    def test_key(self) -> None:
        self.commands.run("kvm.key", {"keys": "ctrl+alt+delete"})
        self.commands.run("kvm.key", {"keys": ["Shift", "a"]})
        self.assertEqual(self.inputs.events, [("gateway", "cad", None),
                                              ("gateway", "keys", ("shift", "a"))])
        for bad in ({}, {"keys": []}, {"keys": [1]}, {"keys": ["a"] * 9}):
            self.assertRaises(ValueError, self.commands.run, "kvm.key", bad)

    def test_mouse(self) -> None:
        self.commands.run("kvm.mouse", {"x": 10, "y": 20, "buttons": 1})
        self.assertEqual(self.inputs.events, [("gateway", "mouse", (10, 20, 1, 0))])
        for bad in ({"x": 1}, {"x": -1, "y": 0}, {"x": 1, "y": 1, "wheel": 500},
                    {"x": True, "y": 1}, {"x": 1.5, "y": 1}):
            self.assertRaises(ValueError, self.commands.run, "kvm.mouse", bad)

    def test_viewersAndKick(self) -> None:
        self.assertEqual(self.commands.run("kvm.viewers", {}),
                         {"viewers": [], "kicked": None})
        self.assertRaises(ValueError, self.commands.run, "kvm.viewers", {"kick": "v9"})

    def test_paramsMustBeAnObject(self) -> None:
        self.assertRaises(ValueError, self.commands.run, "kvm.type", ["x"])
