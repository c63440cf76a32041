"""Tests for L{p2pnet.codecs.device_auth}, with the vectors of gateway.md §2.2."""

from __future__ import annotations

import base64
from typing import Any

from nacl.signing import SigningKey
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.device_auth import (
    DeviceProofError,
    b64urlDecode,
    b64urlEncode,
    buildPayload,
    buildPayloadV3,
    deriveDeviceId,
    normalizeMetadata,
    publicKeyRaw,
    signPayload,
    verifyDeviceProof,
)

SCOPES = ["operator.admin", "operator.read"]


class PayloadVectorTests(SynchronousTestCase):
    def test_v2(self) -> None:
        self.assertEqual(
            buildPayload("v2", "dev-1", "openclaw-macos", "ui", "operator", SCOPES,
                           1700000000000, None, "nonce-abc"),
            "v2|dev-1|openclaw-macos|ui|operator|operator.admin,operator.read|1700000000000"
            "||nonce-abc",
        )

    def test_v3(self) -> None:
        self.assertEqual(
            buildPayloadV3("dev-1", "openclaw-macos", "ui", "operator", SCOPES,
                           1700000000000, "tok-123", "nonce-abc", "  IOS  ", "  iPhone  "),
            "v3|dev-1|openclaw-macos|ui|operator|operator.admin,operator.read|1700000000000"
            "|tok-123|nonce-abc|ios|iphone",
        )

    def test_v3EmptyMetadata(self) -> None:
        self.assertEqual(
            buildPayloadV3("dev-2", "openclaw-ios", "ui", "operator", ["operator.read"],
                           1700000000001, None, "nonce-def", None, None),
            "v3|dev-2|openclaw-ios|ui|operator|operator.read|1700000000001||nonce-def||",
        )

    def test_asciiOnlyLowercase(self) -> None:
        self.assertEqual(normalizeMetadata("  İOS  "), "İos")
        self.assertEqual(normalizeMetadata("  MAC  "), "mac")

    def test_scopeOrderKept(self) -> None:
        self.assertIn("|b,a|", buildPayload("v2", "d", "c", "m", "r", ["b", "a"], 1, None, "n"))


class KeyTests(SynchronousTestCase):
    def test_b64url(self) -> None:
        for data in (b"", b"\xff\xfe", bytes(range(33))):
            self.assertEqual(b64urlDecode(b64urlEncode(data)), data)
            self.assertNotIn("=", b64urlEncode(data))
        self.assertEqual(b64urlDecode(base64.b64encode(b"\xfb\xff").decode()), b"\xfb\xff")
        self.assertRaises(ValueError, b64urlDecode, "!!!")

    def test_deviceId(self) -> None:
        raw = bytes(32)
        self.assertEqual(
            deriveDeviceId(raw),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925",
        )

    def test_pem(self) -> None:
        raw = bytes(SigningKey.generate().verify_key)
        der = bytes.fromhex("302a300506032b6570032100") + raw
        pem = ("-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(der).decode()
               + "\n-----END PUBLIC KEY-----\n")
        self.assertEqual(publicKeyRaw(pem), raw)
        self.assertEqual(publicKeyRaw(b64urlEncode(raw)), raw)
        self.assertRaises(ValueError, publicKeyRaw, b64urlEncode(raw[:31]))
        self.assertRaises(ValueError, publicKeyRaw, "-----BEGIN nothing")


class ProofTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.key = SigningKey.generate()
        self.pub = b64urlEncode(bytes(self.key.verify_key))
        self.deviceId = deriveDeviceId(bytes(self.key.verify_key))

    def proof(self, version: str = "v3", **overrides: Any) -> dict[str, Any]:
        common = (self.deviceId, "node-host", "node", "node", [], 1000, "tok", "n1")
        payload = (buildPayloadV3(*common, "Linux", None) if version == "v3"
                   else buildPayload("v2", *common))
        args: dict[str, Any] = dict(
            deviceId=self.deviceId, publicKey=self.pub, signature=signPayload(self.key, payload),
            signedAt=1000, nonce="n1", challengeNonce="n1", nowMs=1000, clientId="node-host",
            clientMode="node", role="node", scopes=[], token="tok", platform="linux",
            deviceFamily=None,
        )
        args.update(overrides)
        return args

    def failure(self, **overrides: Any) -> str:
        return self.assertRaises(
            DeviceProofError, verifyDeviceProof, **self.proof(**overrides)).code

    def test_v3(self) -> None:
        self.assertEqual(verifyDeviceProof(**self.proof()), ("v3", self.pub))

    def test_v2(self) -> None:
        self.assertEqual(verifyDeviceProof(**self.proof("v2"))[0], "v2")

    def test_idMismatch(self) -> None:
        self.assertEqual(self.failure(deviceId="0" * 64), "DEVICE_AUTH_DEVICE_ID_MISMATCH")
        self.assertEqual(self.failure(publicKey="@@"), "DEVICE_AUTH_DEVICE_ID_MISMATCH")

    def test_skew(self) -> None:
        verifyDeviceProof(**self.proof(nowMs=1000 + 120_000))
        verifyDeviceProof(**self.proof(nowMs=1000 - 120_000))
        self.assertEqual(self.failure(nowMs=1000 + 120_001), "DEVICE_AUTH_SIGNATURE_EXPIRED")
        self.assertEqual(self.failure(nowMs=1000 - 120_001), "DEVICE_AUTH_SIGNATURE_EXPIRED")

    def test_nonceBlank(self) -> None:
        self.assertEqual(self.failure(nonce="  "), "DEVICE_AUTH_NONCE_REQUIRED")

    def test_nonceMismatch(self) -> None:
        self.assertEqual(self.failure(challengeNonce="other"), "DEVICE_AUTH_NONCE_MISMATCH")

    def test_signatureOverOtherScopes(self) -> None:
        # Signed over [] but claiming admin scopes.
        self.assertEqual(self.failure(scopes=["operator.admin"]),
                         "DEVICE_AUTH_SIGNATURE_INVALID")

    def test_signatureGarbage(self) -> None:
        self.assertEqual(self.failure(signature="!!"), "DEVICE_AUTH_SIGNATURE_INVALID")
        self.assertEqual(self.failure(signature=b64urlEncode(bytes(64))),
                         "DEVICE_AUTH_SIGNATURE_INVALID")

    def test_metadataBound(self) -> None:
        self.assertEqual(self.failure(platform="windows"), "DEVICE_AUTH_SIGNATURE_INVALID")

    def test_errorFields(self) -> None:
        e = self.assertRaises(DeviceProofError, verifyDeviceProof,
                              **self.proof(challengeNonce="x"))
        self.assertEqual((e.message, e.reason), ("device nonce mismatch",
                                                 "device-nonce-mismatch"))
