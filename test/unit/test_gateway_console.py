"""The status page's resources (L{p2pnet.protocols.gateway_console}) and their backend
(L{p2pnet.services.gateway_console}) without sockets."""

from __future__ import annotations

import io
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from p2pnet.protocols.gateway_console import (
    COOKIE,
    LOGIN_BURST,
    SESSION_LIFETIME,
    ConsolePages,
)
from p2pnet.services.gateway_console import Console
from p2pnet.services.gateway_operator import OperatorAction, OperatorListing
from p2pnet.services.gateway_policy import AuthConfig

ROW = {"user": "<b>amy</b>", "client": "192.0.2.7:5000", "transport": "udp",
       "relayed": ["198.51.100.1:50000"], "age": 3.0, "expiresIn": 500.0,
       "bytesToPeers": 10, "packetsToPeers": 1, "bytesFromPeers": 20, "packetsFromPeers": 2,
       "permissions": [], "channels": []}


class Owner:
    running = True
    name = "turn"


class Backend:
    def __init__(self) -> None:
        self.clock = Clock()
        self.acted: list[tuple[str, str]] = []

    def seconds(self) -> float:
        return self.clock.seconds()

    def loginEnabled(self) -> bool:
        return True

    def checkSecret(self, secret: str) -> bool:
        return secret == "right"

    def state(self) -> Deferred[dict[str, Any]]:
        return succeed({"services": [{"name": "turn", "running": True, "listeners": ""}],
                        "counters": dict.fromkeys(
                            ["turnAllocations", "turnBytes", "peersOnline", "relayPairs",
                             "relayBytes", "gatewayClients", "gatewayNodes"], 0),
                        "tables": {"turn": [ROW], "relay": [], "peers": []},
                        "available": {"turn": True, "relay": False, "peers": False}})

    def act(self, kind: str, target: str) -> Deferred[Any]:
        if kind not in ("turn-client", "relay"):
            raise KeyError(kind)
        self.acted.append((kind, target))
        return succeed({"killed": 1})

    def turnTest(self, host: str) -> Deferred[dict[str, Any]]:
        return succeed({"servers": [], "ttl": 600})


class Request(DummyRequest):
    """twisted.web's test request with the cookie and TLS accessors the pages read."""

    cookies: dict[bytes, bytes]

    def getCookie(self, name: bytes) -> bytes | None:
        return getattr(self, "cookies", {}).get(name)

    def isSecure(self) -> bool:
        return False


def request(method: bytes, path: bytes, body: bytes = b"",
            cookie: str | None = None) -> DummyRequest:
    r = Request([path])
    r.method = method
    r.content = io.BytesIO(body)
    if cookie is not None:
        r.cookies = {COOKIE: cookie.encode()}
    return r


def render(pages: ConsolePages, r: DummyRequest, post: Any = None, get: Any = None) -> bytes:
    result = (post or get)(r)
    if isinstance(result, bytes):
        r.write(result)
        r.finish()
    return b"".join(r.written)


class PagesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.backend = Backend()
        self.pages = ConsolePages(self.backend)

    def login(self) -> tuple[str, str]:
        r = request(b"POST", b"login", b"secret=right")
        render(self.pages, r, post=self.pages.login)
        self.assertEqual(r.responseCode, 303)
        cookie = r.responseHeaders.getRawHeaders(b"set-cookie")[0].decode()
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=Strict", cookie)
        sid = cookie.split(";")[0].split("=", 1)[1]
        return sid, self.pages.sessions[sid][1]

    def test_loginAndStatus(self) -> None:
        body = render(self.pages, request(b"GET", b""), get=self.pages.status)
        self.assertIn(b"name=secret", body)
        wrong = request(b"POST", b"login", b"secret=wrong")
        self.assertIn(b"Wrong secret", render(self.pages, wrong, post=self.pages.login))
        self.assertEqual(wrong.responseCode, 403)
        sid, csrf = self.login()
        page = request(b"GET", b"", cookie=sid)
        body = render(self.pages, page, get=self.pages.status)
        self.assertIn(b"&lt;b&gt;amy&lt;/b&gt;", body)  # escaped
        self.assertNotIn(b"<b>amy</b>", body)
        self.assertIn(csrf.encode(), body)
        self.assertIn(b"script-src 'self'",
                      page.responseHeaders.getRawHeaders(b"content-security-policy")[0])

    def test_sessionExpires(self) -> None:
        sid, _ = self.login()
        self.backend.clock.advance(SESSION_LIFETIME)
        r = request(b"GET", b"status.json", cookie=sid)
        render(self.pages, r, get=self.pages.statusJson)
        self.assertEqual(r.responseCode, 403)

    def test_killNeedsCsrf(self) -> None:
        sid, csrf = self.login()
        forged = request(b"POST", b"kill", b"kind=relay&target=u1&csrf=nope", cookie=sid)
        render(self.pages, forged, post=self.pages.kill)
        self.assertEqual((forged.responseCode, self.backend.acted), (403, []))
        r = request(b"POST", b"kill", f"kind=relay&target=u1&csrf={csrf}".encode(), cookie=sid)
        render(self.pages, r, post=self.pages.kill)
        self.assertEqual((r.responseCode, self.backend.acted), (303, [("relay", "u1")]))
        bad = request(b"POST", b"kill", f"kind=nope&target=x&csrf={csrf}".encode(),
                      cookie=sid)
        render(self.pages, bad, post=self.pages.kill)
        self.assertEqual(bad.responseCode, 400)

    def test_loginAttemptsLimited(self) -> None:
        codes = []
        for _ in range(int(LOGIN_BURST) + 2):
            r = request(b"POST", b"login", b"secret=wrong")
            render(self.pages, r, post=self.pages.login)
            codes.append(r.responseCode)
        self.assertEqual(codes[-1], 429)
        self.assertEqual(codes.count(403), int(LOGIN_BURST))


class ConsoleTests(SynchronousTestCase):
    def console(self, auth: AuthConfig, **actions: Any) -> Console:
        owner = Owner()
        listings = {"turn.allocations.list": OperatorListing(owner, lambda o, n: [ROW])}
        acts = {k: OperatorAction(owner, v) for k, v in actions.items()}
        return Console(lambda: {"turn": owner}, listings, acts, lambda: auth, Clock())

    def test_secret(self) -> None:
        token = self.console(AuthConfig(mode="token", token="t0k"))
        self.assertTrue(token.checkSecret("t0k"))
        self.assertFalse(token.checkSecret("t0"))
        password = self.console(AuthConfig(mode="password", password="pw"))
        self.assertTrue(password.checkSecret("pw"))
        proxy = self.console(AuthConfig(mode="trusted-proxy"))
        self.assertFalse(proxy.loginEnabled())
        self.assertFalse(proxy.checkSecret(""))

    def test_stateAndActions(self) -> None:
        console = self.console(AuthConfig(mode="token", token="t"),
                               **{"turn.allocations.kill": lambda p: {"killed": 1, **p}})
        state = self.successResultOf(console.state())
        self.assertEqual(state["tables"]["turn"], [ROW])
        self.assertEqual(state["counters"]["turnBytes"], 30)
        self.assertEqual(state["available"], {"turn": True, "relay": False, "peers": False})
        self.assertEqual(self.successResultOf(console.act("turn-client", "192.0.2.7")),
                         {"killed": 1, "client": "192.0.2.7"})
        self.assertRaises(KeyError, console.act, "relay", "u1")  # not offered here
        self.assertRaises(KeyError, console.turnTest, "127.0.0.1")
