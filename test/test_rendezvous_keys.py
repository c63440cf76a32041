"""Tests for L{p2pnet.services.rendezvous_keys}: C{--key} semantics and key files."""

import base64
import os

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.errors import ConfigError
from p2pnet.services.rendezvous_keys import (
    PRIVATE_FILE,
    PUBLIC_FILE,
    generateKeyPair,
    loadServerKey,
    relayKey,
)

# spec §9.4
SECRET = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQGKiOPddAnxlf1S2y08ul1yymcJvx2UEhvzdIgBtA9vXA=="
PUBLIC = "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w="


class ServerKeyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)

    def test_dashGeneratesFilesOnce(self) -> None:
        key = loadServerKey("-", self.dir)
        self.assertEqual(key.enforced, key.publicKey)
        with open(os.path.join(self.dir, PUBLIC_FILE)) as f:
            self.assertEqual(f.read(), key.publicKey)
        with open(os.path.join(self.dir, PRIVATE_FILE)) as f:
            raw = base64.b64decode(f.read())
        self.assertEqual(len(raw), 64)
        self.assertEqual(os.stat(os.path.join(self.dir, PRIVATE_FILE)).st_mode & 0o777, 0o600)
        self.assertEqual(loadServerKey("_", self.dir).publicKey, key.publicKey)
        self.assertTrue(key.accepts(key.publicKey))
        self.assertFalse(key.accepts("wrong"))

    def test_hbbsFileCopiedIn(self) -> None:
        with open(os.path.join(self.dir, PRIVATE_FILE), "w") as f:
            f.write(SECRET + "\n")
        key = loadServerKey("-", self.dir)
        self.assertEqual(key.publicKey, PUBLIC)

    def test_emptySignsButChecksNothing(self) -> None:
        key = loadServerKey("", self.dir)
        self.assertIsNotNone(key.signingKey)
        self.assertEqual(key.enforced, "")
        self.assertTrue(key.accepts("anything"))

    def test_secretKeyValue(self) -> None:
        key = loadServerKey(SECRET, self.dir)
        self.assertEqual((key.publicKey, key.enforced), (PUBLIC, PUBLIC))
        self.assertEqual(os.listdir(self.dir), [])

    def test_literal(self) -> None:
        key = loadServerKey("my licence", self.dir)
        self.assertIsNone(key.signingKey)
        self.assertEqual(key.publicKey, "")
        self.assertTrue(key.accepts("my licence"))
        self.assertFalse(key.accepts("my licenc"))

    def test_malformedFile(self) -> None:
        with open(os.path.join(self.dir, PRIVATE_FILE), "w") as f:
            f.write("not a key")
        e = self.assertRaises(ConfigError, loadServerKey, "-", self.dir)
        self.assertEqual(e.key, "key")

    def test_inconsistentSecret(self) -> None:
        raw = base64.b64decode(SECRET)
        bad = base64.b64encode(raw[:32] + bytes(32)).decode()
        self.assertRaises(ConfigError, loadServerKey, bad, self.dir)

    def test_generatedKeyAvoidsSlashAndColon(self) -> None:
        for _ in range(20):
            text = base64.b64encode(bytes(generateKeyPair().verify_key)).decode()
            self.assertNotIn("/", text)

    def test_relayKey(self) -> None:
        server = loadServerKey(SECRET, self.dir)
        self.assertEqual(relayKey("", server, self.dir), "")
        self.assertEqual(relayKey("-", server, self.dir), PUBLIC)
        self.assertEqual(relayKey(SECRET, None, self.dir), PUBLIC)
        self.assertEqual(relayKey("word", server, self.dir), "word")
        generated = relayKey("_", None, self.dir)
        self.assertEqual(generated, loadServerKey("-", self.dir).publicKey)
