# -*- test-case-name: test.unit.test_config -*-
"""Typed settings from a TOML file and the command line: the one place they are checked.

Every setting is a field of L{Config}. Its name with C{_} written as C{-} is both the TOML
key and the command-line flag (C{stun_port} is C{stun-port = 3478} in the file and
C{--stun-port 3478} on the command line); a flag wins over the file, the file over the
embedded default. A repeatable setting is a TOML array or a flag given several times.

Every secret setting also has a C{KEY-file} form (C{--auth-secret-file PATH},
C{gateway-token-file = "PATH"}) that reads the value from a file, so secrets need not
appear on a command line (C{/proc/PID/cmdline} is readable by every local user): the
file's content without its final line break, or for a repeatable setting one value per
non-empty line. C{KEY} and C{KEY-file} in the same place (both flags, or both in the
file) is an error.

Anything wrong raises L{ConfigError} naming the key, before a socket is opened.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from p2pnet.addresses import ExternalAddresses
from p2pnet.errors import ConfigError

__all__ = [
    "Config",
    "ConfigError",
    "DEFAULT_SERVICES",
    "FILE_SUFFIX",
    "SERVICES",
    "Setting",
    "fileSettings",
    "loadConfig",
    "readSecretFile",
    "settings",
]

#: Suffix of the key that reads a secret setting from a file.
FILE_SUFFIX = "-file"

#: Every service the appliance knows, in start-up order.
SERVICES: tuple[str, ...] = ("stun", "turn", "rendezvous", "relay", "gateway", "node")
#: What runs without C{--services}: every server; not the KVM node (a server box has no
#: screen to capture).
DEFAULT_SERVICES: tuple[str, ...] = tuple(s for s in SERVICES if s != "node")


# -- value parsers: one string (from a flag, or a TOML scalar) to a typed value ------------


def parsePort(text: str) -> int:
    """A port number; 0 asks the kernel for a free one (tests use it)."""
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError("a port is a number from 0 to 65535")
    return port


def parseAddress(text: str) -> str:
    """An IPv4 or IPv6 address, returned in its normal written form."""
    return str(ipaddress.ip_address(text.strip().strip("[]")))


def parseHostPort(text: str) -> tuple[str, int]:
    """C{ADDR:PORT} or C{[V6ADDR]:PORT}."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError("expected ADDR:PORT")
    return parseAddress(host), parsePort(port)


def parseListenAddress(text: str) -> str:
    """C{ADDR:PORT} or C{[V6ADDR]:PORT}, kept as written (checked by L{parseHostPort})."""
    parseHostPort(text)
    return text.strip()


def parsePositiveInt(text: str) -> int:
    """A whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def parseSeconds(text: str) -> float:
    """A duration in seconds, more than zero."""
    value = float(text)
    if not value > 0:
        raise ValueError("must be more than 0 seconds")
    return value


def parseServices(text: str) -> tuple[str, ...]:
    """A comma-separated list of service names from L{SERVICES}."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise ValueError(f"unknown service {unknown[0]!r} (known: {', '.join(SERVICES)})")
    if not names:
        raise ValueError("name at least one service")
    return names


class RedisUrl(NamedTuple):
    """A store address (L{redisUrl}): one Redis, or the Sentinels that name the primary.

    For a Sentinel address C{host} and C{port} are the first Sentinel's.
    """

    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool
    #: The Sentinels to ask for the primary (empty: C{host} is Redis itself).
    sentinels: tuple[tuple[str, int], ...] = ()
    #: The name the Sentinels monitor the primary under.
    service: str = ""


#: Sentinel's own port, and the name its documentation monitors a primary under.
SENTINEL_PORT = 26379
SENTINEL_SERVICE = "mymaster"


def redisUrl(text: str) -> RedisUrl:
    """C{redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB]} (port 6379, database 0), or
    C{redis-sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...][/DB][#SERVICE]}
    (Sentinels on port 26379, service C{mymaster}; the credentials are the primary's).

    @raise ValueError: another scheme, a bad port or database number, no host.
    """
    if text.startswith("redis-sentinel://"):
        return _sentinelUrl(text)
    parts = urlsplit(text)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError("expected redis://HOST[:PORT][/DB], rediss://... or "
                         "redis-sentinel://HOST[:PORT][,HOST[:PORT]...][/DB][#SERVICE]")
    if not parts.hostname:
        raise ValueError("no host")
    return RedisUrl(parts.hostname, parts.port or 6379, _database(parts.path),
                    unquote(parts.username) if parts.username else None,
                    unquote(parts.password) if parts.password else None,
                    parts.scheme == "rediss")


def _database(path: str) -> int:
    """The database number of a URL's path (C{""}: 0)."""
    path = path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"the database must be a number, not {path!r}")
    return int(path or 0)


def _sentinelUrl(text: str) -> RedisUrl:
    """A C{redis-sentinel://} URL (L{redisUrl}); several hosts are not one netloc that
    C{urlsplit} can read, so each is split on its own."""
    rest, _, service = text[len("redis-sentinel://"):].partition("#")
    netloc, slash, path = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    sentinels = []
    for item in hosts.split(","):
        parts = urlsplit(f"//{item}")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"bad Sentinel port in {item!r}") from None
        if not parts.hostname:
            raise ValueError("no Sentinel host" if not item else f"bad Sentinel {item!r}")
        sentinels.append((parts.hostname, port or SENTINEL_PORT))
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) if user else None
        password = unquote(secret) if colon and secret else None
    first = sentinels[0]
    return RedisUrl(first[0], first[1], _database(path if slash else ""), username,
                    password, False, tuple(sentinels), unquote(service) or SENTINEL_SERVICE)


