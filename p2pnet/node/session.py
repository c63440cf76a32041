# -*- test-case-name: test.unit.test_node_session -*-
"""One viewer's session on the node (rustdesk.md §6.6-6.8), from handshake to close.

States: C{handshake} (secure streams: SignedId sent, waiting for the controller's key),
C{login} (Hash sent, waiting for a LoginRequest), C{active} (video out, input in),
C{closed}. Every timer runs on the node's reactor clock:

- L{HANDSHAKE_TIMEOUT} (18 s) for the controller's first message;
- L{IDLE_TIMEOUT} (30 s) without any message closes the session;
- a C{TestDelay} every L{DELAY_INTERVAL} (1 s) when none is outstanding.

The session is the feed's viewer: C{sendFrame} wraps each access unit as
C{VideoFrame{h264s|h265s: EncodedVideoFrames{[EncodedVideoFrame{data, key, pts}]}}}
(rustdesk.md §6.8), and C{pendingBytes} lets the feed drop frames for a viewer that reads slowly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from p2pnet.codecs.proto import message_pb2 as pb
from p2pnet.codecs.rustdesk_crypto import CryptoError
from p2pnet.node.handshake import ControlledHandshake
from p2pnet.node.login import TOO_MANY, WRONG_PASSWORD, newChallenge, verifyResponse

if TYPE_CHECKING:
    from p2pnet.protocols.rustdesk_peer import PeerStream

__all__ = ["DELAY_INTERVAL", "HANDSHAKE_TIMEOUT", "IDLE_TIMEOUT", "NodeSession"]

log = Logger()

HANDSHAKE_TIMEOUT = 18.0
IDLE_TIMEOUT = 30.0
DELAY_INTERVAL = 1.0
#: LoginResponse error when the node already serves its most viewers.
TOO_MANY_VIEWERS = "Too many viewers"


class NodeSession:
    """The node's handler of one L{PeerStream}.

    @param node: what the session needs from the node (L{p2pnet.node.service}'s
        C{NodeService}): C{clock}, C{identity}, C{guard}, C{feed}, C{inputs},
        C{admitViewer(session)}, C{viewerLeft(session)}, C{keyRejected()}.
    @param secure: run the rustdesk.md §6.6 handshake (rendezvous paths); C{False} for direct IP
        access (rustdesk.md §6.5).
    @param source: the controller's address (attempt limits, viewer list).
    @param path: how the viewer came (C{direct}, C{lan}, C{relay}, C{ip}).
    """

    def __init__(self, node: Any, secure: bool, source: tuple[str, int], path: str) -> None:
        self.node = node
        self.clock = node.clock
        self.secure = secure
        self.source = source
        self.path = path
        self.state = "new"
        self.viewerId = ""
        self.stream: PeerStream | None = None
        self.encrypted = False
        self.peerName = ""
        self.framesSent = 0
        self.bytesSent = 0
        self._handshake: ControlledHandshake | None = None
        self._challenge = ""
        self._idle: IDelayedCall | None = None
        self._handshakeTimer: IDelayedCall | None = None
        self._delayTimer: IDelayedCall | None = None
        self._delaySent: int | None = None
        self.lastDelay = 0
        self._subscription: Any = None
        self._input: Any = None

    # -- PeerHandler ---------------------------------------------------------------------

    def streamStarted(self, stream: PeerStream) -> None:
        self.stream = stream
        self._idle = self.clock.callLater(IDLE_TIMEOUT, self._idleTimeout)
        if self.secure:
            # rustdesk.md §6.6 step 1: SignedId over this connection's box key.
            self.state = "handshake"
            identity = self.node.identity
            self._handshake = ControlledHandshake(identity.signingKey, identity.peerId)
            stream.send(self._handshake.signedId())
            self._handshakeTimer = self.clock.callLater(HANDSHAKE_TIMEOUT, self._close,
                                                        "handshake timeout")
        else:
            self._sendHash()

    def messageReceived(self, message: pb.Message) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(IDLE_TIMEOUT)
        kind = message.WhichOneof("union")
        if self.state == "handshake":
            self._handshakeMessage(message)
        elif self.state == "login":
            if kind == "login_request":
                self._login(message.login_request)
        elif self.state == "active":
            self._activeMessage(kind, message)

    def streamEnded(self, reason: str) -> None:
        wasActive = self.state == "active"
        self.state = "closed"
        for timer in (self._idle, self._handshakeTimer, self._delayTimer):
            if timer is not None and timer.active():
                timer.cancel()
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        if self._input is not None:
            self._input.release()  # every key and button this viewer held goes up
            self._input = None
        if wasActive:
            self.node.viewerLeft(self)
            log.info("Viewer {viewer} ({path}) left: {reason}", viewer=self.viewerId,
                     path=self.path, reason=reason)

    # -- handshake and login -------------------------------------------------------------

    def _handshakeMessage(self, message: pb.Message) -> None:
        assert self._handshake is not None and self.stream is not None
        if self._handshakeTimer is not None and self._handshakeTimer.active():
            self._handshakeTimer.cancel()
        try:
            result = self._handshake.receive(message)
        except CryptoError:
            self._close("bad PublicKey")
            return
        if result.keyRejected:
            self.node.keyRejected()  # rustdesk.md §6.6 step 2: register the key again
        if result.key is not None:
            self.stream.setKey(result.key)
            self.encrypted = True
        self._sendHash()

    def _sendHash(self) -> None:
        assert self.stream is not None
        self.state = "login"
        self._challenge = newChallenge()
        self.stream.send(pb.Message(hash=pb.Hash(salt=self.node.identity.salt,
                                                 challenge=self._challenge)))

    def _login(self, request: pb.LoginRequest) -> None:
        assert self.stream is not None
        now = self.clock.seconds()
        guard = self.node.guard
        host = self.source[0]
        if not guard.allowed(host, now):
            self._error(TOO_MANY)
            self._close("too many wrong passwords")
            return
        if not verifyResponse(self.node.identity.hash, self._challenge,
                              bytes(request.password)):
            guard.failed(host, now)
            self.node.stats.add("login_failed")
            self._error(WRONG_PASSWORD)
            self._challenge = newChallenge()  # a fresh one for the next try
            self.stream.send(pb.Message(hash=pb.Hash(salt=self.node.identity.salt,
                                                     challenge=self._challenge)))
            return
        guard.succeeded(host)
        self.peerName = request.my_name or request.my_id
        if not self.node.admitViewer(self):
            self._error(TOO_MANY_VIEWERS)
            self._close("too many viewers")
            return
        self.state = "active"
        feed = self.node.feed
        if feed.width:
            self._accepted()
        else:
            feed.whenReady().addCallbacks(lambda _: self._accepted(),
                                          lambda f: self._close("no video"))

    def _accepted(self) -> None:
        if self.state != "active" or self.stream is None:
            return
        feed = self.node.feed
        info = self.node.peerInfo()
        self.stream.send(pb.Message(login_response=pb.LoginResponse(peer_info=info)))
        log.info("Viewer {viewer} ({path}, {enc}) logged in from {host}",
                 viewer=self.viewerId, path=self.path,
                 enc="encrypted" if self.encrypted else "unencrypted", host=self.source[0])
        self._input = self.node.inputs.attach(self.viewerId)
        self._subscription = feed.subscribe(self)
        self._delayTimer = self.clock.callLater(0, self._sendDelay)

    def _error(self, text: str) -> None:
        assert self.stream is not None
        self.stream.send(pb.Message(login_response=pb.LoginResponse(error=text)))

    # -- after login (rustdesk.md §6.8) ----------------------------------------------------------------

    def _activeMessage(self, kind: str | None, message: pb.Message) -> None:
        if kind == "key_event":
            if self._input is not None:
                self._input.keyEvent(message.key_event)
        elif kind == "mouse_event":
            if self._input is not None:
                self._input.mouseEvent(message.mouse_event)
        elif kind == "test_delay":
            self._testDelay(message.test_delay)
        elif kind == "misc":
            if message.misc.WhichOneof("union") in ("refresh_video", "refresh_video_display"):
                self.node.feed.requestKeyframe()

    def _testDelay(self, delay: pb.TestDelay) -> None:
        assert self.stream is not None
        if delay.from_client:
            self.stream.send(pb.Message(test_delay=delay))  # echo the controller's
            return
        if self._delaySent is not None and delay.time == self._delaySent:
            self.lastDelay = max(0, self._nowMs() - delay.time)
            self._delaySent = None
            self._delayTimer = self.clock.callLater(DELAY_INTERVAL, self._sendDelay)

    def _sendDelay(self) -> None:
        if self.state != "active" or self.stream is None or self._delaySent is not None:
            return
        self._delaySent = self._nowMs()
        self.stream.send(pb.Message(test_delay=pb.TestDelay(
            time=self._delaySent, from_client=False, last_delay=self.lastDelay,
            target_bitrate=self.node.feed.bitrate // 1000 if hasattr(
                self.node.feed, "bitrate") else 0)))

    def _nowMs(self) -> int:
        return int(self.clock.seconds() * 1000)

    # -- the feed's viewer -----------------------------------------------------------------

    def sendFrame(self, frame: Any) -> None:
        """One access unit as a VideoFrame message (rustdesk.md §6.8)."""
        if self.state != "active" or self.stream is None:
            return
        frames = pb.EncodedVideoFrames(frames=[pb.EncodedVideoFrame(
            data=frame.data, key=frame.key, pts=frame.ptsMs)])
        video = pb.VideoFrame(display=0)
        getattr(video, frame.codec + "s").CopyFrom(frames)
        self.stream.send(pb.Message(video_frame=video))
        self.framesSent += 1
        self.bytesSent += len(frame.data)

    def pendingBytes(self) -> int:
        """What the transport still holds for this viewer."""
        return self.stream.pendingBytes() if self.stream is not None else 0

    # -- closing ---------------------------------------------------------------------------

    def _idleTimeout(self) -> None:
        self._close("idle for 30 s")

    def _close(self, reason: str) -> None:
        if self.stream is not None:
            self.stream.close(reason)

    def kick(self) -> None:
        """Close this session (operator's C{kvm.viewers} kick)."""
        self._close("kicked")

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for C{kvm.viewers}."""
        return {"id": self.viewerId, "path": self.path, "address": self.source[0],
                "name": self.peerName, "encrypted": self.encrypted,
                "frames": self.framesSent, "bytes": self.bytesSent,
                "delayMs": self.lastDelay}
