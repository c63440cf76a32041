# -*- test-case-name: test.unit.test_gateway_policy -*-
"""Policy of the control gateway's front door, as plain functions and small classes.

Client address resolution through trusted proxies, local-direct detection, the origin
check, the failed-auth rate limiter, the shared-secret decision, the missing-device
decision table and method authorisation by role and scope. Time comes from an
injected C{IReactorTime}; nothing here touches a socket.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from twisted.internet.interfaces import IReactorTime

from p2pnet.addresses import isLoopback, normalizeIp, parseIp, sourceKey
from p2pnet.boundedmap import BoundedMap

__all__ = [
    "AuthConfig",
    "AuthResult",
    "METHOD_SCOPES",
    "NODE_METHODS",
    "PreauthBudget",
    "RateLimiter",
    "Scope",
    "authorizeMethod",
    "authorizeShared",
    "checkOrigin",
    "hasForwardingHeaders",
    "isLocalDirect",
    "missingDeviceDecision",
    "resolveClientIp",
    "secretEqual",
]

#: Headers whose presence means a request went through a proxy.
FORWARDING_HEADERS = (
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-real-ip",
    "x-forwarded-host",
)

#: Key of the shared bucket for addresses that cannot be resolved (fail closed).
UNKNOWN_IP = "unknown"


def secretEqual(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets (hashed first, so lengths do not leak)."""
    return hmac.compare_digest(
        hashlib.sha256(given.encode("utf-8")).digest(),
        hashlib.sha256(expected.encode("utf-8")).digest(),
    )


# -- addresses ----------------------------------------------------------------------------


Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]


def _trusted(ip: str, proxies: Networks) -> bool:
    address = parseIp(ip)
    return address is not None and any(address in net for net in proxies)


def hasForwardingHeaders(headers: Mapping[str, str]) -> bool:
    """Whether any forwarding header is present (C{headers} keys are lowercase)."""
    return any(name in headers for name in FORWARDING_HEADERS)


def isLocalDirect(remote: str, headers: Mapping[str, str]) -> bool:
    """A loopback socket with no forwarding header (the Host header is not consulted)."""
    return isLoopback(remote) and not hasForwardingHeaders(headers)


def resolveClientIp(
    remote: str,
    headers: Mapping[str, str],
    proxies: Networks,
    allowRealIpFallback: bool = False,
) -> str | None:
    """The client's address; C{None} when a trusted proxy does not say (fail closed).

    An untrusted peer is the client whatever its headers say. Through a trusted proxy,
    X-Forwarded-For is walked right to left past loopback and trusted hops; the proxy's
    own address is never used (gateway.md §4.2). C{headers["x-forwarded-for"]} must hold
    every line of the header joined with commas, as RFC 9110 §5.3 combines them: a proxy
    that appends its own line (HAProxy C{option forwardfor}) puts the address it saw
    last, so a line the client wrote itself, first, is never the one read.
    """
    if not _trusted(remote, proxies):
        return normalizeIp(remote)
    for hop in reversed(headers.get("x-forwarded-for", "").split(",")):
        address = normalizeIp(hop)
        if address is None or isLoopback(address) or _trusted(address, proxies):
            continue
        return address
    if allowRealIpFallback:
        return normalizeIp(headers.get("x-real-ip"))
    return None


# -- origin --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OriginCheck:
    """Outcome of L{checkOrigin}: C{ok}, and how it matched or why it failed."""

    ok: bool
    reason: str


def _origin(text: str | None) -> tuple[str, str] | None:
    """C{(scheme://host[:port], hostname)} of an Origin header, lowercased, or C{None}."""
    if not text or text.strip().lower() == "null":
        return None
    try:
        parts = urlsplit(text.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else ""), parts.hostname