def parseStoreUrl(text: str) -> str:
    """C{""} (SQLite in the data directory) or a Redis URL (L{redisUrl})."""
    if text:
        redisUrl(text)
    return text


def parseUser(text: str) -> tuple[str, str]:
    """C{NAME:PASSWORD}; the password may itself contain colons."""
    name, sep, password = text.partition(":")
    if not sep or not name:
        raise ValueError("expected NAME:PASSWORD")
    return name, password


def parseRelayServers(text: str) -> tuple[str, ...]:
    """Comma-separated C{host} or C{host:port} relay servers (hbbs C{-r})."""
    entries = tuple(e.strip() for e in text.split(",") if e.strip())
    for entry in entries:
        host, port = entry, ""
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            if rest and not rest.startswith(":"):
                raise ValueError(f"bad entry {entry!r}")
            port = rest[1:]
        elif entry.count(":") == 1:
            host, _, port = entry.partition(":")
        if not host or any(c.isspace() or c in "/@" for c in host):
            raise ValueError(f"bad host in {entry!r}")
        if port:
            parsePort(port)
    return entries


def parseIPv4Network(text: str) -> ipaddress.IPv4Network:
    """An IPv4 network in CIDR form (C{192.168.0.0/16})."""
    return ipaddress.IPv4Network(text.strip(), strict=False)


def parseRate(text: str) -> int:
    """A whole number per second; 0 means no limit."""
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 (no limit) or more")
    return value


def parseBandwidth(text: str) -> float:
    """Megabits per second (Mb = 1024 x 1024 bits, as hbbr); 0 means no limit."""
    value = float(text)
    if value < 0:
        raise ValueError("must be 0 (no limit) or more")
    return value


def parseNetwork(text: str) -> str:
    """An IP address or CIDR network, returned in its normal written form."""
    return str(ipaddress.ip_network(text.strip(), strict=False))


def parseGatewayAuth(text: str) -> str:
    """A gateway auth mode: token, password, none or trusted-proxy."""
    mode = text.strip()
    if mode not in ("token", "password", "none", "trusted-proxy"):
        raise ValueError("expected token, password, none or trusted-proxy")
    return mode


def parseOrigin(text: str) -> str:
    """A browser origin C{scheme://host[:port]}, or C{*} for any."""
    from urllib.parse import urlsplit

    origin = text.strip().lower().rstrip("/")
    if origin == "*":
        return origin
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
        raise ValueError("expected scheme://host[:port] or *")
    parts.port  # noqa: B018 - raises ValueError on a bad port
    return origin


def parseHeaderName(text: str) -> str:
    """An HTTP header name (letters, digits and dashes)."""
    name = text.strip()
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError("expected an HTTP header name")
    return name


def parsePortRange(text: str) -> tuple[int, int]:
    """C{MIN-MAX}, two ports from 1 to 65535 with MIN <= MAX."""
    low, sep, high = text.strip().partition("-")
    if not sep:
        raise ValueError("expected MIN-MAX")
    lowPort, highPort = parsePort(low), parsePort(high)
    if not 1 <= lowPort <= highPort:
        raise ValueError("expected 1 <= MIN <= MAX")
    return lowPort, highPort


def parseExternalIp(text: str) -> str:
    """C{PUBLIC[/PRIVATE]}, two specific addresses of one family, in normal form."""
    public, private = ExternalAddresses.parse(text)
    return public if private is None else f"{public}/{private}"


def parseCount(text: str) -> int:
    """A whole number of at least 0 (0 means no limit where the setting says so)."""
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def parseNodeId(text: str) -> str:
    """A RustDesk id: 6 to 16 letters, digits, C{_} or C{-}, starting with a letter or
    digit (RustDesk's own ids are 9 or 10 digits)."""
    value = text.strip()
    if not (6 <= len(value) <= 16 and value[0].isalnum() and value.isascii()
            and all(c.isalnum() or c in "_-" for c in value)):
        raise ValueError("expected 6 to 16 letters, digits, _ or -")
    return value


def parseServerAddress(text: str) -> str:
    """C{HOST}, C{HOST:PORT} or C{[V6]:PORT} (returned as given, checked)."""
    value = text.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        if rest and not port:
            raise ValueError("expected [ADDR]:PORT")
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, ""
    if not host or any(c.isspace() or c in "/@" for c in host):
        raise ValueError("expected HOST[:PORT]")
    if port and not 1 <= parsePort(port):
        raise ValueError("the port must be from 1 to 65535")
    return value


def parseChoice(*choices: str) -> Callable[[str], str]:
    """One of C{choices}."""

    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected {' or '.join(choices)}")
        return value

    return parse


def parseVideoSource(text: str) -> str:
    """C{testsrc[:WxH]}, C{file:PATH}, C{pipe:SHELL-LINE} or C{v4l2:/dev/videoN}."""
    value = text.strip()
    kind, sep, rest = value.partition(":")
    if value == "testsrc" or (sep and kind in ("testsrc", "file", "pipe", "v4l2") and rest):
        return value
    raise ValueError("expected testsrc[:WxH], file:PATH, pipe:SHELL-LINE or v4l2:DEVICE")


