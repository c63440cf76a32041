# -*- test-case-name: test.unit.test_gateway_console,test.interop.test_console_chromium -*-
"""The status page (C{GET /} without a WebSocket upgrade) and the TURN tester
(C{/turn-test}) on the gateway port, with C{twisted.web}.

Both are behind the gateway's token or password: C{POST /login} checks it (constant
time, failures limited per address) and sets one cookie, C{p2pnet_console}, a random
session id (C{HttpOnly}, C{SameSite=Strict}, C{Secure} over TLS); nothing else is stored
in the browser. Every change is a C{POST} form carrying the session's CSRF token. The
HTML is rendered here, so the page reads without JavaScript; the appliance's own script
(L{p2pnet.protocols.console_assets}) refreshes it in place from C{/status.json}. A
content security policy allows only the appliance's own scripts and styles.

The appliance is seen through L{ConsoleBackend} (L{p2pnet.services.gateway_console}
implements it), so this module imports no service.
"""

from __future__ import annotations

import hmac
import html
import json
import secrets
from typing import Any, Protocol
from urllib.parse import parse_qs

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from p2pnet.boundedmap import BoundedMap
from p2pnet.protocols.console_assets import CONSOLE_CSS, CONSOLE_JS, TURN_TEST_JS
from p2pnet.ratelimit import SourceBudgets

__all__ = ["COOKIE", "ConsoleBackend", "ConsolePages", "SESSION_LIFETIME"]

#: The session cookie's name.
COOKIE = b"p2pnet_console"
#: Seconds a login lasts.
SESSION_LIFETIME = 8 * 3600.0
#: Sessions held at once (the oldest is forgotten beyond).
MAX_SESSIONS = 1000
#: Login attempts one address may make: a burst, then one every ten seconds.
LOGIN_BURST, LOGIN_RATE = 10.0, 0.1
#: Bytes of form body accepted (the gateway site refuses longer bodies unread).
MAX_FORM = 4096

_SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'self'; script-src 'self'; style-src 'self'; "
                                b"img-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                                b"form-action 'self'; base-uri 'none'",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-store",
}


class ConsoleBackend(Protocol):
    """What the pages need of the appliance."""

    def seconds(self) -> float:
        """Now."""

    def loginEnabled(self) -> bool:
        """Whether a secret can log in."""

    def checkSecret(self, secret: str) -> bool:
        """Whether C{secret} is the gateway's token or password."""

    def state(self) -> Deferred[dict[str, Any]]:
        """Services, counters, tables (L{p2pnet.services.gateway_console.Console.state})."""

    def act(self, kind: str, target: str) -> Deferred[Any]:
        """Run a kill button (C{KeyError}: unknown or not offered)."""

    def turnTest(self, host: str) -> Deferred[dict[str, Any]]:
        """The tester's servers with fresh credentials (C{KeyError}/C{ValueError}: none)."""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _headers(request: Request, contentType: bytes) -> None:
    request.setHeader(b"content-type", contentType)
    for name, value in _SECURITY_HEADERS.items():
        request.setHeader(name, value)


