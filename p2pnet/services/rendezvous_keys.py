# -*- test-case-name: test.unit.test_rendezvous_keys -*-
"""The rendezvous server's Ed25519 key pair and the C{--key} setting (hbbs semantics).

Files in the data directory use hbbs's encodings, so keys can be copied between them:
C{id_ed25519} is base64 of the 64-byte libsodium secret key (seed || public key),
C{id_ed25519.pub} is base64 of the 32-byte public key, neither with a newline.

The files cannot surprise (issue 14 item 9; hbbs's most common complaint is a server
started from another directory that silently made a new key, "Key mismatch"): a new
pair is logged with the absolute path of its files; an C{id_ed25519.pub} that does not
hold the public half of C{id_ed25519} stops the start with one line naming the file
(users hand that file to clients); a missing C{.pub} is written again; both files are
0600, and a secret key file readable by others is made 0600.

C{--key} (rustdesk.md §4.2):

- base64 of a 64-byte secret key: sign with it; clients must send its public half;
- C{-} or C{_}: load or generate the pair in the data directory; clients must send its
  public key;
- empty: load or generate the pair (so C{pk} is signed) but check no licence key;
- anything else: clients must send exactly that string; nothing is signed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from dataclasses import dataclass

from nacl.signing import SigningKey
from twisted.logger import Logger

from p2pnet.errors import ConfigError

__all__ = [
    "PRIVATE_FILE",
    "PUBLIC_FILE",
    "ServerKey",
    "generateKeyPair",
    "loadServerKey",
    "parseSecretKey",
    "publicKeyText",
    "relayKey",
    "secretKeyBytes",
]

log = Logger()

PRIVATE_FILE = "id_ed25519"
PUBLIC_FILE = "id_ed25519.pub"

#: hbbs regenerates at most this many times looking for a public key without C{/} or C{:}.
_GENERATE_ATTEMPTS = 300


@dataclass(frozen=True)
class ServerKey:
    """What the C{--key} setting resolved to.

    @ivar signingKey: the secret key that signs C{pk} fields, or C{None}.
    @ivar enforced: the licence key clients must send; empty means no check.
    """

    signingKey: SigningKey | None
    enforced: str

    @property
    def publicKey(self) -> str:
        """The base64 public key clients configure as "Key", or empty without a key pair."""
        if self.signingKey is None:
            return ""
        return base64.b64encode(bytes(self.signingKey.verify_key)).decode()

    def accepts(self, licenceKey: str) -> bool:
        """Whether C{licenceKey} passes the licence check (constant-time comparison)."""
        if not self.enforced:
            return True
        return hmac.compare_digest(licenceKey.encode(), self.enforced.encode())


def secretKeyBytes(signingKey: SigningKey) -> bytes:
    """The libsodium 64-byte secret key: seed || public key."""
    return bytes(signingKey) + bytes(signingKey.verify_key)


def generateKeyPair() -> SigningKey:
    """A new pair whose base64 public key has no C{/} or C{:} (as hbbs makes them)."""
    key = SigningKey.generate()
    for _ in range(_GENERATE_ATTEMPTS - 1):
        text = base64.b64encode(bytes(key.verify_key)).decode()
        if "/" not in text and ":" not in text:
            break
        key = SigningKey.generate()
    return key


def parseSecretKey(text: str) -> SigningKey | None:
    """The key pair in base64 of a 64-byte secret key, or C{None} if C{text} is not one.

    @raise ValueError: it is 64 bytes but its public half does not match its seed.
    """
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 64:
        return None
    key = SigningKey(raw[:32])
    if bytes(key.verify_key) != raw[32:]:
        raise ValueError("the public half does not belong to the seed")
    return key


def _writeNew(path: str, data: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def publicKeyText(key: SigningKey) -> str:
    """The base64 public key, as C{id_ed25519.pub} holds it and clients configure it."""
    return base64.b64encode(bytes(key.verify_key)).decode()


def loadOrCreateKeyPair(dataDir: str, settingKey: str = "key") -> SigningKey:
    """The pair in C{dataDir/id_ed25519}, generated (both files) if it does not exist.

    A missing C{id_ed25519.pub} is written again; one that does not match is refused.

    @raise ConfigError: a file exists but is not a valid key, or the two do not match.
    """
    path = os.path.abspath(os.path.join(dataDir, PRIVATE_FILE))
    pubPath = os.path.abspath(os.path.join(dataDir, PUBLIC_FILE))
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        key = generateKeyPair()
        _writeNew(pubPath, publicKeyText(key), 0o600)
        _writeNew(path, base64.b64encode(secretKeyBytes(key)).decode(), 0o600)
        log.info("generated a new RustDesk key pair: {path} and {pubPath}; clients need "
                 "key {public}", path=path, pubPath=pubPath, public=publicKeyText(key))
        return key
    except OSError as e:
        raise ConfigError(settingKey, f"cannot read {path}: {e.strerror}") from None
    try:
        stored = parseSecretKey(text)
    except ValueError as e:
        raise ConfigError(settingKey, f"{path} is not a valid key: {e}") from None
    if stored is None:
        raise ConfigError(
            settingKey, f"{path} is not base64 of a 64-byte Ed25519 secret key"
        )
    _tighten(path)
    _checkPublicFile(pubPath, stored, settingKey)
    return stored


def _tighten(path: str) -> None:
    """Make a secret key file readable by its owner only."""
    try:
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            os.chmod(path, 0o600)
            log.warn("{path} was readable by others (mode {mode:o}); made it 0600",
                     path=path, mode=mode)
    except OSError:
        pass


def _checkPublicFile(pubPath: str, key: SigningKey, settingKey: str) -> None:
    expected = publicKeyText(key)
    try:
        with open(pubPath) as f:
            found = f.read().strip()
    except FileNotFoundError:
        _writeNew(pubPath, expected, 0o600)
        log.info("wrote the missing {pubPath} (key {public})", pubPath=pubPath,
                 public=expected)
        return
    except OSError as e:
        raise ConfigError(settingKey, f"cannot read {pubPath}: {e.strerror}") from None
    if not hmac.compare_digest(found.encode(), expected.encode()):
        raise ConfigError(
            settingKey,
            f"{pubPath} does not hold the public key of {PRIVATE_FILE} ({expected}); "
            f"clients given that file would fail with \"Key mismatch\": fix or delete it",
        )


def loadServerKey(value: str, dataDir: str, settingKey: str = "key") -> ServerKey:
    """Resolve the C{--key} setting (see the module docstring) against C{dataDir}.

    @raise ConfigError: a key file is malformed or a secret key is inconsistent.
    """
    try:
        secret = parseSecretKey(value)
    except ValueError as e:
        raise ConfigError(settingKey, f"bad secret key: {e}") from None
    if secret is not None:
        return ServerKey(secret, base64.b64encode(bytes(secret.verify_key)).decode())
    if value in ("", "-", "_"):
        pair = loadOrCreateKeyPair(dataDir, settingKey)
        enforced = "" if value == "" else base64.b64encode(bytes(pair.verify_key)).decode()
        return ServerKey(pair, enforced)
    return ServerKey(None, value)


def relayKey(value: str, server: ServerKey | None, dataDir: str,
             settingKey: str = "relay-key") -> str:
    """The key relay legs must send, from C{--relay-key} (hbbr semantics); empty = no check.

    C{-} or C{_} mean the server's public key (from C{server}, or the data directory's
    pair), a base64 secret key means its public half, anything else is literal.
    """
    if value in ("-", "_"):
        if server is not None and server.signingKey is not None:
            return server.publicKey
        return publicKeyText(loadOrCreateKeyPair(dataDir, settingKey))
    try:
        secret = parseSecretKey(value)
    except ValueError as e:
        raise ConfigError(settingKey, f"bad secret key: {e}") from None
    if secret is not None:
        return base64.b64encode(bytes(secret.verify_key)).decode()
    return value
