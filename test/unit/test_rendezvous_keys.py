"""Tests for L{p2pnet.services.rendezvous_keys}: C{--key} semantics and key files."""

import base64
import os

from nacl.signing import SigningKey
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.errors import ConfigError
from p2pnet.services.rendezvous_keys import (
    PRIVATE_FILE,
    PUBLIC_FILE,
    generateKeyPair,
    loadServerKey,
    relayKey,
)

# rustdesk.md §9.4
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


class KeyFileTests(SynchronousTestCase):
    """Key handling that cannot surprise (issue 14 item 9)."""

    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.lines: list[dict[str, object]] = []
        globalLogPublisher.addObserver(self.lines.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.lines.append)

    def text(self) -> str:
        return "\n".join(formatEvent(e) for e in self.lines)

    def test_generationLoggedWithAbsolutePath(self) -> None:
        relative = os.path.relpath(self.dir)
        key = loadServerKey("-", relative)
        path = os.path.abspath(os.path.join(self.dir, PRIVATE_FILE))
        self.assertIn(f"generated a new RustDesk key pair: {path}", self.text())
        self.assertIn(key.publicKey, self.text())
        for name in (PRIVATE_FILE, PUBLIC_FILE):
            self.assertEqual(os.stat(os.path.join(self.dir, name)).st_mode & 0o777, 0o600)
        self.lines.clear()
        loadServerKey("-", relative)
        self.assertNotIn("generated", self.text())

    def test_mismatchedPublicFileRefused(self) -> None:
        with open(os.path.join(self.dir, PRIVATE_FILE), "w") as f:
            f.write(SECRET)
        other = base64.b64encode(bytes(SigningKey(b"\x09" * 32).verify_key)).decode()
        with open(os.path.join(self.dir, PUBLIC_FILE), "w") as f:
            f.write(other)
        error = self.assertRaises(ConfigError, loadServerKey, "-", self.dir)
        message = str(error)
        self.assertEqual(message.count("\n"), 0)
        self.assertIn(os.path.abspath(os.path.join(self.dir, PUBLIC_FILE)), message)
        self.assertIn(PUBLIC, message)
        self.assertRaises(ConfigError, loadServerKey, "", self.dir)
        self.assertRaises(ConfigError, relayKey, "-", None, self.dir)

    def test_publicFileWithNewlineAccepted(self) -> None:
        with open(os.path.join(self.dir, PRIVATE_FILE), "w") as f:
            f.write(SECRET)
        with open(os.path.join(self.dir, PUBLIC_FILE), "w") as f:
            f.write(PUBLIC + "\n")
        self.assertEqual(loadServerKey("-", self.dir).publicKey, PUBLIC)

    def test_missingPublicFileRewritten(self) -> None:
        loadServerKey("-", self.dir)
        pub = os.path.join(self.dir, PUBLIC_FILE)
        os.remove(pub)
        self.lines.clear()
        key = loadServerKey("-", self.dir)
        with open(pub) as f:
            self.assertEqual(f.read(), key.publicKey)
        self.assertEqual(os.stat(pub).st_mode & 0o777, 0o600)
        self.assertIn("wrote the missing", self.text())

    def test_readableSecretTightened(self) -> None:
        path = os.path.join(self.dir, PRIVATE_FILE)
        with open(path, "w") as f:
            f.write(SECRET)
        os.chmod(path, 0o644)
        loadServerKey("-", self.dir)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
