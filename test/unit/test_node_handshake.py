"""The rustdesk.md §6.6 handshake and §6.7 hashes against rustdesk.md §9.4 and §9.5."""

from __future__ import annotations

from nacl.public import PrivateKey
from nacl.signing import SigningKey
from twisted.trial.unittest import TestCase

from p2pnet.codecs.proto import message_pb2 as pb
from p2pnet.codecs.rustdesk_crypto import CryptoError, SecretStream
from p2pnet.node.handshake import ControlledHandshake, controllerReply
from p2pnet.node.identity import passwordHash
from p2pnet.node.login import challengeResponse, verifyResponse
from p2pnet.node.viewer import loginHash

PEER_SEED = bytes([2]) * 32
EPHEMERAL = bytes([3]) * 32
CONTROLLER_BOX = bytes([4]) * 32
SYMMETRIC = bytes([5]) * 32


class HandshakeVectorTests(TestCase):
    def setUp(self) -> None:
        self.handshake = ControlledHandshake(SigningKey(PEER_SEED), "123456789",
                                             PrivateKey(EPHEMERAL))

    def test_ephemeralKey(self) -> None:
        self.assertEqual(bytes(self.handshake.ephemeral.public_key).hex(),
                         "5dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e0124b3ef22")

    def test_signedIdSignature(self) -> None:
        """rustdesk.md §9.4: the SignedId's signature over IdPk{id, ephemeral pk}."""
        signed = self.handshake.signedId().signed_id.id
        self.assertEqual(signed[:64].hex(),
                         "b56b8d7f5408b4dba2cb486bb31f2e8167567048b618d1bd467cb10a282fc9a0"
                         "983655c5716b5c7bd46ec77941c22696086b5b454bfe1f9121af30ea438ab706")
        idpk = pb.IdPk.FromString(signed[64:])
        self.assertEqual(idpk.id, "123456789")

    def test_publicKeyOpensToSymmetricKey(self) -> None:
        """rustdesk.md §9.4: the controller's box (key 32x04, sym 32x05) opens to the sym key, and
        the first frame from the node is the vector's ciphertext."""
        ctl = PrivateKey(CONTROLLER_BOX)
        sealed = bytes.fromhex("93fa81622980fb477a8821a093ccbc8ba1413de7db32fbf8778fc004"
                               "32715bb3ac31429d76c4877c321cf1199c76f7c8")
        result = self.handshake.receive(pb.Message(public_key=pb.PublicKey(
            asymmetric_value=bytes(ctl.public_key), symmetric_value=sealed)))
        self.assertEqual(result.key, SYMMETRIC)
        assert result.key is not None
        first = SecretStream(result.key).seal(
            pb.Message(hash=pb.Hash(salt="s", challenge="c")).SerializeToString())
        self.assertEqual(first.hex(), "4426c5af306b8e183f687e2f63f9f09d1c5cf969ace0478a")

    def test_emptyPublicKeyRejectsOurKey(self) -> None:
        result = self.handshake.receive(pb.Message(public_key=pb.PublicKey()))
        self.assertIsNone(result.key)
        self.assertTrue(result.keyRejected)

    def test_otherMessageContinuesUnencrypted(self) -> None:
        for message in (pb.Message(), pb.Message(test_delay=pb.TestDelay(time=1))):
            result = self.handshake.receive(message)
            self.assertEqual((result.key, result.keyRejected), (None, False))

    def test_badBoxRaises(self) -> None:
        ctl = PrivateKey(CONTROLLER_BOX)
        self.assertRaises(CryptoError, self.handshake.receive, pb.Message(
            public_key=pb.PublicKey(asymmetric_value=bytes(ctl.public_key),
                                    symmetric_value=b"x" * 48)))
        self.assertRaises(CryptoError, self.handshake.receive, pb.Message(
            public_key=pb.PublicKey(asymmetric_value=b"short", symmetric_value=b"x")))

    def test_controllerRoundTrip(self) -> None:
        """The controller's half verifies our SignedId and both ends get one key."""
        pk = bytes(SigningKey(PEER_SEED).verify_key)
        reply, key = controllerReply(pk, "123456789", self.handshake.signedId())
        self.assertEqual(self.handshake.receive(reply).key, key)

    def test_controllerWithoutPkSendsEmptyMessage(self) -> None:
        reply, key = controllerReply(None, "123456789", self.handshake.signedId())
        self.assertEqual((reply.SerializeToString(), key), (b"", None))

    def test_controllerWrongIdSendsEmptyMessage(self) -> None:
        pk = bytes(SigningKey(PEER_SEED).verify_key)
        reply, key = controllerReply(pk, "999999999", self.handshake.signedId())
        self.assertEqual((reply.WhichOneof("union"), key), (None, None))

    def test_controllerBadSignatureSendsEmptyPublicKey(self) -> None:
        other = bytes(SigningKey(bytes([9]) * 32).verify_key)
        reply, key = controllerReply(other, "123456789", self.handshake.signedId())
        self.assertEqual(reply.WhichOneof("union"), "public_key")
        self.assertEqual(reply.public_key.asymmetric_value, b"")
        self.assertIsNone(key)


class PasswordVectorTests(TestCase):
    def test_vector(self) -> None:
        """rustdesk.md §9.5."""
        h1 = passwordHash("password", "salt")
        self.assertEqual(h1.hex(),
                         "7a37b85c8918eac19a9089c0fa5a2ab4dce3f90528dcdeec108b23ddf3607b99")
        self.assertEqual(challengeResponse(h1, "challenge").hex(),
                         "1ea65d82db76c42e7f674ee7f2c5df1626c8fc80b0d8f18fa61a07b083c16197")
        self.assertEqual(loginHash("password", "salt", "challenge"),
                         challengeResponse(h1, "challenge"))

    def test_verify(self) -> None:
        h1 = passwordHash("password", "salt")
        self.assertTrue(verifyResponse(h1, "abc", loginHash("password", "salt", "abc")))
        self.assertFalse(verifyResponse(h1, "abc", loginHash("passworD", "salt", "abc")))
        self.assertFalse(verifyResponse(h1, "abd", loginHash("password", "salt", "abc")))
        self.assertFalse(verifyResponse(h1, "abc", b""))
        self.assertFalse(verifyResponse(b"", "abc", b""))
