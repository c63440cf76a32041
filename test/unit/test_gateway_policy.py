"""Tests for L{p2pnet.services.gateway_policy}."""

from __future__ import annotations

import ipaddress

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.addresses import normalizeIp
from p2pnet.services.gateway_policy import (
    BROWSER_FALLBACK_IP,
    AuthConfig,
    AuthResult,
    PreauthBudget,
    RateLimiter,
    Scope,
    authorizeMethod,
    authorizeShared,
    browserLimiterKey,
    checkOrigin,
    detailCode,
    isLocalDirect,
    missingDeviceDecision,
    nextStep,
    resolveClientIp,
    secretEqual,
)


def nets(*cidrs: str) -> list:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


class ClientIpTests(SynchronousTestCase):
    """The table of gateway.md §4.2."""

    def test_untrustedRemote(self) -> None:
        self.assertEqual(
            resolveClientIp("203.0.113.10", {"x-forwarded-for": "1.2.3.4"}, nets()),
            "203.0.113.10")

    def test_rightToLeftWalk(self) -> None:
        self.assertEqual(resolveClientIp(
            "127.0.0.1", {"x-forwarded-for": "198.51.100.99, 10.0.0.9, 127.0.0.1"},
            nets("127.0.0.1")), "10.0.0.9")

    def test_onlyLoopbackHops(self) -> None:
        self.assertIsNone(resolveClientIp(
            "10.0.0.50", {"x-forwarded-for": "127.0.0.1"}, nets("10.0.0.0/8")))

    def test_allHopsTrusted(self) -> None:
        self.assertIsNone(resolveClientIp(
            "10.0.0.50", {"x-forwarded-for": "10.1.1.1, 10.2.2.2"}, nets("10.0.0.0/8")))

    def test_noXff(self) -> None:
        self.assertIsNone(resolveClientIp("10.0.0.50", {}, nets("10.0.0.0/8")))

    def test_garbageXff(self) -> None:
        self.assertIsNone(resolveClientIp(
            "10.0.0.50", {"x-forwarded-for": "nonsense, ,::::"}, nets("10.0.0.0/8")))

    def test_ports(self) -> None:
        self.assertEqual(resolveClientIp(
            "10.0.0.50", {"x-forwarded-for": "1.2.3.4:5678"}, nets("10.0.0.0/8")), "1.2.3.4")
        self.assertEqual(resolveClientIp(
            "10.0.0.50", {"x-forwarded-for": "[2001:db8::1]:80"}, nets("10.0.0.0/8")),
            "2001:db8::1")

    def test_realIpFallback(self) -> None:
        headers = {"x-real-ip": "[2001:db8::5]"}
        self.assertIsNone(resolveClientIp("127.0.0.1", headers, nets("127.0.0.1")))
        self.assertEqual(
            resolveClientIp("127.0.0.1", headers, nets("127.0.0.1"), allowRealIpFallback=True),
            "2001:db8::5")

    def test_mapped(self) -> None:
        self.assertEqual(normalizeIp("::ffff:1.2.3.4"), "1.2.3.4")
        self.assertIsNone(normalizeIp("x"))

    def test_localDirect(self) -> None:
        self.assertTrue(isLocalDirect("127.0.0.1", {"host": "evil.example"}))
        self.assertTrue(isLocalDirect("::1", {}))
        self.assertFalse(isLocalDirect("127.0.0.1", {"x-forwarded-for": "1.2.3.4"}))
        self.assertFalse(isLocalDirect("127.0.0.1", {"forwarded": "for=1.2.3.4"}))
        self.assertFalse(isLocalDirect("10.0.0.1", {}))


class OriginTests(SynchronousTestCase):
    def test_missingNullMalformed(self) -> None:
        for origin in (None, "", "null", "not a url", "ftp://x", "http://[bad"):
            result = checkOrigin(origin, ["*"], True)
            self.assertEqual((result.ok, result.reason), (False, "origin missing or invalid"))

    def test_allowlist(self) -> None:
        self.assertTrue(checkOrigin("https://UI.example.com", [" https://ui.example.com "],
                                    False).ok)
        self.assertEqual(checkOrigin("https://a.b", ["*"], False).reason, "allowlist")
        self.assertTrue(checkOrigin("http://x:8080", ["http://x:8080"], False).ok)
        self.assertFalse(checkOrigin("http://x:8081", ["http://x:8080"], False).ok)

    def test_localLoopbackOnlyLocalDirect(self) -> None:
        for origin in ("http://localhost:5173", "http://127.0.0.1", "http://[::1]:80"):
            self.assertEqual(checkOrigin(origin, [], True).reason, "local-loopback")
            self.assertEqual(checkOrigin(origin, [], False).reason, "origin not allowed")

    def test_notAllowed(self) -> None:
        self.assertEqual(checkOrigin("https://evil.example", [], True).reason,
                         "origin not allowed")


class RateLimiterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.limiter = RateLimiter(self.clock)

    def fail(self, n: int, ip: str = "1.2.3.4", scope: str = Scope.SHARED_SECRET) -> None:
        for _ in range(n):
            self.limiter.recordFailure(ip, scope)

    def test_countsDownAndLocks(self) -> None:
        self.fail(3)
        self.assertEqual(self.limiter.check("1.2.3.4", Scope.SHARED_SECRET).remaining, 7)
        self.fail(7)
        state = self.limiter.check("1.2.3.4", Scope.SHARED_SECRET)
        self.assertFalse(state.allowed)
        self.assertEqual(state.retryAfterMs, 300_000)
        self.clock.advance(299)
        self.assertFalse(self.limiter.check("1.2.3.4", Scope.SHARED_SECRET).allowed)
        self.clock.advance(1)
        self.assertTrue(self.limiter.check("1.2.3.4", Scope.SHARED_SECRET).allowed)

    def test_lockoutNotExtended(self) -> None:
        self.fail(10)
        self.clock.advance(200)
        self.fail(5)
        self.clock.advance(100)
        self.assertTrue(self.limiter.check("1.2.3.4", Scope.SHARED_SECRET).allowed)

    def test_windowSlides(self) -> None:
        self.fail(9)
        self.clock.advance(61)
        self.fail(1)
        self.assertTrue(self.limiter.check("1.2.3.4", Scope.SHARED_SECRET).allowed)
        self.assertEqual(self.limiter.check("1.2.3.4", Scope.SHARED_SECRET).remaining, 9)

    def test_ipsAndScopesIndependent(self) -> None:
        self.fail(10)
        self.assertTrue(self.limiter.check("1.2.3.5", Scope.SHARED_SECRET).allowed)
        self.assertTrue(self.limiter.check("1.2.3.4", Scope.DEVICE_TOKEN).allowed)
        self.fail(10, scope=Scope.DEVICE_TOKEN, ip="5.5.5.5")
        self.assertTrue(self.limiter.check("5.5.5.5", Scope.SHARED_SECRET).allowed)

    def test_mappedSameClient(self) -> None:
        self.fail(10, ip="::ffff:1.2.3.4")
        self.assertFalse(self.limiter.check("1.2.3.4", Scope.SHARED_SECRET).allowed)

    def test_loopbackExemption(self) -> None:
        self.fail(20, ip="127.0.0.1")
        self.assertTrue(self.limiter.check("127.0.0.1", Scope.SHARED_SECRET).allowed)
        strict = RateLimiter(self.clock, exemptLoopback=False)
        for _ in range(10):
            strict.recordFailure("::1", Scope.SHARED_SECRET)
        self.assertFalse(strict.check("::1", Scope.SHARED_SECRET).allowed)

    def test_resetPerScope(self) -> None:
        self.fail(5)
        self.fail(5, scope=Scope.DEVICE_TOKEN)
        self.limiter.reset("1.2.3.4", Scope.SHARED_SECRET)
        self.assertEqual(self.limiter.check("1.2.3.4", Scope.SHARED_SECRET).remaining, 10)
        self.assertEqual(self.limiter.check("1.2.3.4", Scope.DEVICE_TOKEN).remaining, 5)

    def test_pruneKeepsLocked(self) -> None:
        self.fail(10)
        self.fail(1, ip="9.9.9.9")
        self.clock.advance(120)
        self.limiter.prune()
        self.assertEqual(len(self.limiter), 1)
        self.assertFalse(self.limiter.check("1.2.3.4", Scope.SHARED_SECRET).allowed)

    def test_unknownIp(self) -> None:
        self.fail(10, ip="")
        self.assertFalse(self.limiter.check(None, Scope.SHARED_SECRET).allowed)

    def test_bounded(self) -> None:
        limiter = RateLimiter(self.clock, maxEntries=3)
        for i in range(10):
            limiter.recordFailure(f"10.0.0.{i}")
        self.assertEqual(len(limiter), 3)

    def test_browserKey(self) -> None:
        self.assertEqual(browserLimiterKey("127.0.0.1", "http://A.example"),
                         "browser-origin:http://a.example")
        self.assertEqual(browserLimiterKey("127.0.0.1", "null"), BROWSER_FALLBACK_IP)
        self.assertEqual(browserLimiterKey("1.2.3.4", "http://a"), "1.2.3.4")
        browser = RateLimiter(self.clock, exemptLoopback=False)
        for _ in range(10):
            browser.recordFailure(browserLimiterKey("127.0.0.1", "http://a"))
        self.assertFalse(browser.check(browserLimiterKey("127.0.0.1", "http://a")).allowed)
        self.assertTrue(browser.check(browserLimiterKey("127.0.0.1", "http://b")).allowed)


