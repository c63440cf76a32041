# -*- test-case-name: test.unit.test_node_handshake -*-
"""The secure handshake on a peer stream (rustdesk.md §6.6), both sides, sans-IO.

Controlled side (the node), when the stream is secure:

1. send C{Message{signed_id: crypto_sign(IdPk{id, ephemeral box pk}, ed25519 sk)}};
2. the first message back decides: C{PublicKey} with a 32-byte C{asymmetric_value}
   opens the 32-byte secretbox key (C{crypto_box}, zero nonce); an empty C{PublicKey}
   means the controller could not verify us (re-register the key) and the session goes
   on unencrypted; anything else also goes on unencrypted.

Controller side: verify the C{SignedId} with the peer's pk (from the rendezvous
server's signed C{IdPk}), then send C{PublicKey{our box pk, crypto_box(key)}}.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from p2pnet.codecs.proto import message_pb2 as pb
from p2pnet.codecs.rustdesk_crypto import (
    CryptoError,
    openKeyExchangeReply,
    sealKeyExchangeReply,
    signIdPk,
    verifySignedIdPk,
)

__all__ = ["ControlledHandshake", "HandshakeResult", "controllerReply"]


@dataclass(frozen=True)
class HandshakeResult:
    """How the controlled side continues.

    @ivar key: the secretbox key, or C{None} to continue unencrypted.
    @ivar keyRejected: the controller sent an empty C{PublicKey}: it could not verify
        our signed id, so our key must be registered again.
    """

    key: bytes | None
    keyRejected: bool = False


class ControlledHandshake:
    """The node's side of rustdesk.md §6.6 for one connection.

    @param ephemeral: this connection's Curve25519 key (fresh by default; tests pass
        the rustdesk.md §9.4 one).
    """

    def __init__(self, signingKey: SigningKey, peerId: str,
                 ephemeral: PrivateKey | None = None) -> None:
        self.signingKey = signingKey
        self.peerId = peerId
        self.ephemeral = ephemeral or PrivateKey.generate()

    def signedId(self) -> pb.Message:
        """Step 1: the signed C{IdPk} naming our id and this connection's box key."""
        signed = signIdPk(self.signingKey, self.peerId, bytes(self.ephemeral.public_key))
        return pb.Message(signed_id=pb.SignedId(id=signed))

    def receive(self, message: pb.Message) -> HandshakeResult:
        """Step 2: the controller's first message.

        @raise CryptoError: a C{PublicKey} whose box does not open to a 32-byte key.
        """
        if message.WhichOneof("union") != "public_key":
            return HandshakeResult(None)
        pk = message.public_key
        if not pk.asymmetric_value:
            return HandshakeResult(None, keyRejected=True)
        if len(pk.asymmetric_value) != 32:
            raise CryptoError("PublicKey.asymmetric_value is not 32 bytes")
        key = openKeyExchangeReply(self.ephemeral, bytes(pk.asymmetric_value),
                                   bytes(pk.symmetric_value))
        return HandshakeResult(key)


def controllerReply(peerPk: bytes | None, peerId: str, message: pb.Message,
                    key: bytes | None = None) -> tuple[pb.Message, bytes | None]:
    """The controller's answer to the node's first message (rustdesk.md §6.6, controller steps 2-3).

    @param peerPk: the node's Ed25519 pk as verified from the rendezvous server, or
        C{None} (then an empty Message: continue unencrypted).
    @return: the message to send and the secretbox key to use from then on (C{None}:
        unencrypted).
    """
    if peerPk is None or message.WhichOneof("union") != "signed_id":
        return pb.Message(), None
    try:
        signedId, boxPk = verifySignedIdPk(peerPk, bytes(message.signed_id.id))
    except CryptoError:
        return pb.Message(public_key=pb.PublicKey()), None
    if signedId != peerId or len(boxPk) != 32:
        return pb.Message(), None
    key = key or os.urandom(32)
    ours, sealed = sealKeyExchangeReply(boxPk, key)
    return pb.Message(public_key=pb.PublicKey(asymmetric_value=ours,
                                              symmetric_value=sealed)), key
