"""The node's persistent identity (L{p2pnet.node.identity}) and login guard."""

from __future__ import annotations

import json
import os
import stat

from twisted.trial.unittest import TestCase

from p2pnet.errors import ConfigError
from p2pnet.node.identity import FILENAME, loadIdentity, passwordHash
from p2pnet.node.login import FAILURE_WINDOW, MAX_FAILURES, LoginGuard, peerInfo


class IdentityTests(TestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, FILENAME)

    def test_firstStartGeneratesEverything(self) -> None:
        identity = loadIdentity(self.dir)
        self.assertEqual(len(identity.peerId), 9)
        self.assertTrue(identity.peerId.isdigit())
        self.assertEqual(len(identity.pk), 32)
        self.assertEqual(len(identity.uuid), 16)
        assert identity.generatedPassword is not None
        self.assertEqual(identity.hash, passwordHash(identity.generatedPassword, identity.salt))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_passwordNeverStored(self) -> None:
        identity = loadIdentity(self.dir, password="hunter22")
        with open(self.path) as f:
            text = f.read()
        self.assertNotIn("hunter22", text)
        self.assertIsNone(identity.generatedPassword)
        self.assertEqual(json.loads(text)["passwordHash"],
                         passwordHash("hunter22", identity.salt).hex())

    def test_keptAcrossStarts(self) -> None:
        first = loadIdentity(self.dir)
        second = loadIdentity(self.dir)
        self.assertEqual((second.peerId, second.pk, second.uuid, second.salt, second.hash),
                         (first.peerId, first.pk, first.uuid, first.salt, first.hash))
        self.assertIsNone(second.generatedPassword)

    def test_configuredIdAndNewId(self) -> None:
        identity = loadIdentity(self.dir, peerId="kvm-office")
        self.assertEqual(identity.peerId, "kvm-office")
        identity.setId("1234567890")
        self.assertEqual(loadIdentity(self.dir).peerId, "1234567890")

    def test_corruptFileNamesDataDir(self) -> None:
        with open(self.path, "w") as f:
            f.write("{not json")
        error = self.assertRaises(ConfigError, loadIdentity, self.dir)
        self.assertEqual(error.key, "data-dir")


class LoginGuardTests(TestCase):
    def test_limitPerSourceWithWindow(self) -> None:
        guard = LoginGuard()
        for i in range(MAX_FAILURES):
            self.assertTrue(guard.allowed("a", i))
            guard.failed("a", i)
        self.assertFalse(guard.allowed("a", MAX_FAILURES))
        self.assertTrue(guard.allowed("b", MAX_FAILURES))
        self.assertTrue(guard.allowed("a", MAX_FAILURES - 1 + FAILURE_WINDOW))

    def test_successClears(self) -> None:
        guard = LoginGuard()
        for i in range(MAX_FAILURES - 1):
            guard.failed("a", i)
        guard.succeeded("a")
        guard.failed("a", 10)
        self.assertTrue(guard.allowed("a", 10))

    def test_bounded(self) -> None:
        guard = LoginGuard(maxSources=10)
        for i in range(1000):
            guard.failed(f"10.0.{i // 256}.{i % 256}", 0)
        self.assertEqual(len(guard._failures), 10)


class PeerInfoTests(TestCase):
    def test_oneDisplayAndTheCodecSent(self) -> None:
        info = peerInfo(hostname="kvm", width=1920, height=1080, codec="h265")
        self.assertEqual(len(info.displays), 1)
        self.assertEqual((info.displays[0].width, info.displays[0].height), (1920, 1080))
        self.assertEqual((info.encoding.h264, info.encoding.h265), (False, True))
        self.assertEqual(info.platform, "Linux")