def parseBitrate(text: str) -> int:
    """Bits per second, with an optional C{k} or C{M} suffix (C{4M}, C{2500k})."""
    value = text.strip()
    scale = {"k": 1000, "m": 1_000_000}.get(value[-1:].lower(), 1)
    number = int(float(value[:-1] if scale > 1 else value) * scale)
    if not 100_000 <= number <= 100_000_000:
        raise ValueError("must be from 100k to 100M bits per second")
    return number


def parseGatewayUrl(text: str) -> str:
    """A C{ws://} or C{wss://} URL."""
    from urllib.parse import urlsplit

    value = text.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("expected ws://HOST:PORT/ or wss://HOST:PORT/")
    parts.port  # noqa: B018 - raises ValueError on a bad port
    return value


# -- the settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """How one field of L{Config} is read.

    @ivar key: TOML key and flag name (C{stun-port}).
    @ivar attr: attribute name on L{Config} (C{stun_port}).
    @ivar parse: turns one string into the typed value, raising C{ValueError}.
    @ivar repeatable: the value is a tuple; the flag may be given again.
    @ivar switch: a flag without argument that sets C{True}.
    @ivar secret: never echoed in logs or error messages.
    @ivar env: environment variable read when neither flag nor file sets it.
    @ivar sep: for a list-valued setting written as one string (C{services = "stun,turn"},
        C{relay-ports = "MIN-MAX"}), what joins the items of a TOML array given instead
        (C{services = ["stun", "turn"]}, C{relay-ports = [49152, 65535]}).
    """

    key: str
    attr: str
    default: Any
    help: str
    parse: Callable[[str], Any]
    repeatable: bool
    switch: bool
    secret: bool
    env: str | None
    sep: str | None = None


def _setting(
    default: Any,
    help: str,
    parse: Callable[[str], Any] = str,
    *,
    repeatable: bool = False,
    switch: bool = False,
    secret: bool = False,
    env: str | None = None,
    sep: str | None = None,
) -> Any:
    return field(
        default=default,
        metadata={
            "help": help,
            "parse": parse,
            "repeatable": repeatable,
            "switch": switch,
            "secret": secret,
            "env": env,
            "sep": sep,
        },
    )


@dataclass(frozen=True)
class _GeneralSettings:
    """General settings: data, services, addresses, TLS, connection limits. Part of L{Config}."""

    # general
    data_dir: str = _setting(
        "./p2pnet-data", "Directory for state: TLS certificate, keys, database."
    )
    store: str = _setting(
        "",
        "Where the TURN user table and the RustDesk peer registry live: empty = SQLite in "
        "data-dir; redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (rediss:// for TLS) = "
        "Redis, shared by every node that names it.",
        parseStoreUrl,
        secret=True,
    )
    node_name: str = _setting(
        "",
        "This appliance's name among the nodes sharing a store (default: the host name); "
        "it marks the RustDesk peers registered here. Unique per node.",
    )
    services: tuple[str, ...] = _setting(
        DEFAULT_SERVICES,
        "Comma-separated services to run (default: every server; 'node' is the KVM "
        "node and runs only when named).",
        parseServices,
        sep=",",
    )
    listen: tuple[str, ...] = _setting(
        (),
        "Address to listen on; repeat for several, IPv4 and IPv6 "
        "(default: every IPv4 and IPv6 address).",
        parseAddress,
        repeatable=True,
    )
    tls_cert: str = _setting(
        "", "PEM certificate (chain) for TLS listeners (default: generated in data-dir)."
    )
    tls_key: str = _setting("", "PEM private key for tls-cert.")
    software: str = _setting(
        "p2pnet", "SOFTWARE attribute value in STUN/TURN answers; empty to omit it."
    )
    no_tcp: bool = _setting(
        False,
        "Open no STUN/TURN TCP listener (UDP and TLS only), as coturn's no-tcp.",
        switch=True,
    )
    no_tls: bool = _setting(
        False,
        "Open no STUN/TURN TLS listener (and make no certificate for it), as coturn's "
        "no-tls.",
        switch=True,
    )
    max_open_connections: int = _setting(
        0,
        "Most TCP connections open at once on all listeners together (0: the descriptor "
        "limit minus a reserve of an eighth, at least 64).",
        parseCount,
    )
    max_pending_per_ip: int = _setting(
        32,
        "Most TCP connections from one address (IPv6: one /64) still in their TLS or "
        "WebSocket handshake, all listeners together; more are closed at once.",
        parsePositiveInt,
    )
    pending_timeout: float = _setting(
        15.0,
        "Seconds a TCP connection may take to finish its TLS or WebSocket handshake.",
        parseSeconds,
    )
    log_format: str = _setting(
        "text",
        "Log as twistd's text lines or as one JSON object per line (json) under twistd.",
        parseChoice("text", "json"),
    )
    metrics_listen: str = _setting(
        "",
        "ADDR:PORT serving Prometheus /metrics over HTTP whatever services run, e.g. "
        "127.0.0.1:9641 (default: off; the gateway port serves /metrics too).",
        parseListenAddress,
    )


@dataclass(frozen=True)
class _StunSettings:
    """STUN settings (docs/stun.md). Part of L{Config}."""

    # stun
    stun_port: int = _setting(3478, "STUN/TURN port, UDP and TCP.", parsePort)
    tls_port: int = _setting(5349, "STUN/TURN over TLS port.", parsePort)
    alt_port: int = _setting(3479, "Second port for RFC 5780 NAT behaviour discovery.", parsePort)
    alt_listen: tuple[str, ...] = _setting(
        (),
        "Second address for RFC 5780 and RFC 3489 CHANGE-REQUEST (one per address family); "
        "enables NAT behaviour discovery.",
        parseAddress,
        repeatable=True,
    )
    alternate_server: tuple[tuple[str, int], ...] = _setting(
        (),
        "ADDR:PORT to redirect Binding requests to with 300 Try Alternate "
        "(one per address family).",
        parseHostPort,
        repeatable=True,
    )
    realm: str = _setting("p2pnet", "Realm of long-term credentials.")
    user: tuple[tuple[str, str], ...] = _setting(
        (),
        "Long-term credential NAME:PASSWORD; repeat for several users.",
        parseUser,
        repeatable=True,
        secret=True,
    )
    secure_stun: bool = _setting(
        False, "Answer only authenticated Binding requests (401 otherwise).", switch=True
    )
    nonce_lifetime: float = _setting(
        3600.0, "Seconds a NONCE stays valid before 438 Stale Nonce.", parseSeconds
    )
    max_connections: int = _setting(
        10000, "Most TCP/TLS connections open at once, all listeners.", parsePositiveInt
    )
    max_connections_per_ip: int = _setting(
        64, "Most TCP/TLS connections open at once from one client address.", parsePositiveInt
    )
    idle_timeout: float = _setting(
        300.0, "Seconds before a silent STUN TCP/TLS connection is closed.", parseSeconds
    )
    stun_request_rate: int = _setting(
        1000,
        "STUN/TURN requests without MESSAGE-INTEGRITY per second from one address "
        "(IPv6: one /64); more are dropped; 0 for no limit.",
        parseRate,
    )
    stun_error_rate: int = _setting(
        200,
        "Error answers (401, 400, 420...) per second to one address's unauthenticated "
        "STUN/TURN requests over UDP; more are dropped; 0 for no limit.",
        parseRate,
    )


@dataclass(frozen=True)
class _TurnSettings:
    """TURN settings (docs/turn.md). Part of L{Config}."""

    # turn
    auth_secret: str = _setting(
        "",
        "TURN REST API shared secret: usernames EXPIRY[:NAME], password "
        "base64(HMAC-SHA1(secret, username)) (coturn's static-auth-secret).",
        secret=True,
    )
    relay_ports: tuple[int, int] = _setting(
        (49152, 65535), "MIN-MAX range relayed ports are chosen from.", parsePortRange,
        sep="-",
    )
    relay_ip: tuple[str, ...] = _setting(
        (),
        "Address relayed sockets bind to and announce, one per family "
        "(default: the address the client reached).",
        parseAddress,
        repeatable=True,
    )
    external_ip: tuple[str, ...] = _setting(
        (),
        "PUBLIC[/PRIVATE]: this host's public address behind 1:1 NAT (AWS, GCP, Azure); "
        "relayed sockets bind PRIVATE (or the address they would bind) and clients are "
        "told PUBLIC (TURN relayed addresses, STUN RESPONSE-ORIGIN and OTHER-ADDRESS); "
        "repeatable, one per private address and one without per family.",
        parseExternalIp,
        repeatable=True,
    )
    no_tcp_relay: bool = _setting(
        False, "Refuse RFC 6062 TCP allocations (442), as coturn's no-tcp-relay.",
        switch=True,
    )
    allow_loopback_peers: bool = _setting(
        False, "Relay to 127.0.0.0/8 and ::1 peers (refused by default).", switch=True
    )
    allow_peer: tuple[str, ...] = _setting(
        (),
        "Peer address or CIDR to relay to even inside a refused range; repeatable.",
        parseNetwork,
        repeatable=True,
    )
    deny_peer: tuple[str, ...] = _setting(
        (), "Peer address or CIDR never relayed to; repeatable.", parseNetwork,
        repeatable=True,
    )
    max_allocations: int = _setting(
        10000, "Most TURN allocations at once (508 beyond).", parsePositiveInt
    )
    turn_redirect_above: int = _setting(
        0,
        "With a shared store: from this many allocations on, a new Allocate is answered 300 "
        "Try Alternate naming the node of the cluster holding the fewest (0: never).",
        parseCount,
    )
    user_quota: int = _setting(
        0,
        "Most TURN allocations (and EVEN-PORT reservations) per user, 486 beyond; 0: an "
        "eighth of relay-ports (2048 with the default range), so no user holds more than "
        "a quarter of the relayed ports.",
        parseCount,
    )
    ip_quota: int = _setting(
        0,
        "Most TURN allocations per client address, 486 beyond; 0: a sixteenth of "
        "relay-ports (1024 with the default range).",
        parseCount,
    )
    max_bps: int = _setting(
        0, "Bytes per second per allocation, each direction (0: no limit).", parseCount
    )
    bps_capacity: int = _setting(
        0, "Bytes per second for all allocations, each direction (0: no limit).", parseCount
    )
    max_lifetime: int = _setting(
        3600, "Longest allocation LIFETIME granted, in seconds (at least 600).",
        parsePositiveInt,
    )
    max_permissions: int = _setting(
        100, "Most permissions per allocation (508 beyond).", parsePositiveInt
    )
    max_channels: int = _setting(
        100, "Most channel bindings per allocation (508 beyond).", parsePositiveInt
    )
    fast_path: str = _setting(
        "auto",
        "TURN channel data relayed in the kernel by a BPF program (docs/fastpath.md): "
        "auto = when this host allows it (Linux 6.6+, root or CAP_BPF+CAP_NET_ADMIN, the "
        "program built), else one log line and the Python path; on = a start-up error "
        "instead; off = never.",
        parseChoice("auto", "on", "off"),
    )


@dataclass(frozen=True)
class _RustDeskSettings:
    """RustDesk rendezvous and relay settings (docs/rustdesk.md). Part of L{Config}."""

    # rendezvous / relay (RustDesk)
    rendezvous_port: int = _setting(
        21116,
        "RustDesk rendezvous (hbbs) port, UDP and TCP; the NAT-test port is one below it "
        "and the WebSocket port two above (0: ephemeral ports for all three).",
        parsePort,
    )
    relay_port: int = _setting(
        21117,
        "RustDesk relay (hbbr) TCP port; its WebSocket port is two above "
        "(0: ephemeral ports for both).",
        parsePort,
    )
    key: str = _setting(
        "-",
        "RustDesk key, as hbbs -k: '-' or '_' = the key pair in data-dir (generated on first "
        "start) and clients must give its public key; '' = sign with that pair but check "
        "nothing; base64 of a 64-byte secret key = use it; any other text = required "
        "verbatim, nothing signed.",
        secret=True,
        env="KEY",
    )
    relay_key: str = _setting(
        "",
        "Key relay legs must send, as hbbr -k: '' = no check; '-' or '_' = the rendezvous "
        "public key; base64 secret key = its public half; other text = verbatim.",
        secret=True,
        env="KEY",
    )
    relay_servers: tuple[str, ...] = _setting(
        (),
        "Relay servers handed to RustDesk peers, comma-separated host[:port] (default port "
        "21117), chosen round-robin among the reachable ones; empty = peers use this "
        "host's relay.",
        parseRelayServers,
        sep=",",
        env="RELAY_SERVERS",
    )
    always_use_relay: bool = _setting(
        False, "Make every RustDesk connection go through the relay.", switch=True,
        env="ALWAYS_USE_RELAY",
    )
    mask: ipaddress.IPv4Network | None = _setting(
        None,
        "LAN of this server (CIDR, as hbbs --mask): peers inside it get this host's "
        "local-ip as relay, and two peers inside it connect directly.",
        parseIPv4Network,
    )
    local_ip: str = _setting(
        "",
        "This host's LAN address for --mask (default: detected).",
        parseAddress,
        env="LOCAL_IP",
    )
    software_url: str = _setting(
        "",
        "Download URL of the newest RustDesk client, as hbbs -u (deprecated there): "
        "answered to SoftwareUpdate requests whose version differs from the one in the URL.",
    )
    rendezvous_keep_alive: int = _setting(
        30,
        "Seconds announced to peers registered over TCP/WebSocket; the server sends a "
        "heartbeat every half of it and drops a link silent for 1.5 times it.",
        parsePositiveInt,
    )
    rendezvous_udp_rate: int = _setting(
        200,
        "Datagrams per second accepted from one IP address on the rendezvous UDP port "
        "(bursts of twice that); more are dropped and counted (0: no limit).",
        parseRate,
    )
    rendezvous_tcp_rate: int = _setting(
        500,
        "Messages per second handled from one source address (IPv6: its /64) over the "
        "rendezvous TCP and WebSocket ports together (bursts of twice that); above it "
        "the source's connections stop being read until the budget refills (0: no limit).",
        parseRate,
    )
    rendezvous_connections_per_ip: int = _setting(
        1000,
        "Most rendezvous TCP/WebSocket connections open at once from one source address "
        "(IPv6: its /64); clients registered over TCP or WebSocket hold one each.",
        parsePositiveInt,
    )
    rendezvous_max_peers: int = _setting(
        200000,
        "Most RustDesk peers held in memory (peers out of contact for two minutes are "
        "dropped from memory first; the registry on disk keeps them).",
        parsePositiveInt,
    )
    rendezvous_register_rate: int = _setting(
        20,
        "RegisterPk per second accepted from one source address (IPv6: its /64), in bursts "
        "of rendezvous-register-burst; more are answered TOO_FREQUENT.",
        parsePositiveInt,
    )
    rendezvous_register_burst: int = _setting(
        200,
        "RegisterPk one source address may send at once (a NAT full of clients after a "
        "restart).",
        parsePositiveInt,
    )
    rendezvous_ids_per_ip: int = _setting(
        1000,
        "New RustDesk ids one source address may create per day; more are answered "
        "TOO_FREQUENT (0: no limit).",
        parseCount,
    )
    relay_bandwidth: float = _setting(
        128.0, "Relay limit per pair, both directions, in Mb/s (0: none).", parseBandwidth,
        env="SINGLE_BANDWIDTH",
    )
    relay_total_bandwidth: float = _setting(
        1024.0, "Relay limit for all pairs together, in Mb/s (0: none).", parseBandwidth,
        env="TOTAL_BANDWIDTH",
    )
    relay_limit_speed: float = _setting(
        32.0,
        "Relay limit per pair with an address in data-dir/blacklist.txt, in Mb/s (0: none).",
        parseBandwidth,
        env="LIMIT_SPEED",
    )
    relay_downgrade_threshold: float = _setting(
        0.66,
        "A pair averaging more than this fraction of relay-bandwidth after "
        "relay-downgrade-start seconds is limited to relay-limit-speed (0: never).",
        float,
        env="DOWNGRADE_THRESHOLD",
    )
    relay_downgrade_start: float = _setting(
        1800.0, "Seconds a relay pair runs before the downgrade check applies.", parseSeconds,
        env="DOWNGRADE_START_CHECK",
    )
    relay_idle_timeout: float = _setting(
        30.0, "Seconds without data in either direction before a relay pair is closed.",
        parseSeconds,
    )


@dataclass(frozen=True)
class _GatewaySettings:
    """Control gateway settings (docs/gateway.md). Part of L{Config}."""

    # gateway
    gateway_port: int = _setting(18789, "Control gateway HTTP+WebSocket port.", parsePort)
    gateway_tls: bool = _setting(
        False, "Serve the gateway over TLS (wss://, https://) with tls-cert.", switch=True
    )
    gateway_auth: str = _setting(
        "",
        "Gateway auth mode: token, password, none (loopback only) or trusted-proxy "
        "(default: password if gateway-password is set, else token).",
        parseGatewayAuth,
    )
    gateway_token: str = _setting(
        "",
        "Shared gateway token (default: generated into data-dir on first start).",
        secret=True,
        env="P2PNET_GATEWAY_TOKEN",
    )
    gateway_password: str = _setting(
        "", "Shared gateway password.", secret=True, env="P2PNET_GATEWAY_PASSWORD"
    )
    trusted_proxy: tuple[str, ...] = _setting(
        (),
        "Address or CIDR of a reverse proxy whose X-Forwarded-For the gateway believes.",
        parseNetwork,
        repeatable=True,
    )
    gateway_proxy_user_header: str = _setting(
        "", "trusted-proxy mode: header carrying the authenticated user.", parseHeaderName
    )
    gateway_proxy_required_header: tuple[str, ...] = _setting(
        (),
        "trusted-proxy mode: header the proxy must also send.",
        parseHeaderName,
        repeatable=True,
    )
    gateway_proxy_allow_user: tuple[str, ...] = _setting(
        (), "trusted-proxy mode: user allowed in (default: any).", repeatable=True
    )
    allowed_origin: tuple[str, ...] = _setting(
        (),
        "Browser origin (scheme://host[:port], or *) allowed to open the gateway.",
        parseOrigin,
        repeatable=True,
    )
    handshake_timeout: float = _setting(
        10.0, "Seconds a gateway client has to complete connect.", parseSeconds
    )
    gateway_limit_loopback: bool = _setting(
        False, "Rate-limit failed gateway auth from loopback addresses too.", switch=True
    )


@dataclass(frozen=True)
class _NodeSettings:
    """KVM node settings (docs/kvm-node.md). Part of L{Config}."""

    # node (the KVM node; docs/kvm-node.md)
    node_id: str = _setting(
        "", "The node's RustDesk id (default: 9 digits made on first start, kept in "
        "data-dir).", parseNodeId,
    )
    node_password: str = _setting(
        "",
        "Password viewers log in with (default: the stored one, else generated and "
        "printed once; only a salted hash is stored).",
        secret=True,
        env="P2PNET_NODE_PASSWORD",
    )
    node_server: str = _setting(
        "",
        "Rendezvous server HOST[:PORT] the node registers with (default: this host, "
        "127.0.0.1 and rendezvous-port).",
        parseServerAddress,
    )
    node_key: str = _setting(
        "", "The rendezvous server's public key (a RustDesk client's 'Key' field)."
    )
    node_relay: str = _setting(
        "", "Relay HOST[:PORT] used instead of the one the server names.",
        parseServerAddress,
    )
    node_transport: str = _setting(
        "udp",
        "Register over udp (as RustDesk), or over a kept tcp or ws link (p2pnet's "
        "rendezvous server; for networks that block UDP).",
        parseChoice("udp", "tcp", "ws"),
    )
    node_video: str = _setting(
        "testsrc",
        "Video source: testsrc[:WxH], file:PATH (Annex-B, looped), pipe:SHELL-LINE (Annex-B on "
        "stdout) or v4l2:/dev/videoN.",
        parseVideoSource,
    )
    node_codec: str = _setting("h264", "Video codec: h264 or h265.",
                               parseChoice("h264", "h265"))
    node_fps: int = _setting(30, "Frames per second of the encoder.", parsePositiveInt)
    node_bitrate: int = _setting(
        4_000_000, "Encoder bitrate in bits per second (4M, 2500k, ...).", parseBitrate
    )
    node_keyboard: str = _setting(
        "", "Where keyboard HID reports go: /dev/hidg0 or a file (default: nowhere)."
    )
    node_mouse: str = _setting(
        "", "Where mouse HID reports go: /dev/hidg1 or a file (default: nowhere)."
    )
    node_direct_port: int = _setting(
        0,
        "RustDesk direct IP access port (unencrypted, password only; 0: off; RustDesk "
        "uses 21118).",
        parsePort,
    )
    node_max_viewers: int = _setting(4, "Most viewers logged in at once.", parsePositiveInt)
    node_gateway: str = _setting(
        "", "Control gateway ws:// or wss:// URL to join as role=node (default: none).",
        parseGatewayUrl,
    )
    node_gateway_token: str = _setting(
        "", "Gateway token for node-gateway.", secret=True, env="P2PNET_NODE_GATEWAY_TOKEN"
    )
    node_gateway_password: str = _setting(
        "", "Gateway password for node-gateway.", secret=True,
        env="P2PNET_NODE_GATEWAY_PASSWORD",
    )


@dataclass(frozen=True)
class Config(  # fields in the order: general, STUN, TURN, RustDesk, gateway, node
    _NodeSettings,
    _GatewaySettings,
    _RustDeskSettings,
    _TurnSettings,
    _StunSettings,
    _GeneralSettings,
):
    """Every setting of the appliance, with its embedded default.

    Build one with L{loadConfig} (file plus flags) or directly for embedding, e.g.
    C{Config(services=("stun",), listen=("127.0.0.1",), stun_port=0)}; L{Config.check}
    validates the combination either way. The fields are declared in one class per
    group of settings (a dataclass collects its bases' fields, the last base's first),
    so no class holds them all.
    """

    def check(self) -> Config:
        """Validate the combination of settings; return C{self} or raise L{ConfigError}."""
        for name in self.services:
            if name not in SERVICES:
                raise ConfigError("services", f"unknown service {name!r}")
        ports = {"stun-port": self.stun_port, "tls-port": self.tls_port}
        if self.alt_listen:
            ports["alt-port"] = self.alt_port
        seen: dict[int, str] = {}
        for key, port in ports.items():
            if port and port in seen:
                raise ConfigError(key, f"port {port} is also {seen[port]}")
            seen[port] = key
        if "rendezvous" in self.services and self.rendezvous_port:
            if not 1 <= self.rendezvous_port <= 65533:
                raise ConfigError(
                    "rendezvous-port", "must leave room for port - 1 and port + 2 (1..65533)"
                )
        if "relay" in self.services and self.relay_port and self.relay_port > 65533:
            raise ConfigError("relay-port", "must leave room for port + 2 (at most 65533)")
        rustdesk: dict[str, tuple[int, ...]] = {}
        if "rendezvous" in self.services and self.rendezvous_port:
            p = self.rendezvous_port
            rustdesk["rendezvous-port"] = (p - 1, p, p + 2)
        if "relay" in self.services and self.relay_port:
            rustdesk["relay-port"] = (self.relay_port, self.relay_port + 2)
        taken = dict(seen) if {"stun", "turn"} & set(self.services) else {}
        for key, group in rustdesk.items():
            for port in group:
                if port in taken and taken[port] != key:
                    raise ConfigError(key, f"port {port} is also used by {taken[port]}")
                taken[port] = key
        if not 0 <= self.relay_downgrade_threshold <= 1:
            raise ConfigError("relay-downgrade-threshold", "must be from 0 to 1")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError(
                "tls-key" if self.tls_cert else "tls-cert", "set tls-cert and tls-key together"
            )
        families = [ipaddress.ip_address(a).version for a in self.alt_listen]
        if len(set(families)) != len(families):
            raise ConfigError("alt-listen", "give at most one address per address family")
        for alt in self.alt_listen:
            version = ipaddress.ip_address(alt).version
            primaries = [
                a for a in self.listen if ipaddress.ip_address(a).version == version
            ]
            if len(primaries) != 1 or ipaddress.ip_address(primaries[0]).is_unspecified:
                raise ConfigError(
                    "alt-listen",
                    f"{alt} needs exactly one specific --listen address of IPv{version} "
                    "to pair with (RFC 5780 answers name both addresses)",
                )
            if primaries[0] == alt:
                raise ConfigError("alt-listen", f"{alt} is the --listen address itself")
        if not self.realm:
            raise ConfigError("realm", "must not be empty")
        if "turn" in self.services:
            self._checkTurn()
        if "gateway" in self.services:
            self._checkGateway()
        if "node" in self.services:
            self._checkNode()
        return self

    def _checkNode(self) -> None:
        if self.node_gateway_token and self.node_gateway_password:
            raise ConfigError("node-gateway-password", "give a token or a password, not both")
        if (self.node_gateway_token or self.node_gateway_password) and not self.node_gateway:
            raise ConfigError("node-gateway", "required with node-gateway-token/password")
        if (self.node_direct_port and "rendezvous" in self.services
                and self.node_direct_port in (self.rendezvous_port - 1, self.rendezvous_port,
                                              self.rendezvous_port + 2)):
            raise ConfigError("node-direct-port", "is a port of the rendezvous service")

    def _checkTurn(self) -> None:
        families = [ipaddress.ip_address(a).version for a in self.relay_ip]
        if len(set(families)) != len(families):
            raise ConfigError("relay-ip", "give at most one address per address family")
        for address in self.relay_ip:
            if ipaddress.ip_address(address).is_unspecified:
                raise ConfigError("relay-ip", f"{address} is not a specific address")
        try:
            ExternalAddresses(self.external_ip)
        except ValueError as e:
            raise ConfigError("external-ip", str(e)) from None
        if self.max_lifetime < 600:
            raise ConfigError("max-lifetime", "must be at least 600 (the RFC 8656 default)")
        low, high = self.relay_ports
        if self.stun_port and low <= self.stun_port <= high:
            raise ConfigError("relay-ports", f"the range holds stun-port {self.stun_port}")

    def _checkGateway(self) -> None:
        mode = self.gateway_auth or ("password" if self.gateway_password else "token")
        if mode == "password" and not self.gateway_password:
            raise ConfigError("gateway-password", "required with gateway-auth password")
        if mode == "trusted-proxy":
            if self.gateway_token:
                raise ConfigError("gateway-token", "cannot be combined with trusted-proxy auth")
            if not self.gateway_proxy_user_header:
                raise ConfigError("gateway-proxy-user-header", "required with trusted-proxy")
            if not self.trusted_proxy:
                raise ConfigError("trusted-proxy", "required with gateway-auth trusted-proxy")
        if mode == "none":
            if not self.listen or not all(
                ipaddress.ip_address(a).is_loopback for a in self.listen
            ):
                raise ConfigError(
                    "gateway-auth", "none needs every --listen address to be loopback"
                )


def settings() -> tuple[Setting, ...]:
    """Every setting, in declaration order."""
    return tuple(
        Setting(
            key=f.name.replace("_", "-"),
            attr=f.name,
            default=f.default,
            help=f.metadata["help"],
            parse=f.metadata["parse"],
            repeatable=f.metadata["repeatable"],
            switch=f.metadata["switch"],
            secret=f.metadata["secret"],
            env=f.metadata["env"],
            sep=f.metadata["sep"],
        )
        for f in fields(Config)
    )


def fileSettings() -> dict[str, Setting]:
    """C{KEY-file} to the secret setting it reads from a file, for every secret setting."""
    return {s.key + FILE_SUFFIX: s for s in settings() if s.secret}


def readSecretFile(path: str, key: str) -> str:
    """The secret in file C{path}: its text without the final line break.

    @param key: the setting named in errors (C{auth-secret-file}).
    @raise ConfigError: the file cannot be read or is not UTF-8.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(key, f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(key, f"{path} is not UTF-8 text") from None
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    return text


def _fromFile(s: Setting, path: Any, fileKey: str) -> Any:
    if not isinstance(path, str) or not path:
        raise ConfigError(fileKey, "expected a file name")
    text = readSecretFile(path, fileKey)
    if s.repeatable:
        lines = [line.rstrip("\r") for line in text.split("\n")]
        return tuple(_fromText(s, line) for line in lines if line)
    return _fromText(s, text)


def _fromText(s: Setting, text: str) -> Any:
    try:
        return s.parse(text)
    except (ValueError, TypeError) as e:
        shown = "(hidden)" if s.secret else repr(text)
        raise ConfigError(s.key, f"bad value {shown}: {e}") from None


def _fromEnv(s: Setting, text: str) -> Any:
    """A setting's value from its environment variable; a switch takes C{Y}/C{N} as
    hbbs reads C{ALWAYS_USE_RELAY}, and C{yes}/C{no}, C{true}/C{false}, C{1}/C{0}."""
    if not s.switch:
        return _fromText(s, text)
    word = text.strip().lower()
    if word in ("y", "yes", "true", "1", "on"):
        return True
    if word in ("n", "no", "false", "0", "off"):
        return False
    raise ConfigError(s.key, f"bad value {text!r} in ${s.env}: expected Y or N")


def _fromToml(s: Setting, value: Any) -> Any:
    if s.switch:
        if not isinstance(value, bool):
            raise ConfigError(s.key, "expected true or false")
        return value
    if s.repeatable:
        items = value if isinstance(value, list) else [value]
        return tuple(_fromToml(replace(s, repeatable=False), item) for item in items)
    if isinstance(value, list) and s.sep is not None:
        for item in value:
            if isinstance(item, bool) or not isinstance(item, str | int):
                raise ConfigError(s.key, f"expected strings or numbers in the array, not "
                                  f"{type(item).__name__}")
        return _fromText(s, s.sep.join(str(item) for item in value))
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(s.key, f"expected a string or number, not {type(value).__name__}")
    return _fromText(s, str(value))


def _notBoth(s: Setting, fileKey: str, given: Mapping[str, Any]) -> None:
    if s.key in given:
        raise ConfigError(fileKey, f"give {s.key} or {fileKey}, not both")


def readToml(path: str) -> dict[str, Any]:
    """Read a TOML file into a flat mapping of key to raw value."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError("config", f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("config", f"{path} is not valid TOML: {e}") from None
    return data


def loadConfig(
    flags: Mapping[str, Any] | None = None,
    configFile: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Combine embedded defaults, a TOML file, the environment and flags, then check.

    @param flags: key to value as given on the command line: a string, C{True} for a
        switch, or a list of strings for a repeatable setting.
    @param configFile: path of a TOML file whose top-level keys are setting keys.
    @param environ: the environment (default C{os.environ}) for settings that read one.
    """
    flags = dict(flags or {})
    environ = os.environ if environ is None else environ
    table = {s.key: s for s in settings()}
    files = fileSettings()
    values: dict[str, Any] = {}
    if configFile:
        data = readToml(configFile)
        for key, raw in data.items():
            if key in files:
                _notBoth(files[key], key, data)
                values[files[key].attr] = _fromFile(files[key], raw, key)
                continue
            if key not in table:
                raise ConfigError(key, f"unknown setting in {configFile}")
            values[table[key].attr] = _fromToml(table[key], raw)
    for key in [k for k in flags if k in files]:
        s = files[key]
        _notBoth(s, key, flags)
        values[s.attr] = _fromFile(s, flags.pop(key), key)
        flags.pop(s.key, None)
    given = {s.key for s in files.values() if s.attr in values}
    for s in table.values():
        if (s.env and s.attr not in values and s.key not in flags and s.key not in given
                and environ.get(s.env)):
            values[s.attr] = _fromEnv(s, environ[s.env])
    for key, raw in flags.items():
        if key not in table:
            raise ConfigError(key, "unknown setting")
        s = table[key]
        if s.switch:
            values[s.attr] = bool(raw)
        elif s.repeatable:
            items: Iterable[str] = [raw] if isinstance(raw, str) else raw
            values[s.attr] = tuple(_fromText(s, item) for item in items)
        else:
            values[s.attr] = _fromText(s, raw)
    return Config(**values).check()


def nodeName(config: Config) -> str:
    """This appliance's name among the nodes of a shared store: C{node-name}, else the
    host name."""
    import socket

    return config.node_name or socket.gethostname()