def checkOrigin(origin: str | None, allowed: Iterable[str], localDirect: bool) -> OriginCheck:
    """The browser origin rules of gateway.md §4.1, in order."""
    parsed = _origin(origin)
    if parsed is None:
        return OriginCheck(False, "origin missing or invalid")
    normal, hostname = parsed
    entries = {entry.strip().lower().rstrip("/") for entry in allowed}
    if "*" in entries or normal in entries:
        return OriginCheck(True, "allowlist")
    if localDirect and (hostname == "localhost" or isLoopback(hostname)):
        return OriginCheck(True, "local-loopback")
    return OriginCheck(False, "origin not allowed")


# -- rate limiting -------------------------------------------------------------------------


class Scope:
    """Rate-limiter scopes; each keeps its own count for the same address."""

    DEFAULT = "default"
    SHARED_SECRET = "shared-secret"
    DEVICE_TOKEN = "device-token"


@dataclass
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    lockedUntil: float = 0.0


@dataclass(frozen=True)
class RateLimitCheck:
    """Whether an attempt may go on; C{retryAfterMs} when locked out."""

    allowed: bool
    remaining: int
    retryAfterMs: int = 0


class RateLimiter:
    """Sliding-window failed-auth limiter keyed by scope and source (gateway.md §3.3).

    C{maxAttempts} failures within C{window} seconds lock the key out for C{lockout}
    seconds; failures during a lockout do not extend it; a success resets only its
    scope. A source is an IPv4 address or an IPv6 /64 (L{p2pnet.addresses.sourceKey}:
    one subscriber holds a whole /64, so counting per /128 would give it unlimited
    attempts). The table is a L{BoundedMap} of at most C{maxEntries} keys: when it is
    full the least recently failing key is forgotten.
    """

    def __init__(
        self,
        clock: IReactorTime,
        maxAttempts: int = 10,
        window: float = 60.0,
        lockout: float = 300.0,
        exemptLoopback: bool = True,
        maxEntries: int = 10_000,
    ) -> None:
        self._clock = clock
        self.maxAttempts = maxAttempts
        self.window = window
        self.lockout = lockout
        self.exemptLoopback = exemptLoopback
        self.maxEntries = maxEntries
        self._entries: BoundedMap[str, _Entry] = BoundedMap(maxEntries)

    def _key(self, ip: str | None, scope: str) -> str | None:
        address = normalizeIp(ip)
        if address is None:
            address = ip.strip() if ip and ip.strip() else UNKNOWN_IP
        elif self.exemptLoopback and isLoopback(address):
            return None
        else:
            address = sourceKey(address)
        return f"{scope}:{address}"

    def _slide(self, entry: _Entry, now: float) -> None:
        start = now - self.window
        failures = entry.failures
        while failures and failures[0] <= start:
            failures.popleft()

    def check(self, ip: str | None, scope: str = Scope.DEFAULT) -> RateLimitCheck:
        """May C{ip} try to authenticate in C{scope} now?"""
        key = self._key(ip, scope)
        entry = self._entries.peek(key) if key is not None else None
        if entry is None:
            return RateLimitCheck(True, self.maxAttempts)
        now = self._clock.seconds()
        if entry.lockedUntil > now:
            return RateLimitCheck(False, 0, int((entry.lockedUntil - now) * 1000 + 0.999))
        self._slide(entry, now)
        return RateLimitCheck(True, max(0, self.maxAttempts - len(entry.failures)))

    def recordFailure(self, ip: str | None, scope: str = Scope.DEFAULT) -> None:
        """Count one failed attempt; lock the key when the window is full."""
        key = self._key(ip, scope)
        if key is None:
            return
        now = self._clock.seconds()
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        if entry.lockedUntil > now:
            return
        self._slide(entry, now)
        entry.failures.append(now)
        if len(entry.failures) >= self.maxAttempts:
            entry.lockedUntil = now + self.lockout

    def reset(self, ip: str | None, scope: str = Scope.DEFAULT) -> None:
        """Forget C{ip}'s failures in C{scope} (after a success)."""
        key = self._key(ip, scope)
        if key is not None:
            self._entries.pop(key, None)

    def prune(self) -> None:
        """Drop keys with no recent failure and no running lockout."""
        now = self._clock.seconds()
        for key in list(self._entries):
            entry = self._entries.peek(key)
            assert entry is not None
            self._slide(entry, now)
            if not entry.failures and entry.lockedUntil <= now:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


