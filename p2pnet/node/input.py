# -*- test-case-name: test.unit.test_input -*-
"""RustDesk keyboard and mouse events to USB HID reports (rustdesk.md §10.2–10.3).

The node advertises the platform C{"Linux"} (L{PLATFORM}), so a RustDesk controller in
Map mode sends X11 keycodes (evdev + 8) in C{KeyEvent.chr}; L{X11_KEYCODE_USAGES} maps
them to USB HID usages. A controller built for a node that advertises C{"Windows"} gets
Windows set-1 scan codes (extended keys as C{0xE0xx}, L{SCANCODE_USAGES}). Legacy mode sends
L{ControlKey}s for special keys and characters in C{chr} / C{unicode} / C{seq}, typed with
a US layout (L{CHAR_USAGES}). docs/kvm-node.md "Input" has the tables and the rules.

Every viewer gets a L{ViewerInput}; all share one keyboard and one mouse. The keyboard
report is the union of what every viewer holds (the first six keys; more is the boot
protocol's ErrorRollOver), sent only when it changes, so one viewer's
L{ViewerInput.release} lets go of what it alone holds and leaves the others' keys down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from p2pnet.codecs.proto import message_pb2 as pb
from p2pnet.node.hid import IHidSink

__all__ = [
    "CHAR_USAGES",
    "CONTROL_KEY_USAGES",
    "KEY_NAMES",
    "MAP_CODE_USAGES",
    "PLATFORM",
    "SCANCODE_USAGES",
    "X11_KEYCODE_USAGES",
    "InputController",
    "ViewerInput",
    "keyboardReport",
    "mouseReport",
]

#: The platform the node advertises in PeerInfo by default: it fixes Map mode's code set
#: (L{MAP_CODE_USAGES}).
PLATFORM = "Linux"

# USB HID Usage Tables, Keyboard/Keypad page (0x07).
LCTRL, LSHIFT, LALT, LGUI, RCTRL, RSHIFT, RALT, RGUI = range(0xE0, 0xE8)
CAPS_LOCK = 0x39
DELETE = 0x4C
ERROR_ROLL_OVER = 0x01

_LETTERS = {chr(ord("a") + i): 0x04 + i for i in range(26)}
_DIGITS = {str((i + 1) % 10): 0x1E + i for i in range(10)}
_UNSHIFTED = {
    "\n": 0x28, "\r": 0x28, "\x1b": 0x29, "\b": 0x2A, "\t": 0x2B, " ": 0x2C,
    "-": 0x2D, "=": 0x2E, "[": 0x2F, "]": 0x30, "\\": 0x31, ";": 0x33, "'": 0x34,
    "`": 0x35, ",": 0x36, ".": 0x37, "/": 0x38, "\x7f": DELETE,
}  # fmt: skip
_SHIFTED = {
    "!": "1", "@": "2", "#": "3", "$": "4", "%": "5", "^": "6", "&": "7", "*": "8",
    "(": "9", ")": "0", "_": "-", "+": "=", "{": "[", "}": "]", "|": "\\", ":": ";",
    '"': "'", "~": "`", "<": ",", ">": ".", "?": "/",
}  # fmt: skip

#: Character -> (usage, shifted) on a US layout; letters are lower case unshifted.
CHAR_USAGES: dict[str, tuple[int, bool]] = {
    **{c: (u, False) for c, u in _LETTERS.items()},
    **{c.upper(): (u, True) for c, u in _LETTERS.items()},
    **{c: (u, False) for c, u in _DIGITS.items()},
    **{c: (u, False) for c, u in _UNSHIFTED.items()},
}
for _c, _base in _SHIFTED.items():
    CHAR_USAGES[_c] = ((_DIGITS | _UNSHIFTED)[_base], True)

CK = pb.ControlKey
#: ControlKey -> HID usage (rustdesk.md §10.3 lists the enum).
CONTROL_KEY_USAGES: dict[int, int] = {
    CK.Alt: LALT, CK.Backspace: 0x2A, CK.CapsLock: CAPS_LOCK, CK.Control: LCTRL,
    CK.Delete: DELETE, CK.DownArrow: 0x51, CK.End: 0x4D, CK.Escape: 0x29,
    CK.F1: 0x3A, CK.F2: 0x3B, CK.F3: 0x3C, CK.F4: 0x3D, CK.F5: 0x3E, CK.F6: 0x3F,
    CK.F7: 0x40, CK.F8: 0x41, CK.F9: 0x42, CK.F10: 0x43, CK.F11: 0x44, CK.F12: 0x45,
    CK.Home: 0x4A, CK.LeftArrow: 0x50, CK.Meta: LGUI, CK.Option: LALT, CK.PageDown: 0x4E,
    CK.PageUp: 0x4B, CK.Return: 0x28, CK.RightArrow: 0x4F, CK.Shift: LSHIFT,
    CK.Space: 0x2C, CK.Tab: 0x2B, CK.UpArrow: 0x52,
    CK.Numpad0: 0x62, CK.Numpad1: 0x59, CK.Numpad2: 0x5A, CK.Numpad3: 0x5B,
    CK.Numpad4: 0x5C, CK.Numpad5: 0x5D, CK.Numpad6: 0x5E, CK.Numpad7: 0x5F,
    CK.Numpad8: 0x60, CK.Numpad9: 0x61, CK.Cancel: 0x9B, CK.Clear: 0x9C, CK.Menu: 0x76,
    CK.Pause: 0x48, CK.Kana: 0x88, CK.Hangul: 0x90, CK.Hanja: 0x91, CK.Convert: 0x8A,
    CK.Select: 0x77, CK.Print: 0x46, CK.Execute: 0x74, CK.Snapshot: 0x46, CK.Insert: 0x49,
    CK.Help: 0x75, CK.Separator: 0x9F, CK.Scroll: 0x47, CK.NumLock: 0x53, CK.RWin: RGUI,
    CK.Apps: 0x65, CK.Multiply: 0x55, CK.Add: 0x57, CK.Subtract: 0x56, CK.Decimal: 0x63,
    CK.Divide: 0x54, CK.Equals: 0x67, CK.NumpadEnter: 0x58, CK.RShift: RSHIFT,
    CK.RControl: RCTRL, CK.RAlt: RALT, CK.VolumeMute: 0x7F, CK.VolumeUp: 0x80,
    CK.VolumeDown: 0x81, CK.Power: 0x66,
}  # fmt: skip

_SCAN_ROWS = [
    (0x01, [0x29]),  # Esc
    (0x02, [0x1E, 0x1F, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x2D, 0x2E, 0x2A]),
    (0x0F, [0x2B, 0x14, 0x1A, 0x08, 0x15, 0x17, 0x1C, 0x18, 0x0C, 0x12, 0x13, 0x2F, 0x30]),
    (0x1C, [0x28, LCTRL, 0x04, 0x16, 0x07, 0x09, 0x0A, 0x0B, 0x0D, 0x0E, 0x0F, 0x33, 0x34]),
    (0x29, [0x35, LSHIFT, 0x31, 0x1D, 0x1B, 0x06, 0x19, 0x05, 0x11, 0x10, 0x36, 0x37, 0x38]),
    (0x36, [RSHIFT, 0x55, LALT, 0x2C, CAPS_LOCK]),
    (0x3B, [0x3A, 0x3B, 0x3C, 0x3D, 0x3E, 0x3F, 0x40, 0x41, 0x42, 0x43]),  # F1-F10
    (0x45, [0x53, 0x47, 0x5F, 0x60, 0x61, 0x56, 0x5C, 0x5D, 0x5E, 0x57, 0x59, 0x5A, 0x5B]),
    (0x52, [0x62, 0x63]),
    (0x56, [0x64, 0x44, 0x45, 0x67]),  # non-US \, F11, F12, keypad =
    (0x64, [0x68, 0x69, 0x6A, 0x6B, 0x6C, 0x6D, 0x6E, 0x6F, 0x70, 0x71, 0x72]),  # F13-F23
    (0x70, [0x88]),
    (0x73, [0x87]),
    (0x76, [0x73]),
    (0x79, [0x8A]),
    (0x7B, [0x8B]),
    (0x7D, [0x89, 0x85]),
]
_SCAN_EXTENDED = {
    0x1C: 0x58, 0x1D: RCTRL, 0x20: 0x7F, 0x2E: 0x81, 0x30: 0x80, 0x35: 0x54, 0x37: 0x46,
    0x38: RALT, 0x45: 0x53, 0x46: 0x48, 0x47: 0x4A, 0x48: 0x52, 0x49: 0x4B, 0x4B: 0x50,
    0x4D: 0x4F, 0x4F: 0x4D, 0x50: 0x51, 0x51: 0x4E, 0x52: 0x49, 0x53: DELETE, 0x5B: LGUI,
    0x5C: RGUI, 0x5D: 0x65, 0x5E: 0x66,
}  # fmt: skip
#: Windows set-1 scan code (C{0xE0xx} for extended keys) -> HID usage: Map mode.
SCANCODE_USAGES: dict[int, int] = {
    **{start + i: u for start, row in _SCAN_ROWS for i, u in enumerate(row)},
    **{0xE000 | code: u for code, u in _SCAN_EXTENDED.items()},
    0xE11D45: 0x48,  # Pause's E1 sequence
}

_EVDEV_EXTRA = {
    85: 0x94, 86: 0x64, 87: 0x44, 88: 0x45, 89: 0x87, 90: 0x92, 91: 0x93, 92: 0x8A,
    93: 0x88, 94: 0x8B, 95: 0x8C, 96: 0x58, 97: RCTRL, 98: 0x54, 99: 0x46, 100: RALT,
    102: 0x4A, 103: 0x52, 104: 0x4B, 105: 0x50, 106: 0x4F, 107: 0x4D, 108: 0x51,
    109: 0x4E, 110: 0x49, 111: DELETE, 113: 0x7F, 114: 0x81, 115: 0x80, 116: 0x66,
    117: 0x67, 119: 0x48, 121: 0x85, 122: 0x90, 123: 0x91, 124: 0x89, 125: LGUI,
    126: RGUI, 127: 0x65,
    **{183 + i: 0x68 + i for i in range(12)},  # F13-F24
}  # fmt: skip
#: X11 keycode (Linux evdev code + 8) -> HID usage: Map mode for a "Linux" peer. evdev
#: codes 1-83 are the set-1 scan codes of the same keys.
X11_KEYCODE_USAGES: dict[int, int] = {
    code + 8: usage
    for code, usage in [
        *((c, SCANCODE_USAGES[c]) for c in range(1, 84)),
        *_EVDEV_EXTRA.items(),
    ]
}

#: Platform advertised in PeerInfo -> the Map-mode code set RustDesk sends for it.
MAP_CODE_USAGES = {"Linux": X11_KEYCODE_USAGES, "Windows": SCANCODE_USAGES}

#: Key names for L{InputController.pressKeys} -> HID usage.
KEY_NAMES: dict[str, int] = {
    **_LETTERS,
    **_DIGITS,
    **{f"f{i}": 0x3A + i - 1 for i in range(1, 13)},
    **{f"f{i}": 0x68 + i - 13 for i in range(13, 25)},
    "ctrl": LCTRL, "control": LCTRL, "shift": LSHIFT, "alt": LALT, "option": LALT,
    "meta": LGUI, "win": LGUI, "super": LGUI, "gui": LGUI, "cmd": LGUI,
    "rctrl": RCTRL, "rshift": RSHIFT, "ralt": RALT, "altgr": RALT, "rmeta": RGUI,
    "enter": 0x28, "return": 0x28, "esc": 0x29, "escape": 0x29, "backspace": 0x2A,
    "tab": 0x2B, "space": 0x2C, "minus": 0x2D, "equal": 0x2E, "capslock": CAPS_LOCK,
    "printscreen": 0x46, "print": 0x46, "scrolllock": 0x47, "pause": 0x48,
    "insert": 0x49, "ins": 0x49, "home": 0x4A, "pageup": 0x4B, "delete": DELETE,
    "del": DELETE, "end": 0x4D, "pagedown": 0x4E, "right": 0x4F, "left": 0x50,
    "down": 0x51, "up": 0x52, "numlock": 0x53, "menu": 0x65, "apps": 0x65, "power": 0x66,
}  # fmt: skip

# RustDesk's MouseEvent mask (rustdesk.md §10.2): (buttons << 3) | type.
MOUSE_MOVE, MOUSE_DOWN, MOUSE_UP, MOUSE_WHEEL, MOUSE_TRACKPAD, MOUSE_MOVE_RELATIVE = range(6)
MOUSE_TYPE_MASK = 0x7
#: HID absolute coordinates run from 0 to this value over the display.
ABSOLUTE_MAX = 32767

_MODIFIER_KEYS = {
    CK.Alt: LALT, CK.Option: LALT, CK.Control: LCTRL, CK.Shift: LSHIFT, CK.Meta: LGUI,
    CK.RWin: RGUI, CK.RShift: RSHIFT, CK.RControl: RCTRL, CK.RAlt: RALT,
}  # fmt: skip


def keyboardReport(modifiers: int, keys: Iterable[int]) -> bytes:
    """The 8-byte boot keyboard report; more than six keys is ErrorRollOver."""
    keys = list(keys)
    if len(keys) > 6:
        keys = [ERROR_ROLL_OVER] * 6
    return bytes([modifiers & 0xFF, 0, *keys, *[0] * (6 - len(keys))])


def mouseReport(buttons: int, x: int, y: int, wheel: int = 0) -> bytes:
    """The 6-byte absolute mouse report; C{x}, C{y} in 0..32767, C{wheel} a signed byte."""
    x = min(max(x, 0), ABSOLUTE_MAX)
    y = min(max(y, 0), ABSOLUTE_MAX)
    wheel = min(max(wheel, -127), 127)
    return bytes([buttons & 0x1F, x & 0xFF, x >> 8, y & 0xFF, y >> 8, wheel & 0xFF])


def _isModifier(usage: int) -> bool:
    return LCTRL <= usage <= RGUI


class ViewerInput:
    """One viewer's keyboard and mouse: what it holds, on the shared devices.

    @ivar unmapped: events that named a key with no HID usage (ignored).
    """

    def __init__(self, controller: InputController, viewerId: object) -> None:
        self._controller = controller
        self.viewerId = viewerId
        # usage held -> modifier usages it implies (a Legacy chr with modifiers [Control]).
        self.held: dict[int, frozenset[int]] = {}
        self.buttons = 0
        self.unmapped = 0

    # Keyboard

    def keyEvent(self, msg: pb.KeyEvent) -> None:
        """Apply a RustDesk KeyEvent (Legacy, Map, Translate or Auto mode).

        The host's CapsLock follows the CapsLock flag in the event's C{modifiers}: a
        CapsLock press is sent first when they differ, and CapsLock key events are not
        forwarded themselves (the flag already carries them; forwarding both would toggle
        twice).
        """
        kind = msg.WhichOneof("union")
        modifiers = list(msg.modifiers)
        self._controller._syncCapsLock(self, CK.CapsLock in modifiers)
        implied = frozenset(_MODIFIER_KEYS[m] for m in modifiers if m in _MODIFIER_KEYS)
        mapMode = msg.mode in (pb.KeyboardMode.Map, pb.KeyboardMode.Translate)
        if kind == "control_key":
            if msg.control_key == CK.CtrlAltDel:
                self._controller._tap(self, [LCTRL, LALT, DELETE])
                return
            if msg.control_key == CK.LockScreen:
                self._controller._tap(self, [LGUI, _LETTERS["l"]])
                return
            usage = CONTROL_KEY_USAGES.get(msg.control_key)
            if usage is None:
                self.unmapped += 1
            elif usage != CAPS_LOCK:
                self._key(msg, usage, implied - {usage})
        elif kind == "chr" and mapMode:
            usage = self._controller.mapCodes.get(msg.chr)
            if usage is None:
                self.unmapped += 1
            elif usage != CAPS_LOCK:
                self._key(msg, usage, frozenset())
        elif kind in ("chr", "unicode"):
            code = msg.chr if kind == "chr" else msg.unicode
            self._character(msg, code, implied)
        elif kind == "seq":
            self._controller._type(self, msg.seq)
        else:
            self.unmapped += 1

    def _character(self, msg: pb.KeyEvent, code: int, implied: frozenset[int]) -> None:
        if 1 <= code <= 26 and code not in (8, 9, 13) and LCTRL in implied:
            code += ord("a") - 1  # a control character: Ctrl with its letter
        try:
            char = chr(code)
        except (ValueError, OverflowError):
            char = ""
        found = CHAR_USAGES.get(char)
        if found is None:
            self.unmapped += 1
            return
        usage, shifted = found
        if char.isalpha() and self._controller.capsLock:
            shifted = not shifted
        mods = implied - {LSHIFT, RSHIFT}
        self._key(msg, usage, mods | {LSHIFT} if shifted else mods)

    def _key(self, msg: pb.KeyEvent, usage: int, implied: frozenset[int]) -> None:
        if msg.press:
            self._controller._tap(self, [*implied, usage])
        elif msg.down:
            self.held[usage] = implied
            self._controller._keyboardChanged()
        elif self.held.pop(usage, None) is not None:
            self._controller._keyboardChanged()

    # Mouse

    def mouseEvent(self, msg: pb.MouseEvent) -> None:
        """Apply a RustDesk MouseEvent: move, button down/up, wheel (rustdesk.md §10.2)."""
        kind = msg.mask & MOUSE_TYPE_MASK
        buttons = (msg.mask >> 3) & 0x1F
        c = self._controller
        if kind == MOUSE_MOVE:
            c._moveTo(msg.x, msg.y)
        elif kind == MOUSE_DOWN:
            c._moveTo(msg.x, msg.y)
            self.buttons |= buttons
        elif kind == MOUSE_UP:
            c._moveTo(msg.x, msg.y)
            self.buttons &= ~buttons
        elif kind == MOUSE_WHEEL:
            c._mouse(wheel=(msg.y > 0) - (msg.y < 0))
            return
        elif kind == MOUSE_MOVE_RELATIVE:
            c._moveTo(c.pointer[0] + msg.x, c.pointer[1] + msg.y)
        else:
            self.unmapped += 1
            return
        c._mouse()

    def release(self) -> None:
        """Let go of every key and button this viewer holds (the viewer left)."""
        self._controller._detach(self)


class InputController:
    """The node's keyboard and mouse, shared by every viewer and by L{typeText} & co.

    @param displaySize: the display's (width, height) in pixels, for mouse scaling; (0, 0)
        while unknown, when mouse events are dropped and counted in C{mouseDropped}.
    @param platform: the platform the node advertises in PeerInfo (C{"Linux"} or
        C{"Windows"}): Map-mode key codes are read in its code set.
    @ivar capsLock: the node's belief of the host's CapsLock state (toggled by every
        CapsLock press it sends).
    """

    def __init__(
        self,
        keyboard: IHidSink,
        mouse: IHidSink,
        displaySize: Callable[[], tuple[int, int]],
        platform: str = PLATFORM,
    ) -> None:
        if platform not in MAP_CODE_USAGES:
            raise ValueError(f"platform must be one of {sorted(MAP_CODE_USAGES)}")
        self.platform = platform
        self.mapCodes = MAP_CODE_USAGES[platform]
        self._keyboard = keyboard
        self._mouseSink = mouse
        self._displaySize = displaySize
        self._viewers: dict[object, ViewerInput] = {}
        self._own = ViewerInput(self, None)  # typeText, pressKeys, ctrlAltDel
        self._order: dict[int, None] = {}  # held non-modifier usages, in press order
        self._lastKeyboard = keyboardReport(0, [])
        self.pointer = (0, 0)
        self.capsLock = False
        self.mouseDropped = 0
        self.keyboardReports = 0
        self.mouseReports = 0

    def attach(self, viewerId: object) -> ViewerInput:
        """The input of a new viewer (or the existing one with that id)."""
        viewer = self._viewers.get(viewerId)
        if viewer is None:
            viewer = self._viewers[viewerId] = ViewerInput(self, viewerId)
        return viewer

    @property
    def viewers(self) -> list[object]:
        """Ids of the attached viewers."""
        return list(self._viewers)

    # Operator commands (gateway kvm.*): taps, nothing left held.

    def typeText(self, text: str) -> int:
        """Type C{text} on a US layout; return how many characters had no key."""
        before = self._own.unmapped
        self._type(self._own, text)
        return self._own.unmapped - before

    def pressKeys(self, names: list[str]) -> None:
        """Press the named keys together, then release them (e.g. C{["ctrl", "alt", "delete"]}).

        @raise ValueError: a name is not in L{KEY_NAMES}.
        """
        usages = []
        for name in names:
            key = name.strip().lower()
            if key not in KEY_NAMES:
                raise ValueError(f"unknown key name {name!r}")
            usages.append(KEY_NAMES[key])
        if usages:
            self._tap(self._own, usages)

    def ctrlAltDel(self) -> None:
        """Press Ctrl+Alt+Delete."""
        self._tap(self._own, [LCTRL, LALT, DELETE])

    def mouse(self, x: int, y: int, buttons: int = 0, wheel: int = 0) -> None:
        """Put the pointer at display pixel (C{x}, C{y}) with C{buttons} down, scroll C{wheel}."""
        self._own.buttons = buttons & 0x1F
        self._moveTo(x, y)
        self._mouse(wheel=wheel)

    # Shared state

    def _holders(self) -> Iterable[ViewerInput]:
        yield self._own
        yield from self._viewers.values()

    def _keyboardChanged(self) -> None:
        modifiers = 0
        held: set[int] = set()
        for v in self._holders():
            for usage, implied in v.held.items():
                for m in implied:
                    modifiers |= 1 << (m - LCTRL)
                if _isModifier(usage):
                    modifiers |= 1 << (usage - LCTRL)
                else:
                    held.add(usage)
        for usage in list(self._order):
            if usage not in held:
                del self._order[usage]
        for usage in sorted(held - self._order.keys()):
            self._order[usage] = None
        report = keyboardReport(modifiers, self._order)
        if report != self._lastKeyboard:
            self._lastKeyboard = report
            self.keyboardReports += 1
            self._keyboard.write(report)

    def _tap(self, viewer: ViewerInput, usages: list[int]) -> None:
        """Press C{usages} together, then release them (keys the viewer held stay held)."""
        added = [u for u in dict.fromkeys(usages) if u not in viewer.held]
        for u in added:
            viewer.held[u] = frozenset()
        self._keyboardChanged()
        for u in added:
            del viewer.held[u]
        self._keyboardChanged()
        if CAPS_LOCK in added:
            self.capsLock = not self.capsLock

    def _syncCapsLock(self, viewer: ViewerInput, wanted: bool) -> None:
        if wanted != self.capsLock:
            self._tap(viewer, [CAPS_LOCK])

    def _type(self, viewer: ViewerInput, text: str) -> None:
        for char in text:
            found = CHAR_USAGES.get(char)
            if found is None:
                viewer.unmapped += 1
                continue
            usage, shifted = found
            if char.isalpha() and self.capsLock:
                shifted = not shifted
            self._tap(viewer, [LSHIFT, usage] if shifted else [usage])

    def _detach(self, viewer: ViewerInput) -> None:
        if self._viewers.get(viewer.viewerId) is viewer:
            del self._viewers[viewer.viewerId]
        viewer.held.clear()
        self._keyboardChanged()
        if viewer.buttons:
            viewer.buttons = 0
            self._mouse()

    def _moveTo(self, x: int, y: int) -> None:
        width, height = self._displaySize()
        if width > 0 and height > 0:
            self.pointer = (min(max(x, 0), width - 1), min(max(y, 0), height - 1))

    def _mouse(self, wheel: int = 0) -> None:
        width, height = self._displaySize()
        if width <= 0 or height <= 0:
            self.mouseDropped += 1
            return
        buttons = 0
        for v in self._holders():
            buttons |= v.buttons
        x, y = self.pointer
        sx = (x * ABSOLUTE_MAX + (width - 1) // 2) // max(width - 1, 1)
        sy = (y * ABSOLUTE_MAX + (height - 1) // 2) // max(height - 1, 1)
        self.mouseReports += 1
        self._mouseSink.write(mouseReport(buttons, sx, sy, wheel))
