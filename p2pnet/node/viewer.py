# -*- test-case-name: test.unit.test_node_session -*-
"""The controlling side: find a node through its rendezvous server, connect, log in.

L{findAndConnect} follows what a RustDesk client does (rustdesk.md §4.5): a
C{PunchHoleRequest} on a kept TCP connection; a C{PunchHoleResponse} with an address
means try that address directly (the node listens there for 18 s), and on failure, or
when the server or node chose the relay (a C{RelayResponse}), a C{RequestRelay} and a
relay leg. L{ViewerSession} then runs the controller's half of rustdesk.md §6.6-6.8 on the stream:
verify the node's C{SignedId} with the pk the server signed, send C{PublicKey}, answer
C{Hash} with the password hash, and, once logged in, count and hand on video frames,
echo the node's C{TestDelay}s and send input.
"""

from __future__ import annotations

import hashlib
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol

from p2pnet.codecs import addrmangle
from p2pnet.codecs.proto import message_pb2 as pb
from p2pnet.codecs.proto.rendezvous_pb2 import (
    NatType,
    PunchHoleRequest,
    PunchHoleResponse,
    RendezvousMessage,
    RequestRelay,
)
from p2pnet.codecs.rustdesk_crypto import CryptoError, verifySignedIdPk
from p2pnet.codecs.rustdesk_frame import encodeFrame
from p2pnet.node.handshake import controllerReply
from p2pnet.node.mediator import NODE_VERSION
from p2pnet.protocols.rustdesk_client import connectStream, splitHostPort
from p2pnet.protocols.rustdesk_peer import PeerStream

__all__ = ["ConnectError", "ViewerSession", "findAndConnect", "loginHash"]

#: Largest frame a viewer accepts (a 4K keyframe fits).
MAX_VIDEO_FRAME = 16 * 1024 * 1024
_FAILURES = {
    PunchHoleResponse.ID_NOT_EXIST: "ID does not exist",
    PunchHoleResponse.OFFLINE: "Remote desktop is offline",
    PunchHoleResponse.LICENSE_MISMATCH: "Key mismatch",
    PunchHoleResponse.LICENSE_OVERUSE: "Key overuse",
}


class ConnectError(Exception):
    """The node could not be reached or refused the login."""


def loginHash(password: str, salt: str, challenge: str) -> bytes:
    """C{SHA-256(SHA-256(password || salt) || challenge)} (rustdesk.md §6.7 step 2)."""
    h1 = hashlib.sha256(password.encode() + salt.encode()).digest()
    return hashlib.sha256(h1 + challenge.encode()).digest()


