# -*- test-case-name: test.unit.test_gateway_device_auth -*-
"""Ed25519 device identity of the control gateway (sans-IO; time is a parameter).

A device proves itself by signing a C{|}-joined payload string (v3, else v2) that binds
its id, client, role, scopes, signing time, shared token and the server's challenge
nonce. The id is the lowercase hex SHA-256 of the raw 32-byte public key; keys and
signatures travel as base64url without padding.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

__all__ = [
    "DeviceProofError",
    "SIGNATURE_SKEW_MS",
    "b64urlDecode",
    "b64urlEncode",
    "buildPayload",
    "buildPayloadV3",
    "deriveDeviceId",
    "normalizeMetadata",
    "publicKeyRaw",
    "signPayload",
    "verifyDeviceProof",
]

#: Largest allowed distance between C{signedAt} and the server's clock, either way.
SIGNATURE_SKEW_MS = 120_000

#: DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw key follows it.
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_PEM_BODY = re.compile(r"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----", re.S)


def b64urlEncode(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64urlDecode(text: str) -> bytes:
    """Base64url with or without padding, falling back to standard base64.

    @raise ValueError: neither decodes.
    """
    padded = text + "=" * (-len(text) % 4)
    for alphabet in (b"-_", b"+/"):
        try:
            return base64.b64decode(padded, altchars=alphabet, validate=True)
        except (binascii.Error, ValueError):
            continue
    raise ValueError("not base64")


def publicKeyRaw(publicKey: str) -> bytes:
    """The raw 32-byte Ed25519 key of C{device.publicKey} (base64url, or PEM SPKI).

    @raise ValueError: not an Ed25519 public key in either form.
    """
    if "BEGIN" in publicKey:
        match = _PEM_BODY.search(publicKey)
        if match is None:
            raise ValueError("malformed PEM")
        der = base64.b64decode("".join(match.group(1).split()))
        if len(der) != 44 or not der.startswith(_SPKI_PREFIX):
            raise ValueError("not an Ed25519 SPKI key")
        return der[len(_SPKI_PREFIX) :]
    raw = b64urlDecode(publicKey)
    if len(raw) != 32:
        raise ValueError("an Ed25519 key is 32 bytes")
    return raw


def deriveDeviceId(raw: bytes) -> str:
    """The device id: lowercase hex SHA-256 of the raw public key."""
    return hashlib.sha256(raw).hexdigest()


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def normalizeMetadata(value: str | None) -> str:
    """C{platform}/C{deviceFamily} as signed: trimmed, ASCII letters lowercased, else C{""}."""
    if value is None:
        return ""
    return value.strip().translate(_ASCII_LOWER)


def buildPayload(
    version: str,
    deviceId: str,
    clientId: str,
    clientMode: str,
    role: str,
    scopes: Sequence[str],
    signedAtMs: int,
    token: str | None,
    nonce: str,
    platform: str | None = None,
    deviceFamily: str | None = None,
) -> str:
    """C{version|deviceId|clientId|mode|role|scopes|signedAt|token|nonce}, and for
    C{v3} then the normalised C{platform} and C{deviceFamily} (C{v2} has neither)."""
    fields = [
        version,
        deviceId,
        clientId,
        clientMode,
        role,
        ",".join(scopes),
        str(signedAtMs),
        token or "",
        nonce,
    ]
    if version == "v3":
        fields += [normalizeMetadata(platform), normalizeMetadata(deviceFamily)]
    return "|".join(fields)


#: L{buildPayload} with C{"v3"} first: the payload clients sign.
buildPayloadV3 = partial(buildPayload, "v3")


def signPayload(key: SigningKey, payload: str) -> str:
    """The base64url Ed25519 signature of C{payload}'s UTF-8 bytes."""
    return b64urlEncode(key.sign(payload.encode("utf-8")).signature)


@dataclass(frozen=True)
class DeviceProofError(Exception):
    """A device proof check failed (gateway.md §2.4); the connect closes with 1008."""

    message: str
    reason: str
    code: str

    def __str__(self) -> str:
        return self.message


_ID_MISMATCH = DeviceProofError(
    "device identity mismatch", "device-id-mismatch", "DEVICE_AUTH_DEVICE_ID_MISMATCH"
)
_STALE = DeviceProofError(
    "device signature expired", "device-signature-stale", "DEVICE_AUTH_SIGNATURE_EXPIRED"
)
_NONCE_MISSING = DeviceProofError(
    "device nonce required", "device-nonce-missing", "DEVICE_AUTH_NONCE_REQUIRED"
)
_NONCE_MISMATCH = DeviceProofError(
    "device nonce mismatch", "device-nonce-mismatch", "DEVICE_AUTH_NONCE_MISMATCH"
)
_BAD_SIGNATURE = DeviceProofError(
    "device signature invalid", "device-signature", "DEVICE_AUTH_SIGNATURE_INVALID"
)


def _verifies(key: VerifyKey, payload: str, signature: bytes) -> bool:
    try:
        key.verify(payload.encode("utf-8"), signature)
    except (BadSignatureError, CryptoError, ValueError):
        return False
    return True


def verifyDeviceProof(
    *,
    deviceId: str,
    publicKey: str,
    signature: str,
    signedAt: int,
    nonce: str,
    challengeNonce: str,
    nowMs: int,
    clientId: str,
    clientMode: str,
    role: str,
    scopes: Sequence[str],
    token: str | None,
    platform: str | None,
    deviceFamily: str | None,
) -> tuple[str, str]:
    """Check a device proof in the spec's order; return C{(payloadVersion, rawKeyB64url)}.

    @raise DeviceProofError: the first failing check (id, skew, nonce, nonce equality,
        signature).
    """
    try:
        raw: bytes | None = publicKeyRaw(publicKey)
    except ValueError:
        raw = None
    # 1. The id derived from the key equals device.id (an unreadable key cannot match).
    if raw is None or deriveDeviceId(raw) != deviceId:
        raise _ID_MISMATCH
    # 2. signedAt lies within the symmetric skew window.
    if abs(nowMs - signedAt) > SIGNATURE_SKEW_MS:
        raise _STALE
    # 3. and 4. The nonce is present and echoes the challenge.
    trimmed = nonce.strip()
    if not trimmed:
        raise _NONCE_MISSING
    if trimmed != challengeNonce:
        raise _NONCE_MISMATCH
    # 5. v3 first, then v2.
    try:
        sig = b64urlDecode(signature)
        key = VerifyKey(raw)
    except (ValueError, CryptoError, TypeError):
        raise _BAD_SIGNATURE from None
    common = (deviceId, clientId, clientMode, role, scopes, signedAt, token, trimmed)
    if _verifies(key, buildPayload("v3", *common, platform, deviceFamily), sig):
        version = "v3"
    elif _verifies(key, buildPayload("v2", *common), sig):
        version = "v2"
    else:
        raise _BAD_SIGNATURE
    # 6. The key normalises to raw base64url: it was already parsed for check 1, so the
    # reference's "device public key invalid" surfaces here as an id mismatch.
    return version, b64urlEncode(raw)
