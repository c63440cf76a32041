"""Tests for L{p2pnet.files}: owner-only modes whatever existed before."""

from __future__ import annotations

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.files import privateDirectory, privateFile, writePrivate


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