class ConsolePages:
    """Sessions, login, and the pages' resources (see L{children})."""

    def __init__(self, backend: ConsoleBackend) -> None:
        self.backend = backend
        self.sessions: BoundedMap[str, tuple[float, str]] = BoundedMap(MAX_SESSIONS)
        #: Login attempts per address: a burst, then one every ten seconds.
        self.attempts = SourceBudgets(LOGIN_RATE, LOGIN_BURST, 4096)

    # -- sessions ---------------------------------------------------------------------

    def session(self, request: Request) -> str | None:
        """The CSRF token of the request's live session, or C{None}."""
        sid = (request.getCookie(COOKIE) or b"").decode("ascii", "replace")
        found = self.sessions.get(sid)
        if found is None:
            return None
        expires, csrf = found
        if expires <= self.backend.seconds():
            del self.sessions[sid]
            return None
        return csrf

    def _form(self, request: Request) -> dict[str, str]:
        body = request.content.read(MAX_FORM) if request.content is not None else b""
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
        return {k: v[0] for k, v in fields.items() if v}

    def _csrfOk(self, request: Request, form: dict[str, str]) -> bool:
        csrf = self.session(request)
        return csrf is not None and hmac.compare_digest(
            form.get("csrf", "").encode(), csrf.encode())

    def login(self, request: Request) -> bytes:
        """C{POST /login}: the secret right, a session cookie and back to C{/}."""
        form = self._form(request)
        source = getattr(request.getClientAddress(), "host", "")
        now = self.backend.seconds()
        if not self.backend.loginEnabled():
            return self._page(request, 403, "Login", self._loginForm(
                "This gateway has no token or password to log in with."))
        if not self.attempts.allow(source, now):
            return self._page(request, 429, "Login", self._loginForm(
                "Too many attempts from this address; wait a minute."))
        if not self.backend.checkSecret(form.get("secret", "")):
            return self._page(request, 403, "Login", self._loginForm("Wrong secret."))
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = (now + SESSION_LIFETIME, secrets.token_urlsafe(24))
        cookie = [f"{COOKIE.decode()}={sid}", "Path=/", "HttpOnly", "SameSite=Strict",
                  f"Max-Age={int(SESSION_LIFETIME)}"]
        if request.isSecure():
            cookie.append("Secure")
        request.setHeader(b"set-cookie", "; ".join(cookie).encode())
        return self._redirect(request, b"/")

    def logout(self, request: Request) -> bytes:
        """C{POST /logout}: forget the session."""
        form = self._form(request)
        if self._csrfOk(request, form):
            sid = (request.getCookie(COOKIE) or b"").decode("ascii", "replace")
            self.sessions.pop(sid, None)
        request.setHeader(b"set-cookie", f"{COOKIE.decode()}=; Path=/; Max-Age=0".encode())
        return self._redirect(request, b"/")

    def kill(self, request: Request) -> int | bytes:
        """C{POST /kill}: one kill button (C{kind}, C{target}), then back to C{/}."""
        form = self._form(request)
        if not self._csrfOk(request, form):
            return self._page(request, 403, "Refused", "<p>Log in again.</p>")
        try:
            d = self.backend.act(form.get("kind", ""), form.get("target", ""))
        except KeyError:
            return self._page(request, 400, "Refused", "<p>Unknown action.</p>")

        def done(_: Any) -> None:
            request.write(self._redirect(request, b"/"))
            request.finish()

        def failed(failure: Failure) -> None:
            request.write(self._page(request, 400, "Refused",
                                     f"<p>{_esc(failure.getErrorMessage())}</p>"))
            request.finish()

        d.addCallbacks(done, failed)
        return NOT_DONE_YET

    # -- pages --------------------------------------------------------------------------

    def _redirect(self, request: Request, where: bytes) -> bytes:
        request.setResponseCode(303)
        request.setHeader(b"location", where)
        _headers(request, b"text/plain; charset=utf-8")
        return b"see " + where + b"\n"

    def _page(self, request: Request, code: int, title: str, body: str,
              data: str = "") -> bytes:
        request.setResponseCode(code)
        _headers(request, b"text/html; charset=utf-8")
        return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
                f"<meta name=viewport content='width=device-width'>"
                f"<title>p2pnet — {_esc(title)}</title>"
                f"<link rel=stylesheet href='/console.css'></head>"
                f"<body{data}><h1>p2pnet — {_esc(title)}</h1>{body}</body></html>").encode()

    def _loginForm(self, note: str = "") -> str:
        shown = f"<p class=bad>{_esc(note)}</p>" if note else ""
        return (f"{shown}<form method=post action='/login'><label>Gateway token or password "
                "<input type=password name=secret autocomplete=current-password autofocus>"
                "</label> <button type=submit>Log in</button></form>")

    def status(self, request: Request) -> int | bytes:
        """C{GET /}: the login form, or the status page."""
        csrf = self.session(request)
        if csrf is None:
            return self._page(request, 200, "Login", self._loginForm())

        def render(state: dict[str, Any]) -> None:
            request.write(self._page(request, 200, "status", _statusBody(state, csrf),
                                     f" data-csrf='{_esc(csrf)}'"))
            request.finish()

        self.backend.state().addCallbacks(render, lambda f: self._fail(request, f))
        return NOT_DONE_YET

    def statusJson(self, request: Request) -> int | bytes:
        """C{GET /status.json}: what the page shows, for its script."""
        if self.session(request) is None:
            request.setResponseCode(403)
            _headers(request, b"application/json")
            return b'{"error": "log in"}\n'

        def render(state: dict[str, Any]) -> None:
            _headers(request, b"application/json")
            request.write(json.dumps(state).encode())
            request.finish()

        self.backend.state().addCallbacks(render, lambda f: self._fail(request, f))
        return NOT_DONE_YET

    def turnTestPage(self, request: Request) -> bytes:
        """C{GET /turn-test}: the tester (behind the login)."""
        if self.session(request) is None:
            return self._page(request, 200, "Login", self._loginForm())
        body = ("<nav><a href='/'>status</a></nav><p>Gathers candidates from this "
                "appliance's STUN and TURN servers (UDP, TCP, TLS) with credentials valid "
                "ten minutes, then opens a relay-only data channel between two peer "
                "connections in this page.</p><button id=run type=button>Run the test"
                "</button><p id=verdict class=muted>not run yet</p><table><thead><tr>"
                "<th>server</th><th>type</th><th>protocol</th><th>address</th><th>after</th>"
                "</tr></thead><tbody id=results></tbody></table>"
                "<script src='/turn-test.js'></script>")
        return self._page(request, 200, "TURN test", body)

    def turnTestJson(self, request: Request) -> int | bytes:
        """C{GET /turn-test.json}: the servers and fresh credentials."""
        _headers(request, b"application/json")
        if self.session(request) is None:
            request.setResponseCode(403)
            return b'{"error": "log in"}\n'
        host = (request.getRequestHostname() or b"127.0.0.1").decode("ascii", "replace")
        try:
            d = self.backend.turnTest(host)
        except KeyError:
            request.setResponseCode(409)
            return b'{"error": "this appliance runs no TURN service"}\n'

        def render(config: dict[str, Any]) -> None:
            request.write(json.dumps(config).encode())
            request.finish()

        def failed(failure: Failure) -> None:
            request.setResponseCode(409)
            request.write(json.dumps({"error": failure.getErrorMessage()}).encode())
            request.finish()

        d.addCallbacks(render, failed)
        return NOT_DONE_YET

    def _fail(self, request: Request, failure: Failure) -> None:
        request.setResponseCode(500)
        request.write(b"internal error\n")
        request.finish()

    def children(self) -> dict[bytes, Resource]:
        """The resources to mount on the gateway's root (C{/} itself is L{status})."""
        return {
            b"login": _Handler(post=self.login),
            b"logout": _Handler(post=self.logout),
            b"kill": _Handler(post=self.kill),
            b"status.json": _Handler(get=self.statusJson),
            b"turn-test": _Handler(get=self.turnTestPage),
            b"turn-test.json": _Handler(get=self.turnTestJson),
            b"console.css": _Static(CONSOLE_CSS, b"text/css; charset=utf-8"),
            b"console.js": _Static(CONSOLE_JS, b"text/javascript; charset=utf-8"),
            b"turn-test.js": _Static(TURN_TEST_JS, b"text/javascript; charset=utf-8"),
        }