#: Synthetic address for loopback browser clients whose origin cannot be parsed.
BROWSER_FALLBACK_IP = "198.18.0.1"


def browserLimiterKey(clientIp: str | None, origin: str) -> str:
    """What the browser limiter counts: the origin for loopback clients, else the address."""
    if not isLoopback(clientIp):
        return clientIp or UNKNOWN_IP
    parsed = _origin(origin)
    return f"browser-origin:{parsed[0]}" if parsed else BROWSER_FALLBACK_IP


def _budgetKey(ip: str | None) -> str:
    return sourceKey(ip) if ip else UNKNOWN_IP


class PreauthBudget:
    """At most C{limit} unauthenticated sockets per source (an IPv4 address or an IPv6
    /64, L{p2pnet.addresses.sourceKey}).

    Entries vanish when their count drops to zero, so the table holds only sources
    with sockets open; unresolvable addresses share one bucket (gateway.md §3.3).
    """

    def __init__(self, limit: int = 32) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, ip: str | None) -> bool:
        """Take a slot for C{ip}; C{False} when its budget is spent."""
        key = _budgetKey(ip)
        count = self._open.get(key, 0)
        if count >= self.limit:
            return False
        self._open[key] = count + 1
        return True

    def release(self, ip: str | None) -> None:
        """Give back a slot taken by L{acquire}."""
        key = _budgetKey(ip)
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)

    def count(self, ip: str | None) -> int:
        """Slots in use by C{ip}."""
        return self._open.get(_budgetKey(ip), 0)


# -- shared-secret auth --------------------------------------------------------------------


@dataclass(frozen=True)
class AuthConfig:
    """The gateway's auth settings (see L{p2pnet.config.Config} C{gateway_*})."""

    mode: str
    token: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    trustedProxies: Networks = ()
    userHeader: str = ""
    requiredHeaders: tuple[str, ...] = ()
    allowUsers: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthResult:
    """Outcome of L{authorizeShared}.

    @ivar reason: why it failed (C{token_mismatch}, ...), C{None} when nothing was sent.
    @ivar method: C{token}, C{password}, C{none} or C{trusted-proxy} on success.
    """

    ok: bool
    method: str | None = None
    reason: str | None = None
    user: str | None = None
    retryAfterMs: int = 0
    counted: bool = False


def _trustedProxyAuth(
    config: AuthConfig, remote: str, headers: Mapping[str, str]
) -> AuthResult:
    if not config.trustedProxies:
        return AuthResult(False, reason="trusted_proxy_no_proxies_configured")
    if not _trusted(remote, config.trustedProxies):
        return AuthResult(False, reason="trusted_proxy_untrusted_source")
    if isLoopback(remote):
        return AuthResult(False, reason="trusted_proxy_loopback_source")
    for name in config.requiredHeaders:
        if not headers.get(name.lower(), "").strip():
            return AuthResult(False, reason=f"trusted_proxy_missing_header_{name.lower()}")
    user = headers.get(config.userHeader.lower(), "").strip()
    if not user:
        return AuthResult(False, reason="trusted_proxy_user_missing")
    if config.allowUsers and user not in config.allowUsers:
        return AuthResult(False, reason="trusted_proxy_user_not_allowed")
    return AuthResult(True, method="trusted-proxy", user=user)


def authorizeShared(
    config: AuthConfig,
    auth: Mapping[str, str],
    remote: str,
    headers: Mapping[str, str],
    limiter: RateLimiter,
    rateIp: str | None,
    localDirect: bool,
) -> AuthResult:
    """The shared-secret part of a connect (gateway.md §3.2).

    A missing credential is not counted as a failure; a wrong one is (C{counted}).
    """
    if config.mode == "trusted-proxy":
        return _trustedProxyAuth(config, remote, headers)
    if config.mode == "none":
        if localDirect:
            return AuthResult(True, method="none")
        return AuthResult(False, reason="none_requires_loopback")
    state = limiter.check(rateIp, Scope.SHARED_SECRET)
    if not state.allowed:
        return AuthResult(False, reason="rate_limited", retryAfterMs=state.retryAfterMs)
    expected = config.token if config.mode == "token" else config.password
    given = auth.get(config.mode)
    if not expected:
        return AuthResult(False, reason=f"{config.mode}_missing_config")
    if not given:
        return AuthResult(False, reason=f"{config.mode}_missing")
    if not secretEqual(given, expected):
        limiter.recordFailure(rateIp, Scope.SHARED_SECRET)
        return AuthResult(False, reason=f"{config.mode}_mismatch", counted=True)
    limiter.reset(rateIp, Scope.SHARED_SECRET)
    return AuthResult(True, method=config.mode)


