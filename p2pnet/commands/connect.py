# -*- test-case-name: test.interop.test_node_e2e -*-
"""C{p2pnet connect ID}: look at and type into a KVM node (or any RustDesk peer that
accepts a password) from the command line.

It finds the node through its rendezvous server, tries the direct path and falls back
to the relay, logs in, and prints the path used, the frames per second and the bitrate
it received. C{--record} keeps the received H.264/H.265 elementary stream,
C{--snapshot} one decoded frame (Debian's ffmpeg decodes it), C{--type}, C{--key} and
C{--click} send input. The server's public key is C{--server-key} (the issue's second
C{--key} is the key chord to press).
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import tempfile
from typing import IO, Any, NoReturn

from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue

from p2pnet.codecs.proto import message_pb2 as pb
from p2pnet.commands import fail, reactMain, step

__all__ = ["connectMain", "keyEvents", "parseClick", "register", "textEvents"]

_MODIFIERS = {"ctrl": pb.Control, "control": pb.Control, "alt": pb.Alt, "shift": pb.Shift,
              "meta": pb.Meta, "win": pb.Meta, "super": pb.Meta, "cmd": pb.Meta}
_KEYS = {
    "delete": pb.Delete, "del": pb.Delete, "enter": pb.Return, "return": pb.Return,
    "esc": pb.Escape, "escape": pb.Escape, "tab": pb.Tab, "backspace": pb.Backspace,
    "space": pb.Space, "up": pb.UpArrow, "down": pb.DownArrow, "left": pb.LeftArrow,
    "right": pb.RightArrow, "home": pb.Home, "end": pb.End, "pageup": pb.PageUp,
    "pagedown": pb.PageDown, "insert": pb.Insert, "capslock": pb.CapsLock,
    **{f"f{n}": getattr(pb, f"F{n}") for n in range(1, 13)},
}


def textEvents(text: str) -> list[pb.KeyEvent]:
    """One Legacy-mode key press per character (C{chr}); newline and tab as keys."""
    events = []
    for c in text:
        if c == "\n":
            events.append(pb.KeyEvent(press=True, control_key=pb.Return))
        elif c == "\t":
            events.append(pb.KeyEvent(press=True, control_key=pb.Tab))
        else:
            events.append(pb.KeyEvent(press=True, chr=ord(c)))
    return events


def keyEvents(chord: str) -> list[pb.KeyEvent]:
    """C{ctrl+alt+delete} as C{ControlKey.CtrlAltDel}; other chords as the last key
    pressed with the others as modifiers.

    @raise ValueError: an unknown key name.
    """
    names = [n.strip().lower() for n in chord.split("+") if n.strip()]
    if not names:
        raise ValueError("empty key chord")
    if names in (["ctrl", "alt", "delete"], ["ctrl", "alt", "del"]):
        return [pb.KeyEvent(press=True, control_key=pb.CtrlAltDel)]
    *mods, last = names
    modifiers = []
    for m in mods:
        if m not in _MODIFIERS:
            raise ValueError(f"unknown modifier {m!r}")
        modifiers.append(_MODIFIERS[m])
    event = pb.KeyEvent(press=True, modifiers=modifiers)
    if last in _KEYS:
        event.control_key = _KEYS[last]
    elif last in _MODIFIERS:
        event.control_key = _MODIFIERS[last]
    elif len(last) == 1:
        event.chr = ord(last)
    else:
        raise ValueError(f"unknown key {last!r}")
    return [event]


def parseClick(text: str) -> tuple[int, int]:
    """C{X,Y} in display pixels."""
    x, sep, y = text.partition(",")
    if not sep:
        raise argparse.ArgumentTypeError("expected X,Y")
    try:
        return int(x), int(y)
    except ValueError:
        raise argparse.ArgumentTypeError("expected X,Y as whole numbers") from None


def clickEvents(x: int, y: int) -> list[pb.MouseEvent]:
    """Move, left down, left up (mask = buttons << 3 | type, rustdesk.md §6.8)."""
    return [pb.MouseEvent(mask=0, x=x, y=y), pb.MouseEvent(mask=(1 << 3) | 1, x=x, y=y),
            pb.MouseEvent(mask=(1 << 3) | 2, x=x, y=y)]


def _serverKey(text: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        raise argparse.ArgumentTypeError("expected the server's base64 public key") from None
    if len(key) != 32:
        raise argparse.ArgumentTypeError("the server key is 32 bytes in base64")
    return key


def register(subparsers: Any) -> None:
    """Add C{p2pnet connect} to the C{p2pnet} command."""
    parser = subparsers.add_parser(
        "connect", help="connect to a KVM node (a RustDesk peer): view, record, type",
        description="Find a RustDesk peer through its rendezvous server, connect directly "
        "or through the relay, log in with its password, and report what arrives.")
    parser.add_argument("id", help="the node's RustDesk id")
    parser.add_argument("--password", required=True, help="the node's password")
    parser.add_argument("--server", default="127.0.0.1", metavar="HOST[:PORT]",
                        help="rendezvous server (default %(default)s, port 21116)")
    parser.add_argument("--server-key", type=_serverKey, metavar="KEY",
                        help="the server's public key (a RustDesk client's 'Key'); "
                        "without it the session is not encrypted")
    parser.add_argument("--relay", action="store_true", help="go through the relay")
    parser.add_argument("--direct", metavar="HOST:PORT",
                        help="direct IP access instead of the rendezvous server")
    parser.add_argument("--bind", metavar="ADDR", help="local address for connections")
    parser.add_argument("--duration", type=float, default=3.0, metavar="SECONDS",
                        help="how long to receive video (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="give up when not logged in after this long "
                        "(default %(default)s)")
    parser.add_argument("--record", metavar="FILE", help="write the received stream")
    parser.add_argument("--snapshot", metavar="FILE.png", help="save one decoded frame")
    parser.add_argument("--type", dest="text", metavar="TEXT", help="type this text")
    parser.add_argument("--key", dest="chord", metavar="KEYS",
                        help="press a key chord, e.g. ctrl+alt+delete")
    parser.add_argument("--click", type=parseClick, metavar="X,Y",
                        help="left click at X,Y (display pixels)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> NoReturn:
    """Run on the global reactor; exits with the command's status."""
    reactMain(connectMain, args, deadline=args.timeout + args.duration + 10)


