"""The peer-session part of message.proto against rustdesk.md §9.6 (and §9.4's first
encrypted frame's plaintext)."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from p2pnet.codecs.proto import message_pb2 as pb


def hexOf(message: pb.Message) -> str:
    return message.SerializeToString().hex()


class MessageVectorTests(TestCase):
    def test_mouseMove(self) -> None:
        """x and y are ZigZag sint32: 100 -> 200, -1 -> 1."""
        self.assertEqual(hexOf(pb.Message(mouse_event=pb.MouseEvent(mask=0, x=100, y=-1))),
                         "520510c8011801")

    def test_leftButtonDown(self) -> None:
        self.assertEqual(hexOf(pb.Message(mouse_event=pb.MouseEvent(mask=(1 << 3) | 1))),
                         "52020809")

    def test_keyEventReturn(self) -> None:
        self.assertEqual(hexOf(pb.Message(key_event=pb.KeyEvent(
            down=True, control_key=pb.Return))), "7a040801181b")

    def test_testDelay(self) -> None:
        self.assertEqual(hexOf(pb.Message(test_delay=pb.TestDelay(time=1))), "2a020801")

    def test_emptyMessage(self) -> None:
        self.assertEqual(hexOf(pb.Message()), "")

    def test_videoFrame(self) -> None:
        frame = pb.EncodedVideoFrame(data=bytes.fromhex("00000001"), key=True, pts=0)
        message = pb.Message(video_frame=pb.VideoFrame(
            h264s=pb.EncodedVideoFrames(frames=[frame])))
        self.assertEqual(hexOf(message), "320c520a0a080a04000000011001")

    def test_hash(self) -> None:
        self.assertEqual(hexOf(pb.Message(hash=pb.Hash(salt="s", challenge="c"))),
                         "4a060a0173120163")

    def test_unknownFieldsIgnored(self) -> None:
        """A full client's fields we left out (here Message field 99) are skipped."""
        data = bytes.fromhex("2a020801") + bytes.fromhex("9a0600")
        self.assertEqual(pb.Message.FromString(data).test_delay.time, 1)