class ViewerSession:
    """The controller's handler of one L{PeerStream}.

    @param peerPk: the node's Ed25519 pk verified from the server (C{None}: the session
        stays unencrypted, as RustDesk's when it cannot verify the peer).
    @param onFrame: called with each C{EncodedVideoFrame} and its codec name.
    @ivar loggedIn: fires with the C{PeerInfo}, or fails with L{ConnectError}.
    @ivar closed: fires with the reason when the stream ends.
    """

    def __init__(self, clock: Any, peerId: str, password: str, peerPk: bytes | None,
                 onFrame: Callable[[pb.EncodedVideoFrame, str], None] | None = None,
                 name: str = "p2pnet connect") -> None:
        self.clock = clock
        self.peerId = peerId
        self.password = password
        self.peerPk = peerPk
        self.onFrame = onFrame
        self.name = name
        self.stream: PeerStream | None = None
        self.state = "handshake" if peerPk is not None else "login"
        self.encrypted = False
        self.frames = 0
        self.keyframes = 0
        self.videoBytes = 0
        self.delaysEchoed = 0
        self.loggedIn: Deferred[pb.PeerInfo] = Deferred()
        self.closed: Deferred[str] = Deferred()
        self.error = ""
        self.peerInfo: pb.PeerInfo | None = None

    def streamStarted(self, stream: PeerStream) -> None:
        self.stream = stream
        if self.peerPk is None:
            stream.send(pb.Message())  # rustdesk.md §6.6 controller step 2: no pk, no key

    def messageReceived(self, message: pb.Message) -> None:
        assert self.stream is not None
        kind = message.WhichOneof("union")
        if self.state == "handshake":
            reply, key = controllerReply(self.peerPk, self.peerId, message)
            self.stream.send(reply)
            if key is not None:
                self.stream.setKey(key)
                self.encrypted = True
            self.state = "login"
            if kind == "signed_id":
                return
        if kind == "hash":
            self._answerHash(message.hash)
        elif kind == "login_response":
            self._loginResponse(message.login_response)
        elif kind == "video_frame":
            self._video(message.video_frame)
        elif kind == "test_delay" and not message.test_delay.from_client:
            self.delaysEchoed += 1
            self.stream.send(message)  # rustdesk.md §6.8: echo the node's delay probes

    def _answerHash(self, h: pb.Hash) -> None:
        assert self.stream is not None
        if self.loggedIn.called:
            return  # after a refusal the node asks again; a person would retype
        request = pb.LoginRequest(
            username=self.peerId, password=loginHash(self.password, h.salt, h.challenge),
            my_id="p2pnet", my_name=self.name, my_platform="Linux", version=NODE_VERSION)
        request.option.supported_decoding.ability_h264 = 1
        request.option.supported_decoding.ability_h265 = 1
        self.stream.send(pb.Message(login_request=request))

    def _loginResponse(self, response: pb.LoginResponse) -> None:
        if self.loggedIn.called:
            return
        if response.WhichOneof("union") == "peer_info":
            self.state = "active"
            self.peerInfo = response.peer_info
            self.loggedIn.callback(response.peer_info)
        else:
            self.error = response.error
            self.loggedIn.errback(ConnectError(response.error or "login refused"))
            self.close()

    def _video(self, video: pb.VideoFrame) -> None:
        codec = video.WhichOneof("union") or ""
        for frame in getattr(video, codec).frames if codec else ():
            self.frames += 1
            self.keyframes += frame.key
            self.videoBytes += len(frame.data)
            if self.onFrame is not None:
                self.onFrame(frame, codec[:-1])

    def streamEnded(self, reason: str) -> None:
        if not self.loggedIn.called:
            self.loggedIn.errback(ConnectError(f"connection closed: {reason}"))
        if not self.closed.called:
            self.closed.callback(reason)

    def send(self, message: pb.Message) -> None:
        """Send input or control messages."""
        if self.stream is not None:
            self.stream.send(message)

    def close(self) -> None:
        """End the session."""
        if self.stream is not None:
            self.stream.close("viewer closed")


def _endpoint(reactor: Any, host: str, port: int, bindAddress: str | None = None) -> Any:
    kind = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
    return kind(reactor, host, port, timeout=5,
                bindAddress=(bindAddress, 0) if bindAddress else None)


def _verifiedPk(serverPk: bytes | None, peerId: str, signed: bytes) -> bytes | None:
    if serverPk is None or not signed:
        return None
    try:
        signedId, pk = verifySignedIdPk(serverPk, signed)
    except CryptoError:
        return None
    return pk if signedId == peerId and len(pk) == 32 else None


