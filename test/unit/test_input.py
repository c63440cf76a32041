"""Tests for L{p2pnet.node.input}: RustDesk key and mouse events to exact HID reports."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.proto import message_pb2 as pb
from p2pnet.node.hid import MemoryHidSink
from p2pnet.node.input import (
    CONTROL_KEY_USAGES,
    PLATFORM,
    SCANCODE_USAGES,
    X11_KEYCODE_USAGES,
    InputController,
    keyboardReport,
    mouseReport,
)

CK = pb.ControlKey
UP = bytes(8)


def kb(mods: int, *keys: int) -> bytes:
    return bytes([mods, 0, *keys, *[0] * (6 - len(keys))])


def key(**fields: object) -> pb.KeyEvent:
    modifiers = fields.pop("modifiers", [])
    msg = pb.KeyEvent(**fields)
    msg.modifiers.extend(modifiers)
    return msg


def mouse(mask: int, x: int = 0, y: int = 0) -> pb.MouseEvent:
    return pb.MouseEvent(mask=mask, x=x, y=y)


class Base(SynchronousTestCase):
    platform = "Linux"

    def setUp(self) -> None:
        self.keyboard = MemoryHidSink()
        self.mouseSink = MemoryHidSink()
        self.size = (1920, 1080)
        self.input = InputController(
            self.keyboard, self.mouseSink, lambda: self.size, platform=self.platform
        )

    def reports(self) -> list[bytes]:
        out = list(self.keyboard.reports)
        self.keyboard.reports.clear()
        return out


class ReportTests(SynchronousTestCase):
    def test_keyboardReport(self) -> None:
        self.assertEqual(keyboardReport(0x22, [4, 5]), kb(0x22, 4, 5))
        self.assertEqual(keyboardReport(0, range(4, 11)), kb(0, *[1] * 6))  # ErrorRollOver

    def test_mouseReport(self) -> None:
        self.assertEqual(
            mouseReport(1, 0x1234, 0x7FFF, -1), bytes([1, 0x34, 0x12, 0xFF, 0x7F, 0xFF])
        )
        self.assertEqual(mouseReport(0, -5, 40000, 300), bytes([0, 0, 0, 0xFF, 0x7F, 127]))

    def test_tablesComplete(self) -> None:
        # Every ControlKey but the ones with no keyboard usage maps somewhere.
        missing = {pb.ControlKey.Name(v) for v in pb.ControlKey.values()} - {
            pb.ControlKey.Name(k) for k in CONTROL_KEY_USAGES
        }
        self.assertEqual(
            missing,
            {"Unknown", "Junja", "Final", "Kanji", "Sleep", "CtrlAltDel", "LockScreen"},
        )
        # The 101-key block of set 1: 0x01-0x53 all mapped, and the extended cursor keys.
        self.assertEqual([c for c in range(1, 0x54) if c not in SCANCODE_USAGES], [])
        for code, usage in [(0xE048, 0x52), (0xE050, 0x51), (0xE04B, 0x50), (0xE04D, 0x4F)]:
            self.assertEqual(SCANCODE_USAGES[code], usage)


class TypingTests(Base):
    def test_typeText(self) -> None:
        self.assertEqual(self.input.typeText("Hi!\n"), 0)
        self.assertEqual(
            self.reports(),
            [kb(2, 0x0B), UP, kb(0, 0x0C), UP, kb(2, 0x1E), UP, kb(0, 0x28), UP],
        )

    def test_repeatedLetter(self) -> None:
        self.input.typeText("ll")
        self.assertEqual(self.reports(), [kb(0, 0x0F), UP, kb(0, 0x0F), UP])

    def test_unmapped(self) -> None:
        self.assertEqual(self.input.typeText("é€a"), 2)
        self.assertEqual(self.reports(), [kb(0, 0x04), UP])

    def test_capsLock(self) -> None:
        viewer = self.input.attach("v1")
        # The controller's CapsLock is on: the node toggles the host's first.
        viewer.keyEvent(key(chr=ord("a"), press=True, modifiers=[CK.CapsLock]))
        self.assertEqual(self.reports(), [kb(0, 0x39), UP, kb(2, 0x04), UP])
        self.assertTrue(self.input.capsLock)
        # With CapsLock on, typed text still comes out as written.
        self.input.typeText("aB")
        self.assertEqual(self.reports(), [kb(2, 0x04), UP, kb(0, 0x05), UP])
        # The flag gone from the modifiers: toggled back; CapsLock key events alone are
        # not forwarded (they would toggle twice).
        viewer.keyEvent(key(control_key=CK.CapsLock, press=True))
        self.assertEqual(self.reports(), [kb(0, 0x39), UP])
        self.assertFalse(self.input.capsLock)

    def test_pressKeys(self) -> None:
        self.input.pressKeys(["ctrl", "alt", "delete"])
        self.input.ctrlAltDel()
        self.input.pressKeys(["Shift", "F5"])
        self.assertEqual(self.reports(), [kb(5, 0x4C), UP, kb(5, 0x4C), UP, kb(2, 0x3E), UP])
        self.assertRaises(ValueError, self.input.pressKeys, ["ctrl", "nosuchkey"])
        self.assertEqual(self.reports(), [])


class LegacyModeTests(Base):
    def setUp(self) -> None:
        super().setUp()
        self.viewer = self.input.attach("v1")

    def test_chrDownUp(self) -> None:
        self.viewer.keyEvent(key(chr=ord("a"), down=True))
        self.viewer.keyEvent(key(chr=ord("a"), down=False))
        self.viewer.keyEvent(key(chr=ord("?"), down=True))
        self.viewer.keyEvent(key(chr=ord("?")))
        self.assertEqual(self.reports(), [kb(0, 4), UP, kb(2, 0x38), UP])

    def test_modifiersWithChr(self) -> None:
        self.viewer.keyEvent(key(chr=ord("c"), press=True, modifiers=[CK.Control]))
        # A control character with Control: its letter.
        self.viewer.keyEvent(key(chr=0x16, press=True, modifiers=[CK.Control, CK.Shift]))
        self.assertEqual(self.reports(), [kb(1, 6), UP, kb(1, 0x19), UP])

    def test_controlKeys(self) -> None:
        self.viewer.keyEvent(key(control_key=CK.Shift, down=True))
        self.viewer.keyEvent(key(control_key=CK.Home, press=True, modifiers=[CK.Shift]))
        self.viewer.keyEvent(key(control_key=CK.Shift, down=False))
        self.viewer.keyEvent(key(control_key=CK.NumpadEnter, press=True))
        self.viewer.keyEvent(key(control_key=CK.RAlt, press=True))
        self.assertEqual(
            self.reports(),
            [kb(2), kb(2, 0x4A), kb(2), UP, kb(0, 0x58), UP, kb(0x40), UP],
        )

    def test_ctrlAltDelAndLock(self) -> None:
        self.viewer.keyEvent(key(control_key=CK.CtrlAltDel, press=True))
        self.viewer.keyEvent(key(control_key=CK.LockScreen, press=True))
        self.assertEqual(self.reports(), [kb(5, 0x4C), UP, kb(8, 0x0F), UP])

    def test_unicodeAndSeq(self) -> None:
        self.viewer.keyEvent(key(unicode=ord("Z"), press=True))
        self.viewer.keyEvent(key(seq="a1", press=True))
        self.viewer.keyEvent(key(unicode=0x1F600, press=True))
        self.viewer.keyEvent(key(win2win_hotkey=5, press=True))
        self.assertEqual(self.reports(), [kb(2, 0x1D), UP, kb(0, 4), UP, kb(0, 0x1E), UP])
        self.assertEqual(self.viewer.unmapped, 2)


class WindowsMapModeTests(Base):
    """Map mode with the Windows code set: set-1 scan codes, extended keys C{0xE0xx}."""

    platform = "Windows"

    def setUp(self) -> None:
        super().setUp()
        self.viewer = self.input.attach("v1")

    def send(self, code: int, down: bool, **fields: object) -> None:
        self.viewer.keyEvent(key(chr=code, down=down, mode=pb.KeyboardMode.Map, **fields))

    def test_scanCodes(self) -> None:
        self.send(0x2A, True)  # left shift
        self.send(0x1E, True)  # A
        self.send(0x1E, False)
        self.send(0x2A, False)
        self.send(0xE01D, True)  # right ctrl
        self.send(0xE048, True)  # up arrow
        self.send(0xE048, False)
        self.send(0xE01D, False)
        self.assertEqual(
            self.reports(), [kb(2), kb(2, 4), kb(2), UP, kb(0x10), kb(0x10, 0x52), kb(0x10), UP]
        )

    def test_mapIgnoresModifierListButCapsLock(self) -> None:
        # In Map mode the modifier keys arrive as their own scan codes.
        self.send(0x10, True, modifiers=[CK.Shift])
        self.send(0x10, False)
        self.send(0x3A, True, modifiers=[CK.CapsLock])  # CapsLock itself: synced by flag
        self.send(0x3A, False, modifiers=[CK.CapsLock])
        self.assertEqual(self.reports(), [kb(0, 0x14), UP, kb(0, 0x39), UP])

    def test_unknownScanCode(self) -> None:
        self.send(0x7F, True)
        self.assertEqual(self.reports(), [])
        self.assertEqual(self.viewer.unmapped, 1)

    def test_rollOver(self) -> None:
        for code in range(0x10, 0x17):
            self.send(code, True)
        self.assertEqual(self.reports()[-1], kb(0, *[1] * 6))
        self.send(0x10, False)
        self.assertEqual(self.reports(), [kb(0, 0x1A, 0x08, 0x15, 0x17, 0x1C, 0x18)])


class LinuxMapModeTests(Base):
    """Map mode with the Linux code set (the default): X11 keycodes, evdev + 8."""

    def test_default(self) -> None:
        self.assertEqual((PLATFORM, self.input.platform), ("Linux", "Linux"))
        self.assertRaises(ValueError, InputController, None, None, lambda: (0, 0), "BeOS")

    def test_keycodes(self) -> None:
        viewer = self.input.attach("v1")
        # Shift_L 50, a 38, Up 111, Control_R 105, F13 191, Super_L 133.
        for code in (50, 38, 111):
            viewer.keyEvent(key(chr=code, down=True, mode=pb.KeyboardMode.Map))
        for code in (38, 111, 50):
            viewer.keyEvent(key(chr=code, down=False, mode=pb.KeyboardMode.Map))
        for code in (105, 191, 133):
            viewer.keyEvent(key(chr=code, press=True, mode=pb.KeyboardMode.Map))
        self.assertEqual(
            self.reports(),
            [kb(2), kb(2, 4), kb(2, 4, 0x52), kb(2, 0x52), kb(2), UP, kb(0x10), UP]
            + [kb(0, 0x68), UP, kb(8), UP],
        )

    def test_sameKeysAsWindows(self) -> None:
        # The two code sets name the same keys: evdev 1-83 are the set-1 scan codes.
        for code in range(1, 84):
            self.assertEqual(X11_KEYCODE_USAGES[code + 8], SCANCODE_USAGES[code])
        # Every Windows key has a Linux code; Linux adds the Japanese and Korean keys
        # (LANG1-5, keypad JP comma).
        linuxOnly = set(X11_KEYCODE_USAGES.values()) - set(SCANCODE_USAGES.values())
        self.assertEqual(linuxOnly, {0x8C, 0x90, 0x91, 0x92, 0x93, 0x94})
        self.assertEqual(set(SCANCODE_USAGES.values()) - set(X11_KEYCODE_USAGES.values()), set())


class SharedKeyboardTests(Base):
    def test_releaseOnlyWhatNobodyElseHolds(self) -> None:
        v1, v2 = self.input.attach("v1"), self.input.attach("v2")
        self.assertIs(self.input.attach("v1"), v1)
        self.assertEqual(self.input.viewers, ["v1", "v2"])
        v1.keyEvent(key(chr=ord("a"), down=True, modifiers=[CK.Control]))
        v2.keyEvent(key(chr=ord("b"), down=True))
        v2.keyEvent(key(chr=ord("a"), down=True))
        self.assertEqual(self.reports(), [kb(1, 4), kb(1, 4, 5)])
        v1.release()
        self.assertEqual(self.reports(), [kb(0, 4, 5)])
        self.assertEqual(self.input.viewers, ["v2"])
        v2.release()
        self.assertEqual(self.reports(), [UP])

    def test_operatorTapKeepsViewerKeys(self) -> None:
        v1 = self.input.attach("v1")
        v1.keyEvent(key(control_key=CK.Shift, down=True))
        self.input.typeText("x")
        self.assertEqual(self.reports(), [kb(2), kb(2, 0x1B), kb(2)])


class MouseTests(Base):
    def test_scaling(self) -> None:
        viewer = self.input.attach("v1")
        viewer.mouseEvent(mouse(0, 0, 0))
        viewer.mouseEvent(mouse(0, 1919, 1079))
        viewer.mouseEvent(mouse(0, 960, 540))
        viewer.mouseEvent(mouse(0, 5000, -20))  # clamped to the display
        self.assertEqual(
            list(self.mouseSink.reports),
            [
                mouseReport(0, 0, 0),
                mouseReport(0, 32767, 32767),
                mouseReport(0, 16392, 16399),
                mouseReport(0, 32767, 0),
            ],
        )

    def test_buttonsAndWheel(self) -> None:
        viewer = self.input.attach("v1")
        viewer.mouseEvent(mouse((1 << 3) | 1, 1919, 0))  # left down
        viewer.mouseEvent(mouse((2 << 3) | 1, 1919, 0))  # right down
        viewer.mouseEvent(mouse((1 << 3) | 2, 1919, 0))  # left up
        viewer.mouseEvent(mouse(3, 0, -3))  # wheel down three
        viewer.mouseEvent(mouse(3, 0, 2))
        viewer.mouseEvent(mouse(4, 1, 1))  # trackpad: not a HID mouse
        self.assertEqual(
            list(self.mouseSink.reports),
            [
                mouseReport(1, 32767, 0),
                mouseReport(3, 32767, 0),
                mouseReport(2, 32767, 0),
                mouseReport(2, 32767, 0, -1),
                mouseReport(2, 32767, 0, 1),
            ],
        )
        self.assertEqual(viewer.unmapped, 1)
        viewer.release()  # the right button is let go
        self.assertEqual(self.mouseSink.reports[-1], mouseReport(0, 32767, 0))

    def test_relativeMove(self) -> None:
        viewer = self.input.attach("v1")
        viewer.mouseEvent(mouse(0, 100, 100))
        viewer.mouseEvent(mouse(5, -200, 10))
        self.assertEqual(self.input.pointer, (0, 110))

    def test_operatorClick(self) -> None:
        self.input.mouse(1919, 1079, buttons=1)
        self.input.mouse(1919, 1079)
        self.input.mouse(0, 0, wheel=-1)
        self.assertEqual(
            list(self.mouseSink.reports),
            [mouseReport(1, 32767, 32767), mouseReport(0, 32767, 32767), mouseReport(0, 0, 0, -1)],
        )

    def test_unknownDisplaySize(self) -> None:
        self.size = (0, 0)
        self.input.mouse(10, 10)
        self.input.attach("v").mouseEvent(mouse(0, 1, 1))
        self.assertEqual(list(self.mouseSink.reports), [])
        self.assertEqual(self.input.mouseDropped, 2)


class RandomEventTests(SynchronousTestCase):
    """Whatever a viewer sends: no exception, well-formed reports, nothing held after."""

    @settings(max_examples=150)
    @given(
        st.lists(
            st.tuples(
                st.integers(0, 2),
                st.one_of(
                    st.builds(
                        lambda kind, value, down, press, mode, mods: (
                            "key",
                            kind,
                            value,
                            down,
                            press,
                            mode,
                            mods,
                        ),
                        st.sampled_from(["control_key", "chr", "unicode", "seq", "win2win_hotkey"]),
                        st.integers(0, 2**32 - 1),
                        st.booleans(),
                        st.booleans(),
                        st.integers(0, 5),
                        st.lists(st.integers(0, 120), max_size=4),
                    ),
                    st.builds(
                        lambda mask, x, y: ("mouse", mask, x, y),
                        st.integers(-(2**31), 2**31 - 1),
                        st.integers(-(2**31), 2**31 - 1),
                        st.integers(-(2**31), 2**31 - 1),
                    ),
                ),
            ),
            max_size=40,
        ),
        st.sampled_from(["Linux", "Windows"]),
    )
    def test_randomEvents(self, events: list, platform: str) -> None:
        keyboard, mouseSink = MemoryHidSink(), MemoryHidSink()
        controller = InputController(keyboard, mouseSink, lambda: (1024, 768), platform)
        viewers = [controller.attach(i) for i in range(3)]
        for who, event in events:
            if event[0] == "key":
                _, kind, value, down, press, mode, mods = event
                msg = pb.KeyEvent(down=down, press=press, mode=mode)
                msg.modifiers.extend(mods)
                if kind == "seq":
                    msg.seq = chr(value % 0x80) * (value % 5)
                else:
                    setattr(msg, kind, value % 128 if kind == "control_key" else value)
                viewers[who].keyEvent(msg)
            else:
                _, mask, x, y = event
                viewers[who].mouseEvent(pb.MouseEvent(mask=mask, x=x, y=y))
        self.assertTrue(all(len(r) == 8 and r[1] == 0 for r in keyboard.reports))
        self.assertTrue(all(len(r) == 6 for r in mouseSink.reports))
        for v in viewers:
            v.release()
        if keyboard.reports:
            self.assertEqual(keyboard.reports[-1], UP)
        if mouseSink.reports:
            self.assertEqual(mouseSink.reports[-1][0], 0)
