"""Small fakes of the shapes kvmmedia's VideoFeed and InputController provide
(p2pnet.node.video / p2pnet.node.input), for the node's unit tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from p2pnet.codecs.proto import message_pb2 as pb


@dataclass(frozen=True)
class Frame:
    data: bytes
    key: bool
    ptsMs: int
    codec: str = "h264"
    width: int = 1280
    height: int = 720


class Subscription:
    def __init__(self, feed: FakeFeed, viewer: Any) -> None:
        self.feed, self.viewer = feed, viewer

    def cancel(self) -> None:
        if self.viewer in self.feed.viewers:
            self.feed.viewers.remove(self.viewer)


class FakeFeed:
    """Records viewers and keyframe requests; C{push} delivers a frame to all."""

    def __init__(self, width: int = 1280, height: int = 720, codec: str = "h264") -> None:
        self.width, self.height, self.codec = width, height, codec
        self.fps = 30
        self.bitrate = 2_000_000
        self.framesOut = 0
        self.viewers: list[Any] = []
        self.keyframeRequests = 0
        self.ready: defer.Deferred[None] = defer.Deferred()

    def startService(self) -> None:
        pass

    def stopService(self) -> None:
        pass

    def subscribe(self, viewer: Any) -> Subscription:
        self.viewers.append(viewer)
        return Subscription(self, viewer)

    def requestKeyframe(self) -> None:
        self.keyframeRequests += 1

    def whenReady(self) -> defer.Deferred[None]:
        return self.ready

    def push(self, frame: Frame) -> None:
        self.framesOut += 1
        for viewer in list(self.viewers):
            viewer.sendFrame(frame)

    def snapshot(self, fmt: str = "png") -> defer.Deferred[bytes]:
        return defer.succeed(b"\x89PNG fake " + fmt.encode())


class ViewerInput:
    def __init__(self, owner: FakeInputs, viewerId: str) -> None:
        self.owner, self.viewerId = owner, viewerId

    def keyEvent(self, msg: pb.KeyEvent) -> None:
        self.owner.events.append((self.viewerId, "key", msg.SerializeToString()))

    def mouseEvent(self, msg: pb.MouseEvent) -> None:
        self.owner.events.append((self.viewerId, "mouse", msg.SerializeToString()))

    def release(self) -> None:
        self.owner.events.append((self.viewerId, "release", b""))


class FakeInputs:
    """Records what viewers and the gateway asked for."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    def attach(self, viewerId: str) -> ViewerInput:
        return ViewerInput(self, viewerId)

    def typeText(self, text: str) -> None:
        self.events.append(("gateway", "type", text))

    def pressKeys(self, names: list[str]) -> None:
        self.events.append(("gateway", "keys", tuple(names)))

    def mouse(self, x: int, y: int, buttons: int = 0, wheel: int = 0) -> None:
        self.events.append(("gateway", "mouse", (x, y, buttons, wheel)))

    def ctrlAltDel(self) -> None:
        self.events.append(("gateway", "cad", None))