#: Auth failure reason to C{error.details.code} (gateway.md §3.5).
_DETAIL_CODES = {
    "token_missing": "AUTH_TOKEN_MISSING",
    "token_mismatch": "AUTH_TOKEN_MISMATCH",
    "token_missing_config": "AUTH_TOKEN_NOT_CONFIGURED",
    "password_missing": "AUTH_PASSWORD_MISSING",
    "password_mismatch": "AUTH_PASSWORD_MISMATCH",
    "password_missing_config": "AUTH_PASSWORD_NOT_CONFIGURED",
    "bootstrap_token_invalid": "AUTH_BOOTSTRAP_TOKEN_INVALID",
    "rate_limited": "AUTH_RATE_LIMITED",
    "device_token_mismatch": "AUTH_DEVICE_TOKEN_MISMATCH",
}

_MESSAGES = {
    "token_missing": "unauthorized: gateway token missing (set the token in auth.token)",
    "token_mismatch": "unauthorized: gateway token mismatch (check the gateway token)",
    "token_missing_config": "unauthorized: gateway token not configured on the gateway",
    "password_missing": "unauthorized: gateway password missing (set auth.password)",
    "password_mismatch": "unauthorized: gateway password mismatch",
    "password_missing_config": "unauthorized: gateway password not configured",
    "rate_limited": "unauthorized: too many failed authentication attempts (retry later)",
    "device_token_mismatch": "unauthorized: device token mismatch (re-pair this device)",
}


def detailCode(reason: str | None) -> str:
    """C{details.code} for an auth failure reason."""
    if reason is None:
        return "AUTH_REQUIRED"
    return _DETAIL_CODES.get(reason, "AUTH_UNAUTHORIZED")


def unauthorizedMessage(reason: str | None) -> str:
    """The error message for an auth failure reason."""
    if reason is None:
        return "unauthorized: authentication required"
    return _MESSAGES.get(reason, f"unauthorized: {reason.replace('_', ' ')}")


def nextStep(reason: str | None, hasDevice: bool, sentDeviceToken: bool) -> str:
    """C{details.recommendedNextStep} for an auth failure reason."""
    if reason == "token_mismatch" and hasDevice and not sentDeviceToken:
        return "retry_with_device_token"
    if reason == "rate_limited":
        return "wait_then_retry"
    if reason is not None and reason.endswith("_missing_config"):
        return "update_auth_configuration"
    if reason is not None and reason.startswith("trusted_proxy"):
        return "review_auth_configuration"
    return "update_auth_credentials"


# -- missing device ------------------------------------------------------------------------


CONTROL_UI_IDS = frozenset({"openclaw-control-ui"})
WEBCHAT_IDS = frozenset({"webchat-ui", "webchat"})


def isControlUi(clientId: str) -> bool:
    """The browser Control UI client."""
    return clientId in CONTROL_UI_IDS


def isBrowserClient(clientId: str, mode: str) -> bool:
    """Clients that always get the origin check (Control UI and webchat)."""
    return clientId in CONTROL_UI_IDS or clientId in WEBCHAT_IDS or mode == "webchat"


@dataclass(frozen=True)
class DeviceDecision:
    """What to do with a connect that carries no device identity.

    @ivar kind: C{allow}, C{unauthorized}, C{control-ui} or C{device-required}.
    @ivar keepScopes: an allowed connect keeps its requested scopes.
    """

    kind: str
    keepScopes: bool = False