@defer.inlineCallbacks
def findAndConnect(reactor: Any, server: tuple[str, int], peerId: str, password: str, *,
                   serverPk: bytes | None = None, licenceKey: str = "",
                   forceRelay: bool = False, relayPort: int | None = None,
                   bindAddress: str | None = None, directAttempts: int = 10,
                   onFrame: Callable[[pb.EncodedVideoFrame, str], None] | None = None
                   ) -> Any:
    """Reach C{peerId} through the server at C{server}; fires with C{(path, session)}
    once logged in (C{path}: C{direct}, C{lan} or C{relay}).

    @raise ConnectError: the server named a failure, nothing answered, or the login
        was refused.
    """
    host, port = server
    rendezvous = yield connectStream(reactor, host, port, bindAddress)
    try:
        rendezvous.send(RendezvousMessage(punch_hole_request=PunchHoleRequest(
            id=peerId, licence_key=licenceKey, version=NODE_VERSION,
            nat_type=NatType.SYMMETRIC if forceRelay else NatType.ASYMMETRIC,
            force_relay=forceRelay)))
        reply = yield rendezvous.receive().addTimeout(12, reactor)
    finally:
        rendezvous.transport.loseConnection()
    kind = reply.WhichOneof("union")
    relay, uuid, path = "", "", "relay"
    if kind == "punch_hole_response":
        phr = reply.punch_hole_response
        peerPk = _verifiedPk(serverPk, peerId, bytes(phr.pk))
        relay = phr.relay_server
        if not phr.socket_addr:
            raise ConnectError(phr.other_failure or _FAILURES.get(phr.failure, "failed"))
        if not forceRelay:
            target = addrmangle.decode(bytes(phr.socket_addr))
            path = "lan" if phr.is_local else "direct"
            session = yield _direct(reactor, target, peerId, password, peerPk, onFrame,
                                    directAttempts)
            if session is not None:
                return path, session
            path = "relay"
    elif kind == "relay_response":
        rr = reply.relay_response
        peerPk = _verifiedPk(serverPk, peerId, bytes(rr.pk))
        relay, uuid = rr.relay_server, rr.uuid
    else:
        raise ConnectError(f"unexpected answer {kind}")
    if not uuid:
        uuid = str(uuidlib.uuid4())
        stream = yield connectStream(reactor, host, port, bindAddress)
        stream.send(RendezvousMessage(request_relay=RequestRelay(
            id=peerId, uuid=uuid, relay_server=relay, secure=True,
            licence_key=licenceKey)))
        answer = yield stream.receive().addTimeout(12, reactor)
        stream.transport.loseConnection()
        if answer.WhichOneof("union") != "relay_response":
            raise ConnectError("the server did not relay")
        relay = answer.relay_response.relay_server or relay
    relayHost, relayDefault = (host, relayPort or port + 1)
    if relay:
        relayHost, relayDefault = splitHostPort(relay, relayPort or 21117)
    session = ViewerSession(reactor, peerId, password, peerPk, onFrame)
    preamble = encodeFrame(RendezvousMessage(request_relay=RequestRelay(
        id=peerId, uuid=uuid, licence_key=licenceKey)).SerializeToString())
    stream = PeerStream(session, MAX_VIDEO_FRAME, preamble)
    yield connectProtocol(_endpoint(reactor, relayHost, relayDefault), stream)
    yield session.loggedIn.addTimeout(30, reactor)
    return path, session


@defer.inlineCallbacks
def _direct(reactor: Any, target: tuple[str, int], peerId: str, password: str,
            peerPk: bytes | None, onFrame: Any, attempts: int) -> Any:
    """Connect to the punched address, retrying while the node starts listening."""
    from twisted.internet.task import deferLater

    for attempt in range(attempts):
        session = ViewerSession(reactor, peerId, password, peerPk, onFrame)
        stream = PeerStream(session, MAX_VIDEO_FRAME)
        try:
            yield connectProtocol(_endpoint(reactor, *target), stream)
        except Exception:
            yield deferLater(reactor, 0.1 * (attempt + 1), lambda: None)
            continue
        yield session.loggedIn.addTimeout(30, reactor)
        return session
    return None


@defer.inlineCallbacks
def connectDirect(reactor: Any, target: tuple[str, int], peerId: str, password: str,
                  onFrame: Any = None) -> Any:
    """Direct IP access (rustdesk.md §6.5): no rendezvous, no handshake; fires with the session."""
    session = ViewerSession(reactor, peerId, password, None, onFrame)
    stream = PeerStream(session, MAX_VIDEO_FRAME)
    yield connectProtocol(_endpoint(reactor, *target), stream)
    yield session.loggedIn.addTimeout(30, reactor)
    return session
