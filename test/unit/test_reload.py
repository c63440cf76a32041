"""Reload (L{p2pnet.reload}, L{p2pnet.app.AppContext.reload}) without sockets."""

from __future__ import annotations

import os
import signal
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.app import AppContext
from p2pnet.certs import ReloadableTLS, generateSelfSigned, loadServerTLS
from p2pnet.config import Config
from p2pnet.errors import ConfigError
from p2pnet.reload import ReloadService
from p2pnet.testing import UDPMemoryReactor


class Reactor(Clock):
    def callFromThread(self, f: Any, *args: Any) -> None:
        self.callLater(0, f, *args)


class ReloadServiceTests(SynchronousTestCase):
    def test_reportAndRefusal(self) -> None:
        answers: list[Any] = [["stun-port"], ConfigError("tls-cert", "no such file")]

        def apply() -> list[str]:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

        reloader = ReloadService(Reactor(), apply)
        self.assertEqual(reloader.reload({}), {"reloaded": True, "restartNeeded": ["stun-port"]})
        error = self.assertRaises(ValueError, reloader.reload, {})
        self.assertEqual(str(error), "tls-cert: no such file")

    def test_sighup(self) -> None:
        calls: list[bool] = []
        clock = Reactor()
        reloader = ReloadService(clock, lambda: calls.append(True) or [])
        reloader.startService()
        self.addCleanup(reloader.stopService)
        os.kill(os.getpid(), signal.SIGHUP)
        clock.advance(0)
        self.assertEqual(calls, [True])
        reloader.stopService()
        self.assertNotEqual(signal.getsignal(signal.SIGHUP), reloader._signalled)


class ContextTests(SynchronousTestCase):
    def test_fixedSettingsKeepTheirValues(self) -> None:
        """Changed reloadable settings apply; the others are named and keep their old
        value."""
        dataDir = self.mktemp()
        old = Config(services=("stun",), listen=("127.0.0.1",), stun_port=0, tls_port=0,
                     user=(("amy", "pw"),), data_dir=dataDir)
        new = Config(services=("stun",), listen=("127.0.0.1",), stun_port=3479, tls_port=0,
                     user=(("amy", "pw"), ("bob", "pw2")), data_dir=dataDir)
        context = AppContext(old, UDPMemoryReactor())
        self.assertEqual(context.reload(new), ["stun-port"])
        self.assertEqual(context.config.stun_port, 0)
        self.assertEqual(context.config.user, (("amy", "pw"), ("bob", "pw2")))


class TlsTests(SynchronousTestCase):
    def test_replace(self) -> None:
        paths = []
        for name in ("a", "b"):
            cert, key = self.mktemp(), self.mktemp()
            generateSelfSigned(cert, key, commonName=name)
            paths.append((cert, key))
        tls = ReloadableTLS(loadServerTLS(*paths[0]))
        first = tls.getContext()
        self.assertIs(tls.getContext(), first)
        tls.replace(loadServerTLS(*paths[1]))
        self.assertIsNot(tls.getContext(), first)
