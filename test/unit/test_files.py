"""Tests for L{p2pnet.files}: owner-only modes whatever existed before."""

from __future__ import annotations

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.files import narrowFiles, privateDirectory, privateFile, writePrivate


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class FilesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.old = os.umask(0o022)
        self.addCleanup(os.umask, self.old)
        self.base = self.mktemp()

    def test_newDirectory(self) -> None:
        path = os.path.join(self.base, "a", "b")
        self.assertEqual(privateDirectory(path), path)
        self.assertEqual(mode(path), 0o700)

    def test_existingDirectoryNarrowed(self) -> None:
        os.makedirs(self.base, mode=0o755)
        os.chmod(self.base, 0o755)
        privateDirectory(self.base)
        self.assertEqual(mode(self.base), 0o700)

    def test_fileCreatedAndNarrowed(self) -> None:
        os.makedirs(self.base)
        path = os.path.join(self.base, "db")
        privateFile(path)
        self.assertEqual((mode(path), os.path.getsize(path)), (0o600, 0))
        with open(path, "w") as f:
            f.write("state")
        os.chmod(path, 0o644)
        privateFile(path)
        self.assertEqual(mode(path), 0o600)
        with open(path) as f:
            self.assertEqual(f.read(), "state")

    def test_writePrivate(self) -> None:
        os.makedirs(self.base)
        path = os.path.join(self.base, "key")
        with open(path, "w") as f:
            f.write("old, longer content")
        os.chmod(path, 0o666)
        writePrivate(path, b"new")
        self.assertEqual(mode(path), 0o600)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"new")

    def test_narrowFiles(self) -> None:
        os.makedirs(self.base)
        for name, wide in (("db", 0o644), ("key", 0o640), ("tls-cert.pem", 0o644),
                           ("ok", 0o600)):
            path = os.path.join(self.base, name)
            with open(path, "w") as f:
                f.write(name)
            os.chmod(path, wide)
        os.makedirs(os.path.join(self.base, "sub"))
        self.assertEqual(narrowFiles(self.base), ["db", "key"])
        self.assertEqual([mode(os.path.join(self.base, n)) for n in ("db", "key", "ok")],
                         [0o600, 0o600, 0o600])
        self.assertEqual(mode(os.path.join(self.base, "tls-cert.pem")), 0o644)
