"""What C{p2pnet connect} sends for --type, --key and --click (L{p2pnet.commands.connect})."""

from __future__ import annotations

import argparse

from twisted.trial.unittest import TestCase

from p2pnet.codecs.proto import message_pb2 as pb
from p2pnet.commands.connect import clickEvents, keyEvents, parseClick, textEvents


class ConnectInputTests(TestCase):
    def test_text(self) -> None:
        events = textEvents("Hi\n")
        self.assertEqual([e.chr for e in events[:2]], [ord("H"), ord("i")])
        self.assertTrue(all(e.press for e in events))
        self.assertEqual(events[2].control_key, pb.Return)

    def test_ctrlAltDelete(self) -> None:
        (event,) = keyEvents("ctrl+alt+delete")
        self.assertEqual(event.control_key, pb.CtrlAltDel)

    def test_chord(self) -> None:
        (event,) = keyEvents("ctrl+shift+t")
        self.assertEqual(list(event.modifiers), [pb.Control, pb.Shift])
        self.assertEqual(event.chr, ord("t"))
        (f5,) = keyEvents("F5")
        self.assertEqual(f5.control_key, pb.F5)

    def test_badChord(self) -> None:
        self.assertRaises(ValueError, keyEvents, "")
        self.assertRaises(ValueError, keyEvents, "hyper+x")
        self.assertRaises(ValueError, keyEvents, "ctrl+nosuchkey")

    def test_click(self) -> None:
        self.assertEqual(parseClick("10,20"), (10, 20))
        self.assertRaises(argparse.ArgumentTypeError, parseClick, "10")
        self.assertEqual([m.mask for m in clickEvents(1, 2)], [0, 9, 10])
