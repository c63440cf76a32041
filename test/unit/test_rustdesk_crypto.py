"""Tests for L{p2pnet.codecs.rustdesk_crypto}: rustdesk.md §9.4 vectors and key exchange."""

from nacl.public import PrivateKey
from nacl.signing import SigningKey
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.rustdesk_crypto import (
    CryptoError,
    SecretStream,
    openKeyExchangeReply,
    openServerKeyExchange,
    sealKeyExchangeReply,
    signedBoxKey,
    signIdPk,
    verifySignedIdPk,
)

SERVER = SigningKey(b"\x01" * 32)
PEER_PK = bytes.fromhex("8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394")


class SignedIdPkTests(SynchronousTestCase):
    def test_vector(self) -> None:
        self.assertEqual(bytes(SERVER.verify_key).hex(),
                         "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c")
        self.assertEqual(bytes(SigningKey(b"\x02" * 32).verify_key), PEER_PK)
        signed = signIdPk(SERVER, "123456789", PEER_PK)
        self.assertEqual(len(signed), 109)
        self.assertEqual(signed[:64].hex(),
                         "59916b42ccac8288a14a71e661f9b1cd4bc5c723309c03b8ff7f81a4b3115523"
                         "55ae32f71e85be4649d44d4d419b6a6ec650769f3f463c0d74690eba51c74c06")
        self.assertEqual(signed[64:].hex(),
                         "0a09313233343536373839" "1220" + PEER_PK.hex())
        self.assertEqual(verifySignedIdPk(bytes(SERVER.verify_key), signed),
                         ("123456789", PEER_PK))

    def test_tampered(self) -> None:
        signed = bytearray(signIdPk(SERVER, "123456789", PEER_PK))
        signed[70] ^= 1
        self.assertRaises(CryptoError, verifySignedIdPk, bytes(SERVER.verify_key),
                          bytes(signed))
        other = bytes(SigningKey(b"\x09" * 32).verify_key)
        self.assertRaises(CryptoError, verifySignedIdPk, other, bytes(signed))
        self.assertRaises(CryptoError, verifySignedIdPk, b"short", b"")


class KeyExchangeTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        box = PrivateKey.generate()
        signed = signedBoxKey(SERVER, box)
        self.assertEqual(len(signed), 96)
        serverBoxPk = openServerKeyExchange(bytes(SERVER.verify_key), signed)
        clientPk, sealed = sealKeyExchangeReply(serverBoxPk, b"\x05" * 32)
        self.assertEqual((len(clientPk), len(sealed)), (32, 48))
        self.assertEqual(openKeyExchangeReply(box, clientPk, sealed), b"\x05" * 32)
        self.assertRaises(CryptoError, openKeyExchangeReply, box, clientPk, sealed[:-1])
        self.assertRaises(CryptoError, openServerKeyExchange,
                          bytes(SigningKey(b"\x09" * 32).verify_key), signed)


class SecretStreamTests(SynchronousTestCase):
    def test_vector(self) -> None:
        """rustdesk.md §9.4: the first frame is sealed with nonce 1."""
        stream = SecretStream(b"\x05" * 32)
        plain = bytes.fromhex("4a060a0173120163")
        sealed = stream.seal(plain)
        self.assertEqual(sealed.hex(), "4426c5af306b8e183f687e2f63f9f09d1c5cf969ace0478a")
        receiver = SecretStream(b"\x05" * 32)
        self.assertEqual(receiver.open(b""), b"")
        self.assertEqual(receiver.open(b"x"), b"x")
        self.assertEqual(receiver.open(sealed), plain)

    def test_countersAdvance(self) -> None:
        a, b = SecretStream(b"\x07" * 32), SecretStream(b"\x07" * 32)
        first, second = a.seal(b"one"), a.seal(b"two")
        self.assertRaises(CryptoError, SecretStream(b"\x07" * 32).open, second)
        self.assertEqual((b.open(first), b.open(second)), (b"one", b"two"))
