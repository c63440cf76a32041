# -*- test-case-name: test.unit.test_node_identity -*-
"""What a node keeps in its data directory: id, Ed25519 key, uuid, password hash.

One JSON file, C{node.json}, mode 0600::

    {"id": "123456789", "uuid": b64, "key": b64(seed || pk), "salt": "...",
     "passwordHash": hex(SHA-256(password || salt))}

Only the salted hash of the password is stored (rustdesk.md §6.7: what a controller
sends is C{SHA-256(SHA-256(password || salt) || challenge)}, so the first hash is all
the node needs to check it). A password given in the configuration replaces the stored
hash; with neither, a random password is made and returned once for the log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import string
from dataclasses import dataclass

from nacl.signing import SigningKey

from p2pnet.errors import ConfigError

__all__ = ["FILENAME", "NodeIdentity", "loadIdentity", "newNodeId", "passwordHash"]

FILENAME = "node.json"
_ALPHABET = string.ascii_letters + string.digits


def newNodeId() -> str:
    """A random nine-digit id (the first-start default)."""
    return str(100_000_000 + secrets.randbelow(900_000_000))


def passwordHash(password: str, salt: str) -> bytes:
    """C{SHA-256(password || salt)} (rustdesk.md §6.7 step 2, "h1")."""
    return hashlib.sha256(password.encode() + salt.encode()).digest()


@dataclass
class NodeIdentity:
    """The node's persistent identity.

    @ivar generatedPassword: set only when this start made a new password (to print it
        once); never stored.
    """

    path: str
    peerId: str
    uuid: bytes
    signingKey: SigningKey
    salt: str
    hash: bytes
    generatedPassword: str | None = None

    @property
    def pk(self) -> bytes:
        """The 32-byte Ed25519 public key registered with the rendezvous server."""
        return bytes(self.signingKey.verify_key)

    def save(self) -> None:
        """Write the file (mode 0600) atomically."""
        data = {
            "id": self.peerId,
            "uuid": base64.b64encode(self.uuid).decode(),
            "key": base64.b64encode(bytes(self.signingKey) + self.pk).decode(),
            "salt": self.salt,
            "passwordHash": self.hash.hex(),
        }
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def setId(self, peerId: str) -> None:
        """Keep a new id (after UUID_MISMATCH)."""
        self.peerId = peerId
        self.save()


def loadIdentity(dataDir: str, peerId: str = "", password: str = "") -> NodeIdentity:
    """Read (or create) C{dataDir/node.json}, applying a configured id and password.

    @raise ConfigError: the file exists but is not a node identity (names C{data-dir}).
    """
    path = os.path.join(dataDir, FILENAME)
    try:
        with open(path) as f:
            data = json.load(f)
        raw = base64.b64decode(data["key"], validate=True)
        key = SigningKey(raw[:32])
        if len(raw) != 64 or bytes(key.verify_key) != raw[32:]:
            raise ValueError("key pair does not match")
        identity = NodeIdentity(path, str(data["id"]), base64.b64decode(data["uuid"]), key,
                                str(data["salt"]), bytes.fromhex(data["passwordHash"]))
    except FileNotFoundError:
        identity = NodeIdentity(path, newNodeId(), os.urandom(16), SigningKey.generate(),
                                "".join(secrets.choice(_ALPHABET) for _ in range(8)), b"")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError("data-dir", f"{path} is not a node identity: {e}") from None
    if peerId:
        identity.peerId = peerId
    if password:
        identity.hash = passwordHash(password, identity.salt)
    elif not identity.hash:
        generated = "".join(secrets.choice(_ALPHABET) for _ in range(10))
        identity.hash = passwordHash(generated, identity.salt)
        identity.generatedPassword = generated
    identity.save()
    return identity
