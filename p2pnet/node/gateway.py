# -*- test-case-name: test.unit.test_node_gateway -*-
"""The node's commands on a control gateway (C{role=node}, docs/kvm-node.md).

An operator reaches them with C{node.invoke} (C{p2pnet gateway call node.invoke ...}):

- C{kvm.status}: id, registration state, viewers, source, codec, resolution, fps;
- C{kvm.snapshot} C{{format: png|jpeg}}: the current screen, base64;
- C{kvm.type} C{{text}}: type text on the keyboard;
- C{kvm.key} C{{keys: ["ctrl", "alt", "delete"]}} (or C{"ctrl+alt+delete"}): press
  keys together, then release them;
- C{kvm.mouse} C{{x, y, buttons, wheel}}: absolute pointer in display pixels;
- C{kvm.viewers} C{{kick?: id}}: the viewers, and optionally close one.

Bad parameters raise C{ValueError}; the gateway client turns that into an error answer.
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet.defer import Deferred

__all__ = ["COMMANDS", "KvmCommands", "MAX_TEXT"]

#: Longest text C{kvm.type} accepts in one call.
MAX_TEXT = 4096
COMMANDS = ("kvm.status", "kvm.snapshot", "kvm.type", "kvm.key", "kvm.mouse", "kvm.viewers")


def _int(params: dict[str, Any], name: str, default: int | None = None,
         low: int = -(2**31), high: int = 2**31 - 1) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number")
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low} to {high}")
    return value


class KvmCommands:
    """The C{kvm.*} handlers of one node (C{node} is a L{NodeService})."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def handlers(self) -> dict[str, Any]:
        """Command name to handler, for L{p2pnet.protocols.gateway_client.ClientOptions}."""
        return {name: self.run for name in COMMANDS}

    def run(self, command: str, params: Any) -> Any:
        """Run one command; C{params} is the decoded C{paramsJSON} (or C{None})."""
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ValueError("params must be an object")
        return getattr(self, command.replace("kvm.", "do_"))(params)

    def do_status(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.node.status()

    def do_snapshot(self, params: dict[str, Any]) -> Deferred[dict[str, Any]]:
        fmt = params.get("format", "png")
        if fmt not in ("png", "jpeg"):
            raise ValueError("format must be png or jpeg")
        d = self.node.feed.snapshot(fmt)
        d.addCallback(lambda data: {
            "format": fmt, "width": self.node.feed.width, "height": self.node.feed.height,
            "data": base64.b64encode(data).decode()})
        return d

    def do_type(self, params: dict[str, Any]) -> dict[str, Any]:
        text = params.get("text")
        if not isinstance(text, str) or not text:
            raise ValueError("text must be a non-empty string")
        if len(text) > MAX_TEXT:
            raise ValueError(f"text is longer than {MAX_TEXT} characters")
        self.node.inputs.typeText(text)
        return {"typed": len(text)}

    def do_key(self, params: dict[str, Any]) -> dict[str, Any]:
        keys = params.get("keys")
        if isinstance(keys, str):
            keys = [k for k in keys.split("+") if k]
        if (not isinstance(keys, list) or not keys or len(keys) > 8
                or not all(isinstance(k, str) and k for k in keys)):
            raise ValueError("keys must be 1 to 8 key names")
        names = [k.lower() for k in keys]
        if names == ["ctrl", "alt", "delete"] or names == ["ctrlaltdel"]:
            self.node.inputs.ctrlAltDel()
        else:
            self.node.inputs.pressKeys(names)
        return {"pressed": names}

    def do_mouse(self, params: dict[str, Any]) -> dict[str, Any]:
        x = _int(params, "x", low=0, high=65535)
        y = _int(params, "y", low=0, high=65535)
        buttons = _int(params, "buttons", 0, 0, 31)
        wheel = _int(params, "wheel", 0, -127, 127)
        self.node.inputs.mouse(x, y, buttons, wheel)
        return {"x": x, "y": y, "buttons": buttons, "wheel": wheel}

    def do_viewers(self, params: dict[str, Any]) -> dict[str, Any]:
        kicked = None
        if "kick" in params:
            target = params["kick"]
            session = self.node.viewers.get(target) if isinstance(target, str) else None
            if session is None:
                raise ValueError("no such viewer")
            session.kick()
            kicked = target
        return {"viewers": [s.describe() for s in self.node.viewers.values()],
                "kicked": kicked}