class PreauthBudgetTests(SynchronousTestCase):
    def test_budget(self) -> None:
        budget = PreauthBudget(2)
        self.assertTrue(budget.acquire("1.1.1.1"))
        self.assertTrue(budget.acquire("1.1.1.1"))
        self.assertFalse(budget.acquire("1.1.1.1"))
        self.assertTrue(budget.acquire("2.2.2.2"))
        budget.release("1.1.1.1")
        self.assertTrue(budget.acquire("1.1.1.1"))
        self.assertTrue(budget.acquire(None))
        self.assertTrue(budget.acquire(None))
        self.assertFalse(budget.acquire(None))
        for _ in range(5):
            budget.release("2.2.2.2")
        self.assertEqual(budget.count("2.2.2.2"), 0)


class SharedAuthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.limiter = RateLimiter(Clock())

    def auth(self, config: AuthConfig, auth: dict, remote: str = "1.2.3.4",
             headers: dict | None = None) -> AuthResult:
        headers = headers or {}
        return authorizeShared(config, auth, remote, headers, self.limiter, remote,
                               isLocalDirect(remote, headers))

    def test_token(self) -> None:
        config = AuthConfig("token", token="s3cret")
        self.assertEqual(self.auth(config, {"token": "s3cret"}).method, "token")
        missing = self.auth(config, {})
        self.assertEqual((missing.reason, missing.counted), ("token_missing", False))
        wrong = self.auth(config, {"token": "nope"})
        self.assertEqual((wrong.reason, wrong.counted), ("token_mismatch", True))
        self.assertEqual(self.limiter.check("1.2.3.4", Scope.SHARED_SECRET).remaining, 9)
        self.auth(config, {"token": "s3cret"})
        self.assertEqual(self.limiter.check("1.2.3.4", Scope.SHARED_SECRET).remaining, 10)

    def test_missingDoesNotCount(self) -> None:
        config = AuthConfig("token", token="s3cret")
        for _ in range(20):
            self.auth(config, {})
        self.assertEqual(self.auth(config, {"token": "s3cret"}).method, "token")

    def test_rateLimited(self) -> None:
        config = AuthConfig("password", password="pw")
        for _ in range(10):
            self.assertEqual(self.auth(config, {"password": "x"}).reason, "password_mismatch")
        result = self.auth(config, {"password": "pw"})
        self.assertEqual(result.reason, "rate_limited")
        self.assertEqual(result.retryAfterMs, 300_000)

    def test_password(self) -> None:
        config = AuthConfig("password", password="pw")
        self.assertTrue(self.auth(config, {"password": "pw"}).ok)
        self.assertEqual(self.auth(config, {"token": "pw"}).reason, "password_missing")
        self.assertEqual(self.auth(AuthConfig("password"), {"password": "x"}).reason,
                         "password_missing_config")

    def test_none(self) -> None:
        self.assertEqual(self.auth(AuthConfig("none"), {}, "127.0.0.1").method, "none")
        self.assertFalse(self.auth(AuthConfig("none"), {}, "1.2.3.4").ok)
        self.assertFalse(self.auth(AuthConfig("none"), {}, "127.0.0.1",
                                   {"x-forwarded-for": "1.1.1.1"}).ok)

    def test_trustedProxy(self) -> None:
        config = AuthConfig("trusted-proxy", trustedProxies=nets("10.0.0.0/8"),
                            userHeader="X-Auth-User", requiredHeaders=("X-Auth-Proof",),
                            allowUsers=("alice",))
        ok = {"x-auth-user": "  alice ", "x-auth-proof": "p"}
        result = self.auth(config, {}, "10.0.0.2", ok)
        self.assertEqual((result.method, result.user), ("trusted-proxy", "alice"))
        self.assertEqual(self.auth(config, {}, "192.0.2.1", ok).reason,
                         "trusted_proxy_untrusted_source")
        self.assertEqual(self.auth(config, {}, "10.0.0.2", {"x-auth-user": "alice"}).reason,
                         "trusted_proxy_missing_header_x-auth-proof")
        self.assertEqual(self.auth(config, {}, "10.0.0.2", {"x-auth-proof": "p"}).reason,
                         "trusted_proxy_user_missing")
        self.assertEqual(self.auth(config, {}, "10.0.0.2",
                                   {"x-auth-user": "bob", "x-auth-proof": "p"}).reason,
                         "trusted_proxy_user_not_allowed")
        noProxies = AuthConfig("trusted-proxy", userHeader="X-Auth-User")
        self.assertEqual(self.auth(noProxies, {}, "10.0.0.2", ok).reason,
                         "trusted_proxy_no_proxies_configured")
        loop = AuthConfig("trusted-proxy", trustedProxies=nets("127.0.0.0/8"),
                          userHeader="X-Auth-User")
        self.assertEqual(self.auth(loop, {}, "127.0.0.1", ok).reason,
                         "trusted_proxy_loopback_source")

    def test_secretsNotInRepr(self) -> None:
        text = repr(AuthConfig("token", token="tok-secret", password="pw-secret"))
        self.assertNotIn("tok-secret", text)
        self.assertNotIn("pw-secret", text)

    def test_secretEqual(self) -> None:
        self.assertTrue(secretEqual("a", "a"))
        self.assertFalse(secretEqual("a", "ab"))

    def test_detailCodes(self) -> None:
        self.assertEqual(detailCode("token_missing"), "AUTH_TOKEN_MISSING")
        self.assertEqual(detailCode("rate_limited"), "AUTH_RATE_LIMITED")
        self.assertEqual(detailCode(None), "AUTH_REQUIRED")
        self.assertEqual(detailCode("trusted_proxy_user_missing"), "AUTH_UNAUTHORIZED")
        self.assertEqual(nextStep("token_mismatch", True, False), "retry_with_device_token")
        self.assertEqual(nextStep("token_mismatch", True, True), "update_auth_credentials")
        self.assertEqual(nextStep("rate_limited", False, False), "wait_then_retry")