def missingDeviceDecision(
    *,
    clientId: str,
    clientMode: str,
    role: str,
    shared: AuthResult,
    sharedSent: bool,
    localDirect: bool,
) -> DeviceDecision:
    """The device-less decision table (gateway.md §3.4 and §9)."""
    if isControlUi(clientId):
        if role == "operator" and shared.ok and shared.method == "trusted-proxy":
            return DeviceDecision("allow", keepScopes=True)
        return DeviceDecision("control-ui")
    if role == "operator" and shared.ok:
        keep = localDirect and (clientId, clientMode) in {
            ("cli", "cli"),
            ("gateway-client", "backend"),
        }
        return DeviceDecision("allow", keepScopes=keep)
    if sharedSent and not shared.ok:
        return DeviceDecision("unauthorized")
    return DeviceDecision("device-required")


# -- methods -------------------------------------------------------------------------------

#: Methods only a C{role=node} connection may call.
NODE_METHODS = frozenset(
    {
        "node.invoke.result",
        "node.event",
        "node.pending.drain",
        "node.pending.pull",
        "node.pending.ack",
        "node.canvas.capability.refresh",
        "node.invoke.progress",
        "node.pluginSurface.refresh",
        "node.pluginTools.update",
        "node.skills.update",
        "node.runnerInventory.update",
        "skills.bins",
    }
)

READ, WRITE, PAIRING, ADMIN = (
    "operator.read",
    "operator.write",
    "operator.pairing",
    "operator.admin",
)

#: The scope each operator method needs; anything not listed needs C{operator.admin}.
METHOD_SCOPES: dict[str, str] = {
    "status": READ,
    "system-presence": READ,
    "node.list": READ,
    "node.describe": READ,
    "turn.allocations.list": READ,
    "turn.users.list": READ,
    "rendezvous.peers.list": READ,
    "relay.pairs.list": READ,
    "node.invoke": WRITE,
    "node.pending.enqueue": WRITE,
    "node.pair.list": PAIRING,
    "node.pair.approve": PAIRING,
    "node.pair.reject": PAIRING,
    "node.pair.remove": PAIRING,
    "node.rename": PAIRING,
    "device.pair.rename": PAIRING,
    "device.pair.list": PAIRING,
    "device.pair.approve": PAIRING,
    "device.pair.reject": PAIRING,
    "device.pair.remove": PAIRING,
    "device.token.rotate": PAIRING,
    "device.token.revoke": PAIRING,
    "turn.users.add": ADMIN,
    "turn.users.remove": ADMIN,
    "turn.allocations.kill": ADMIN,
    "relay.pairs.kill": ADMIN,
    "server.drain": ADMIN,
    "turn.credentials.mint": ADMIN,
}

#: Prefixes that always need C{operator.admin}, whatever the table says.
ADMIN_PREFIXES = ("config.", "exec.approvals.", "wizard.", "update.")


@dataclass(frozen=True)
class MethodCheck:
    """Outcome of L{authorizeMethod}; C{missingScope} names what was lacking."""

    ok: bool
    message: str = ""
    missingScope: str | None = None
    roleDenied: bool = False


def authorizeMethod(role: str, scopes: Iterable[str], method: str) -> MethodCheck:
    """May a connection of C{role} holding C{scopes} call C{method}?"""
    if method == "health":
        return MethodCheck(True)
    if method in NODE_METHODS:
        if role == "node":
            return MethodCheck(True)
        return MethodCheck(False, f"unauthorized role: {role}", roleDenied=True)
    if role != "operator":
        return MethodCheck(False, f"unauthorized role: {role}", roleDenied=True)
    held = set(scopes)
    if ADMIN in held:
        return MethodCheck(True)
    needed = ADMIN if method.startswith(ADMIN_PREFIXES) else METHOD_SCOPES.get(method, ADMIN)
    if needed in held or (needed == READ and WRITE in held):
        return MethodCheck(True)
    return MethodCheck(False, f"missing scope: {needed}", missingScope=needed)