class _Handler(Resource):
    isLeaf = True

    def __init__(self, get: Any = None, post: Any = None) -> None:
        super().__init__()
        self._get, self._post = get, post

    def render_GET(self, request: Request) -> Any:
        if self._get is None:
            request.setResponseCode(405)
            return b""
        return self._get(request)

    def render_POST(self, request: Request) -> Any:
        if self._post is None:
            request.setResponseCode(405)
            return b""
        return self._post(request)


class _Static(Resource):
    isLeaf = True

    def __init__(self, body: bytes, contentType: bytes) -> None:
        super().__init__()
        self._body, self._type = body, contentType

    def render_GET(self, request: Request) -> bytes:
        _headers(request, self._type)
        return self._body


def _table(title: str, tbody: str, headers: list[str], rows: list[str], note: str) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    shown = "".join(rows) if rows else ""
    return (f"<h2>{_esc(title)}</h2>{note}<table><thead><tr>{head}</tr></thead>"
            f"<tbody id={tbody}>{shown}</tbody></table>")


def _killForm(kind: str, target: str, csrf: str) -> str:
    return (f"<form method=post action='/kill' class=inline>"
            f"<input type=hidden name=kind value='{_esc(kind)}'>"
            f"<input type=hidden name=target value='{_esc(target)}'>"
            f"<input type=hidden name=csrf value='{_esc(csrf)}'>"
            f"<button type=submit>kill</button></form>")