class MissingDeviceTests(SynchronousTestCase):
    OK = AuthResult(True, method="token")
    BAD = AuthResult(False, reason="token_mismatch")
    NONE = AuthResult(False, reason="token_missing")

    def decide(self, clientId: str = "test", mode: str = "test", role: str = "operator",
               shared: AuthResult = OK, sent: bool = True, local: bool = False) -> tuple:
        d = missingDeviceDecision(clientId=clientId, clientMode=mode, role=role,
                                  shared=shared, sharedSent=sent, localDirect=local)
        return d.kind, d.keepScopes

    def test_matrix(self) -> None:
        self.assertEqual(self.decide(), ("allow", False))
        self.assertEqual(self.decide(role="node"), ("device-required", False))
        self.assertEqual(self.decide(shared=self.BAD), ("unauthorized", False))
        self.assertEqual(self.decide(shared=self.NONE, sent=False), ("device-required", False))
        self.assertEqual(self.decide("openclaw-control-ui", "ui"), ("control-ui", False))
        self.assertEqual(
            self.decide("openclaw-control-ui", "ui",
                        shared=AuthResult(True, method="trusted-proxy")), ("allow", True))

    def test_localCliKeepsScopes(self) -> None:
        self.assertEqual(self.decide("cli", "cli", local=True), ("allow", True))
        self.assertEqual(self.decide("gateway-client", "backend", local=True), ("allow", True))
        self.assertEqual(self.decide("cli", "cli", local=False), ("allow", False))
        self.assertEqual(self.decide("cli", "backend", local=True), ("allow", False))


class MethodTests(SynchronousTestCase):
    def test_health(self) -> None:
        self.assertTrue(authorizeMethod("operator", [], "health").ok)
        self.assertTrue(authorizeMethod("node", [], "health").ok)

    def test_scopes(self) -> None:
        self.assertEqual(authorizeMethod("operator", [], "status").missingScope,
                         "operator.read")
        self.assertTrue(authorizeMethod("operator", ["operator.read"], "status").ok)
        self.assertTrue(authorizeMethod("operator", ["operator.write"], "node.list").ok)
        self.assertFalse(authorizeMethod("operator", ["operator.read"], "node.invoke").ok)
        self.assertTrue(authorizeMethod("operator", ["operator.write"], "node.invoke").ok)
        self.assertTrue(authorizeMethod("operator", ["operator.pairing"],
                                        "device.pair.approve").ok)
        self.assertTrue(authorizeMethod("operator", ["operator.admin"], "anything").ok)

    def test_unknownNeedsAdmin(self) -> None:
        check = authorizeMethod("operator", ["operator.read", "operator.write"], "nope.x")
        self.assertEqual((check.message, check.missingScope),
                         ("missing scope: operator.admin", "operator.admin"))
        self.assertEqual(authorizeMethod("operator", ["operator.read"],
                                         "config.get").missingScope, "operator.admin")

    def test_roles(self) -> None:
        check = authorizeMethod("operator", ["operator.admin"], "node.invoke.result")
        self.assertEqual((check.ok, check.message), (False, "unauthorized role: operator"))
        self.assertTrue(authorizeMethod("node", [], "node.event").ok)
        check = authorizeMethod("node", ["operator.admin"], "status")
        self.assertEqual((check.ok, check.message), (False, "unauthorized role: node"))
