"""The status page and the TURN tester in headless Chromium (Debian's chromium, driven by
Playwright) against a real C{twistd -n p2pnet} child (issue 10 items 3 and 4).

Playwright's synchronous API runs in one dedicated thread (its objects belong to the
thread that made them); the test's reactor keeps reading the child's output meanwhile.
With C{P2PNET_SCREENSHOTS=DIR} the pages are saved there (docs/images was made so).
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from p2pnet.protocols.turn_client import TurnClientProtocol
from test.interop.twistd_child import TwistdChild

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "console-test-token"
FLAGS = ["--no-sandbox", "--allow-loopback-in-peer-connection",
         "--disable-features=WebRtcHideLocalIpsWithMdns"]


class Browser:
    """One headless Chromium, used from one thread only."""

    def __init__(self) -> None:
        from playwright.sync_api import sync_playwright

        self.manager = sync_playwright()
        self.playwright = self.manager.start()
        self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        self.context = self.browser.new_context()
        self.page = self.context.new_page()
        self.page.set_default_timeout(30000)

    def close(self) -> None:
        self.browser.close()
        self.manager.__exit__(None, None, None)


class ConsoleTests(TestCase):
    timeout = 240

    def setUp(self) -> None:
        if not os.path.exists(CHROMIUM):
            self.skipTest("Debian's chromium is not installed (make test installs it)")
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            self.skipTest("playwright is not installed (.[test] installs it)")
        self.pool = ThreadPool(1, 1, "chromium")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.shots = os.environ.get("P2PNET_SCREENSHOTS", "")

    def inBrowser(self, f: Any, *args: Any) -> defer.Deferred[Any]:
        """Run C{f(*args)} in the browser's thread."""
        return threads.deferToThreadPool(reactor, self.pool, f, *args)

    def shot(self, browser: Browser, name: str) -> None:
        if self.shots:
            browser.page.screenshot(path=os.path.join(self.shots, name), full_page=True)

    @defer.inlineCallbacks
    def test_statusPageAndTurnTest(self) -> Any:
        child = TwistdChild(
            ["--services", "stun,turn,rendezvous,relay,gateway", "--listen", "127.0.0.1",
             "--stun-port", "0", "--tls-port", "0", "--alt-port", "0", "--rendezvous-port",
             "0", "--relay-port", "0", "--gateway-port", "0", "--gateway-token", TOKEN,
             "--auth-secret", "console-secret", "--user", "amy:pw-1",
             "--allow-loopback-peers", "--data-dir", os.path.abspath(self.mktemp())],
            ready=b"gateway listening on", env={"PYTHONPATH": ROOT})
        yield child.start(self)
        text = child.text()
        gateway = re.search(r"gateway listening on tcp 127\.0\.0\.1:([0-9]+)", text)
        stun = re.search(r"STUN listening on udp 127\.0\.0\.1:([0-9]+)", text)
        assert gateway and stun, text
        base = f"http://127.0.0.1:{gateway.group(1)}/"
        browser = yield self.inBrowser(Browser)
        self.addCleanup(lambda: self.inBrowser(browser.close))

        def login(secret: str) -> str:
            page = browser.page
            page.goto(base)
            page.fill("input[name=secret]", secret)
            page.click("button[type=submit]")
            return page.title()

        self.assertEqual((yield self.inBrowser(login, "wrong")), "p2pnet — Login")
        self.assertEqual((yield self.inBrowser(login, TOKEN)), "p2pnet — status")
        cookies = yield self.inBrowser(browser.context.cookies)
        self.assertEqual([(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies],
                         [("p2pnet_console", True, "Strict")])

        # A TURN client allocates: the page's counter and table follow without a reload.
        client = TurnClientProtocol(("127.0.0.1", int(stun.group(1))), "amy", "pw-1",
                                    reactor=reactor)
        port = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: client.close().addErrback(lambda _: None))
        yield client.allocate()

        from playwright.sync_api import expect

        def liveUpdate() -> str:
            page = browser.page
            expect(page.locator("#c-turnAllocations")).to_have_text("1", timeout=30000)
            self.shot(browser, "console.png")
            return page.inner_text("#t-turn")

        row = yield self.inBrowser(liveUpdate)
        self.assertIn("amy", row)

        # Reading works without JavaScript: a second context with scripts off.
        def withoutScripts() -> str:
            context = browser.browser.new_context(java_script_enabled=False)
            context.add_cookies(browser.context.cookies())
            page = context.new_page()
            page.goto(base)
            found = page.inner_text("#t-turn")
            context.close()
            return found

        self.assertIn("amy", (yield self.inBrowser(withoutScripts)))

        # The kill button ends the allocation.
        def kill() -> str:
            page = browser.page
            page.click("#t-turn button")
            expect(page.locator("#c-turnAllocations")).to_have_text("0", timeout=30000)
            return page.title()

        self.assertEqual((yield self.inBrowser(kill)), "p2pnet — status")
        self.assertIn("killed", child.text())
        yield client.close().addErrback(lambda _: None)  # its Refresh gets 437 at once

        # The TURN tester: host, srflx and relay candidates, a relay-only data channel.
        def turnTest() -> tuple[str, str]:
            page = browser.page
            page.goto(base + "turn-test")
            page.click("#run")
            page.wait_for_selector("body[data-done=yes]", timeout=120000)
            self.shot(browser, "turn-test.png")
            return page.inner_text("#verdict"), page.inner_text("#results")

        verdict, results = yield self.inBrowser(turnTest)
        self.assertIn("STUN over UDP: works", verdict)
        self.assertIn("TURN over UDP: works", verdict)
        self.assertIn("TURN over TCP: works", verdict)
        self.assertIn("relay-only data channel: passed", verdict)
        for kind in ("host", "srflx", "relay"):
            self.assertIn(f"\t{kind}\t", results)
        ended = yield child.stop()
        self.assertEqual(getattr(ended, "exitCode", None), 0, child.text())