async def connectMain(reactor: Any, args: argparse.Namespace, out: IO[str] | None = None,
                      err: IO[str] | None = None) -> int:
    """The command's work; returns the exit status."""
    from p2pnet.node.viewer import ConnectError, connectDirect, findAndConnect
    from p2pnet.protocols.rustdesk_client import splitHostPort

    out = sys.stdout if out is None else out
    try:
        chords = keyEvents(args.chord) if args.chord else []
    except ValueError as e:
        return fail(args, f"--key: {e} (e.g. ctrl+alt+delete, ctrl+shift+t, f5)", 2, err)
    stream = bytearray()
    started = [False]

    def onFrame(frame: pb.EncodedVideoFrame, codec: str) -> None:
        if frame.key:
            started[0] = True
        if started[0]:
            stream.extend(frame.data)

    licence = base64.b64encode(args.server_key).decode() if args.server_key else ""
    step(args, f"the login to {args.id}")
    try:
        if args.direct:
            path = "ip"
            session = await connectDirect(reactor, splitHostPort(args.direct, 21118),
                                          args.id, args.password, onFrame)
        else:
            path, session = await findAndConnect(
                reactor, splitHostPort(args.server, 21116), args.id, args.password,
                serverPk=args.server_key, licenceKey=licence, forceRelay=args.relay,
                bindAddress=args.bind, onFrame=onFrame)
    except ConnectError as e:
        hint = {"Wrong Password": "check --password",
                "Key mismatch": "give the server's key with --server-key",
                "ID does not exist": "check the id and --server"}.get(str(e), "")
        return fail(args, f"{e}{'; ' + hint if hint else ''}", 1, err)
    except (OSError, ConnectionError) as e:
        return fail(args, f"cannot reach the node or its server: {e}", 1, err)
    step(args, "video")
    info = session.peerInfo
    display = info.displays[0] if info and info.displays else None
    size = f"{display.width}x{display.height}" if display else "no display"
    codec = "h265" if info and info.encoding.h265 else "h264"
    print(f"connected to {args.id} via {path} "
          f"({'encrypted' if session.encrypted else 'unencrypted'}), {size} {codec}",
          file=out, flush=True)
    for event in textEvents(args.text or "") + chords:
        session.send(pb.Message(key_event=event))
    if args.click:
        for mouse in clickEvents(*args.click):
            session.send(pb.Message(mouse_event=mouse))
    frames0, bytes0, t0 = session.frames, session.videoBytes, reactor.seconds()
    await deferLater(reactor, args.duration, lambda: None)
    elapsed = max(reactor.seconds() - t0, 1e-6)
    frames, size = session.frames - frames0, session.videoBytes - bytes0
    print(f"received {frames} frames in {elapsed:.1f} s: {frames / elapsed:.1f} fps, "
          f"{size * 8 / elapsed / 1e6:.2f} Mbit/s", file=out, flush=True)
    session.close()
    status = 0
    if args.record:
        try:
            with open(args.record, "wb") as f:
                f.write(stream)
        except OSError as e:
            return fail(args, f"--record: cannot write {args.record}: {e.strerror}", 1, err)
        print(f"recorded {len(stream)} bytes to {args.record}", file=out)
    if args.snapshot:
        status = await _snapshot(args, bytes(stream), codec, out, err)
    return status


async def _snapshot(args: argparse.Namespace, data: bytes, codec: str, out: IO[str],
                    err: IO[str] | None) -> int:
    target = args.snapshot
    if not data:
        return fail(args, "no keyframe arrived, so no snapshot; raise --duration", 1, err)
    with tempfile.NamedTemporaryFile(suffix="." + codec, delete=False) as f:
        f.write(data)
    try:
        _, stderr, code = await getProcessOutputAndValue(
            "ffmpeg", ["-v", "error", "-y", "-f", codec, "-i", f.name, "-frames:v", "1",
                       target], env=dict(os.environ))
    finally:
        os.unlink(f.name)
    if code != 0:
        return fail(args, f"ffmpeg could not decode a frame: {stderr.decode()[-200:]}", 1,
                    err)
    print(f"snapshot saved to {target}", file=out)
    return 0