def _clientHost(client: str) -> str:
    host = client.rpartition(":")[0]
    return host.strip("[]")


def _statusBody(state: dict[str, Any], csrf: str) -> str:
    services = "".join(
        f"<tr><td>{_esc(s['name'])}</td><td class={'ok' if s['running'] else 'bad'}>"
        f"{'running' if s['running'] else 'stopped'}</td><td>{_esc(s['listeners'])}</td></tr>"
        for s in state["services"])
    c = state["counters"]
    counters = (
        "<table class=counters><tr>"
        f"<th>TURN allocations</th><td id=c-turnAllocations class=num>{c['turnAllocations']}</td>"
        f"<th>TURN bytes relayed</th><td id=c-turnBytes class=num>{c['turnBytes']}</td>"
        "<th>TURN rate</th><td id=r-turnBytes class=num>-</td></tr><tr>"
        f"<th>RustDesk peers online</th><td id=c-peersOnline class=num>{c['peersOnline']}</td>"
        f"<th>relay pairs</th><td id=c-relayPairs class=num>{c['relayPairs']}</td>"
        f"<th>relay rate</th><td id=r-relayBytes class=num>-</td></tr><tr>"
        f"<th>relay bytes</th><td id=c-relayBytes class=num>{c['relayBytes']}</td>"
        f"<th>gateway clients</th><td id=c-gatewayClients class=num>{c['gatewayClients']}</td>"
        f"<th>gateway nodes</th><td id=c-gatewayNodes class=num>{c['gatewayNodes']}</td>"
        "</tr></table>")
    tables = state["tables"]
    turn = [
        f"<tr><td>{_esc(r['user'])}</td><td>{_esc(r['client'])}</td><td>{_esc(r['transport'])}"
        f"</td><td>{_esc(' '.join(r['relayed']))}</td><td class=num>{round(r['age'])} s</td>"
        f"<td class=num>{r['bytesToPeers']}</td><td class=num>{r['bytesFromPeers']}</td>"
        f"<td class=num>{len(r['permissions'])}</td><td class=num>{len(r['channels'])}</td>"
        f"<td>{_killForm('turn-client', _clientHost(r['client']), csrf)}</td></tr>"
        for r in tables["turn"]]
    relay = [
        f"<tr><td>{_esc(r['uuid'])}</td><td>{_esc(r['a'])}</td><td>{_esc(r['b'])}</td>"
        f"<td class=num>{round(r['age'])} s</td><td class=num>{r['bytes']}</td>"
        f"<td>{_killForm('relay', r['uuid'], csrf)}</td></tr>" for r in tables["relay"]]
    peers = [
        f"<tr><td>{_esc(r['id'])}</td><td>{_esc(r['address'][0])}:{_esc(r['address'][1])}"
        f"</td><td>{_esc(r['transport'])}</td><td class=num>{round(r['lastSeen'])} s</td></tr>"
        for r in tables["peers"]]
    off = "<p class=muted>(this service does not run here)</p>"
    available = state["available"]
    return (
        "<nav><a href='/turn-test'>TURN test</a>"
        f"<form method=post action='/logout' class=inline><input type=hidden name=csrf "
        f"value='{_esc(csrf)}'><button type=submit>Log out</button></form>"
        "<span id=updated class=muted></span></nav>"
        f"<h2>Services</h2><table><thead><tr><th>service</th><th>state</th><th>listeners</th>"
        f"</tr></thead><tbody>{services}</tbody></table>"
        f"<h2>Now</h2>{counters}"
        + _table("TURN allocations", "t-turn", ["user", "client", "transport", "relayed",
                 "age", "to peers (B)", "from peers (B)", "permissions", "channels", ""],
                 turn, "" if available["turn"] else off)
        + _table("RustDesk relay pairs", "t-relay", ["uuid", "a", "b", "age", "bytes", ""],
                 relay, "" if available["relay"] else off)
        + _table("RustDesk peers online", "t-peers", ["id", "address", "transport",
                 "last seen"], peers, "" if available["peers"] else off)
        + "<script src='/console.js'></script>")
