# -*- test-case-name: test.unit.test_commands_migrate -*-
"""C{p2pnet config from-coturn turnserver.conf}: coturn's settings as p2pnet's TOML.

coturn's file has one option per line, C{name=value}, C{name value} or a bare C{name} for
a flag, C{#} comments. Each option with an equivalent becomes a TOML key (lists for the
repeatable ones, coturn's C{IP-IP} peer ranges as CIDR blocks); options whose behaviour
p2pnet has anyway are dropped with a note; the rest are listed, as comments in the TOML
and on standard error, as having no equivalent. docs/migrating.md explains the
differences a migrant trips over.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Conversion", "fromCoturn", "register"]

#: coturn options p2pnet does anyway, with why (dropped with a note).
BUILT_IN = {
    "lt-cred-mech": "long-term credentials are the default",
    "use-auth-secret": "REST credentials are on whenever auth-secret is set",
    "fingerprint": "FINGERPRINT is always sent",
    "no-loopback-peers": "loopback peers are refused unless allow-loopback-peers",
    "no-multicast-peers": "multicast peers are always refused",
    "no-cli": "there is no telnet CLI (p2pnet turn sessions|kill through the gateway)",
    "no-stdout-log": "log where twistd logs",
    "simple-log": "log where twistd logs",
    "log-file": "log where twistd logs (--logfile, or the journal under systemd)",
    "syslog": "twistd --syslog",
    "pidfile": "twistd --pidfile",
    "verbose": "every event is logged at info level",
    "Verbose": "every event is logged at info level",
    "no-software-attribute": "SOFTWARE is set with the software setting ('' leaves it out)",
    "prometheus-port": "the port is part of metrics-listen",
}


@dataclass
class Conversion:
    """The result: TOML values by p2pnet key, notes, options without an equivalent."""

    values: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)

    def add(self, key: str, value: Any, repeatable: bool = False) -> None:
        if repeatable:
            self.values.setdefault(key, []).append(value)
        else:
            self.values[key] = value

    def toml(self) -> str:
        """The values as a TOML file, the notes and unmapped options as comments."""
        lines = ["# Converted from coturn by p2pnet config from-coturn; see docs/migrating.md."]
        for key, value in self.values.items():
            lines.append(f"{key} = {_tomlValue(value)}")
        for note in self.notes:
            lines.append(f"# {note}")
        for line in self.unmapped:
            lines.append(f"# no equivalent: {line}")
        return "\n".join(lines) + "\n"


def _tomlValue(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_tomlValue(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string


def _peerRange(text: str) -> list[str]:
    """coturn's C{IP}, C{IP-IP} or CIDR as CIDR blocks."""
    if "-" in text:
        low, high = (ipaddress.ip_address(p.strip()) for p in text.split("-", 1))
        return [str(n) for n in ipaddress.summarize_address_range(low, high)]
    return [str(ipaddress.ip_network(text, strict=False))]


def _integer(value: str) -> int:
    return int(value.strip())


#: coturn option -> (p2pnet key, value converter, repeatable).
SIMPLE: dict[str, tuple[str, Callable[[str], Any], bool]] = {
    "listening-port": ("stun-port", _integer, False),
    "tls-listening-port": ("tls-port", _integer, False),
    "alt-listening-port": ("alt-port", _integer, False),
    "listening-ip": ("listen", str, True),
    "relay-ip": ("relay-ip", str, True),
    "external-ip": ("external-ip", str, True),
    "realm": ("realm", str, False),
    "static-auth-secret": ("auth-secret", str, False),
    "user-quota": ("user-quota", _integer, False),
    "total-quota": ("max-allocations", _integer, False),
    "max-bps": ("max-bps", _integer, False),
    "bps-capacity": ("bps-capacity", _integer, False),
    "cert": ("tls-cert", str, False),
    "pkey": ("tls-key", str, False),
    "max-allocate-lifetime": ("max-lifetime", _integer, False),
    "alternate-server": ("alternate-server", str, True),
}

#: coturn flags -> p2pnet switches.
FLAGS = {
    "no-tcp": "no-tcp",
    "no-tls": "no-tls",
    "no-tcp-relay": "no-tcp-relay",
    "allow-loopback-peers": "allow-loopback-peers",
    "secure-stun": "secure-stun",
}


def _options(lines: Iterable[str]) -> Iterable[tuple[str, str | None, str]]:
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" in line:
            name, _, value = line.partition("=")
        else:
            name, _, value = line.partition(" ")
        name = name.strip().lstrip("-")
        value = value.strip().strip('"') if value.strip() else ""
        yield name, value or None, line


def fromCoturn(lines: Iterable[str]) -> Conversion:
    """Convert the lines of a C{turnserver.conf}."""
    out = Conversion()
    ports: dict[str, int] = {}
    prometheus = False
    for name, value, line in _options(lines):
        try:
            if name in SIMPLE and value is not None:
                key, convert, repeatable = SIMPLE[name]
                out.add(key, convert(value), repeatable)
            elif name in FLAGS and value is None:
                out.add(FLAGS[name], True)
            elif name in ("min-port", "max-port") and value is not None:
                ports[name] = _integer(value)
            elif name in ("denied-peer-ip", "allowed-peer-ip") and value is not None:
                key = "deny-peer" if name == "denied-peer-ip" else "allow-peer"
                for block in _peerRange(value):
                    out.add(key, block, repeatable=True)
            elif name == "user" and value is not None:
                user, _, secret = value.partition(":")
                if secret.startswith("0x"):
                    out.unmapped.append(f"{line} (a stored key, not a password: add the "
                                        "user again with p2pnet users add)")
                else:
                    out.add("user", value, repeatable=True)
            elif name == "stale-nonce":
                out.add("nonce-lifetime", _integer(value) if value else 600)
            elif name == "prometheus":
                prometheus = True
            elif name == "prometheus-port" and value is not None:
                ports["prometheus"] = _integer(value)
            elif name in BUILT_IN:
                out.notes.append(f"{name}: {BUILT_IN[name]}")
            else:
                out.unmapped.append(line)
        except ValueError as e:
            out.unmapped.append(f"{line} (not understood: {e})")
    if "min-port" in ports or "max-port" in ports:
        low, high = ports.get("min-port", 49152), ports.get("max-port", 65535)
        out.add("relay-ports", f"{low}-{high}")
    if prometheus:
        out.add("metrics-listen", f"0.0.0.0:{ports.get('prometheus', 9641)}")
    return out


def run(args: argparse.Namespace) -> int:
    """Print the TOML; the options without an equivalent also on standard error."""
    try:
        with open(args.file, encoding="utf-8", errors="replace") as f:
            conversion = fromCoturn(f)
    except OSError as e:
        sys.stderr.write(f"p2pnet: cannot read {args.file}: {e.strerror}\n")
        return 1
    sys.stdout.write(conversion.toml())
    for line in conversion.unmapped:
        sys.stderr.write(f"p2pnet: no equivalent: {line}\n")
    return 0


def register(subparsers: Any) -> None:
    """Add C{config from-coturn FILE}."""
    parser = subparsers.add_parser("config", help="convert another server's settings")
    actions = parser.add_subparsers(dest="configCommand", required=True, metavar="ACTION")
    coturn = actions.add_parser(
        "from-coturn", help="print a coturn turnserver.conf as p2pnet's TOML (--config)")
    coturn.add_argument("file", help="coturn's turnserver.conf")
    coturn.set_defaults(run=run)
