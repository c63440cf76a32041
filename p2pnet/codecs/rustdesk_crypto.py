# -*- test-case-name: test.unit.test_rustdesk_crypto -*-
"""RustDesk's cryptographic encodings, sans-IO (libsodium through PyNaCl).

- signed C{IdPk}: libsodium combined mode, 64-byte Ed25519 signature then the message
  (rustdesk.md §4.10);
- the rendezvous C{KeyExchange} (rustdesk.md §4.17): the server's signed Curve25519 key, the
  client's box key and C{crypto_box}-sealed secretbox key;
- L{SecretStream}: per-frame C{crypto_secretbox} with counter nonces (rustdesk.md §2.2).
"""

from __future__ import annotations

import nacl.exceptions
from nacl.public import Box, PrivateKey, PublicKey
from nacl.secret import SecretBox
from nacl.signing import SigningKey, VerifyKey

from p2pnet.codecs.proto.message_pb2 import IdPk

__all__ = [
    "CryptoError",
    "SecretStream",
    "ZERO_NONCE",
    "openKeyExchangeReply",
    "openServerKeyExchange",
    "sealKeyExchangeReply",
    "signIdPk",
    "signedBoxKey",
    "verifySignedIdPk",
]

#: The nonce of the key-exchange box: 24 zero bytes.
ZERO_NONCE = bytes(24)


class CryptoError(ValueError):
    """The peer sent a signature, key or ciphertext that does not verify or decrypt."""


def signIdPk(signingKey: SigningKey, peerId: str, pk: bytes) -> bytes:
    """C{crypto_sign(IdPk{id, pk}, sk)} in combined mode (signature || message)."""
    return bytes(signingKey.sign(IdPk(id=peerId, pk=pk).SerializeToString()))


def verifySignedIdPk(serverPk: bytes, signed: bytes) -> tuple[str, bytes]:
    """Open a signed C{IdPk} with the server's Ed25519 public key; return C{(id, pk)}.

    @raise CryptoError: the signature or the message is bad.
    """
    try:
        message = VerifyKey(serverPk).verify(signed)
        idpk = IdPk.FromString(message)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as e:
        raise CryptoError(f"signed IdPk does not verify: {e}") from None
    return idpk.id, idpk.pk


def signedBoxKey(signingKey: SigningKey, boxKey: PrivateKey) -> bytes:
    """The server's first C{KeyExchange} key: its Curve25519 public key, signed (96 bytes)."""
    return bytes(signingKey.sign(bytes(boxKey.public_key)))


def openServerKeyExchange(serverPk: bytes, signed: bytes) -> bytes:
    """Client side: the server's Curve25519 public key from its signed C{KeyExchange} key.

    @raise CryptoError: the signature does not verify or the key is not 32 bytes.
    """
    try:
        key = VerifyKey(serverPk).verify(signed)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as e:
        raise CryptoError(f"server key does not verify: {e}") from None
    if len(key) != 32:
        raise CryptoError("server box key is not 32 bytes")
    return bytes(key)


def sealKeyExchangeReply(serverBoxPk: bytes, symmetricKey: bytes) -> tuple[bytes, bytes]:
    """Client side: C{(clientBoxPk, crypto_box(symmetricKey))} for the C{KeyExchange} reply."""
    ephemeral = PrivateKey.generate()
    sealed = Box(ephemeral, PublicKey(serverBoxPk)).encrypt(symmetricKey, ZERO_NONCE)
    return bytes(ephemeral.public_key), bytes(sealed.ciphertext)


def openKeyExchangeReply(boxKey: PrivateKey, clientBoxPk: bytes, sealed: bytes) -> bytes:
    """Server side: the 32-byte secretbox key from a client's C{KeyExchange} reply.

    @raise CryptoError: the box does not open or the key is not 32 bytes.
    """
    try:
        key = Box(boxKey, PublicKey(clientBoxPk)).decrypt(sealed, ZERO_NONCE)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as e:
        raise CryptoError(f"key exchange does not open: {e}") from None
    if len(key) != 32:
        raise CryptoError("symmetric key is not 32 bytes")
    return bytes(key)


class SecretStream:
    """Frame payload encryption after a key exchange (rustdesk.md §2.2).

    Each direction has its own counter, incremented before use, so the first frame is
    sealed with nonce 1 (u64 little-endian, zero-padded to 24 bytes). Payloads of at
    most one byte pass in the clear on receipt (heartbeats).
    """

    def __init__(self, key: bytes) -> None:
        self._box = SecretBox(key)
        self._sent = 0
        self._received = 0

    @staticmethod
    def _nonce(counter: int) -> bytes:
        return counter.to_bytes(8, "little") + bytes(16)

    def seal(self, payload: bytes) -> bytes:
        """Encrypt one outgoing payload (MAC || ciphertext)."""
        self._sent += 1
        return bytes(self._box.encrypt(payload, self._nonce(self._sent)).ciphertext)

    def open(self, payload: bytes) -> bytes:
        """Decrypt one incoming payload; payloads of 0 or 1 bytes are returned as is.

        @raise CryptoError: the payload does not decrypt (the stream must end).
        """
        if len(payload) <= 1:
            return payload
        self._received += 1
        try:
            return bytes(self._box.decrypt(payload, self._nonce(self._received)))
        except nacl.exceptions.CryptoError:
            raise CryptoError("decryption error") from None
