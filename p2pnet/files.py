# -*- test-case-name: test.unit.test_files -*-
"""Files and directories holding secrets or state: owner-only, whatever existed before.

Issue 14 item 8: a database created with the process umask (0644) in a pre-existing
0755 data directory let any local user read the gateway's admin token. Every file
p2pnet writes that holds a secret or state goes through here: mode 0600, its directory
0700, and a file or directory that already exists with wider permissions is narrowed.
Public material meant to be handed out (the TLS certificate, the RustDesk C{.pub} key)
may stay readable.
"""

from __future__ import annotations

import os
import stat

__all__ = [
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "PUBLIC_FILES",
    "narrowFiles",
    "privateDirectory",
    "privateFile",
    "writePrivate",
]

#: Files of the data directory meant to be handed out, which may stay readable.
PUBLIC_FILES = frozenset({"tls-cert.pem", "id_ed25519.pub"})

#: Mode of a directory holding secrets or state.
PRIVATE_DIR = 0o700
#: Mode of a file holding secrets or state.
PRIVATE_FILE = 0o600


def privateDirectory(path: str) -> str:
    """Create C{path} (and its parents) if missing; make it mode 0700 either way.

    @raise OSError: it cannot be created or its mode changed.
    """
    os.makedirs(path, mode=PRIVATE_DIR, exist_ok=True)
    if os.stat(path).st_mode & 0o777 != PRIVATE_DIR:
        os.chmod(path, PRIVATE_DIR)
    return path


def privateFile(path: str) -> str:
    """Create C{path} empty if missing; make it mode 0600 either way (its content kept).

    SQLite gives its C{-wal} and C{-shm} files the mode of the database file, so a
    database made private before it is opened keeps them private too.

    @raise OSError: it cannot be created or its mode changed.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), PRIVATE_FILE)
    try:
        if os.fstat(fd).st_mode & 0o777 != PRIVATE_FILE:
            os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
    return path


def narrowFiles(path: str, public: frozenset[str] = PUBLIC_FILES) -> list[str]:
    """Make every regular file directly in directory C{path} mode 0600 if it is readable
    by others, except the C{public} ones; return the names narrowed.

    Run on the data directory at start, so a file left wider by an older version or by
    hand (a token database, a key, a generated password) is narrowed whichever service
    owns it.

    @raise OSError: the directory cannot be read.
    """
    narrowed = []
    for name in sorted(os.listdir(path)):
        if name in public:
            continue
        full = os.path.join(path, name)
        try:
            info = os.lstat(full)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077:
            os.chmod(full, info.st_mode & 0o700 | 0o600)
            narrowed.append(name)
    return narrowed


def writePrivate(path: str, data: bytes) -> None:
    """Replace C{path}'s content with C{data}, the file mode 0600 before a byte is written.

    @raise OSError: as raised by the file system.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                 PRIVATE_FILE)
    with os.fdopen(fd, "wb") as f:
        if os.fstat(fd).st_mode & 0o777 != PRIVATE_FILE:
            os.fchmod(fd, PRIVATE_FILE)
        f.write(data)
