# -*- test-case-name: test.unit.test_reload,test.interop.test_reload -*-
"""Reload without restart: SIGHUP, or the gateway method C{config.reload}.

A reload reads the settings again from where they came (the TOML file of C{--config},
the environment, the command line), re-reads the files the services keep (the TLS
certificate and key, the TURN user table, the relay's black and block lists) and applies
what can change while running: the certificate (served to the next TLS handshake), the
C{user} entries and REST secret, the gateway's auth mode and shared secret. Allocations,
registrations, relay pairs and gateway sessions are untouched. A setting that cannot
change while running (a port, the data directory, ...) keeps its old value, and one log
line names it; a new file that does not load (a TOML error, a bad value, a certificate
that does not match its key) is refused with one line and the old settings stay.

The work is the appliance's (L{p2pnet.app.AppContext.reload}); this module is the
trigger and the report, so it imports no service.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

from p2pnet.errors import ConfigError

__all__ = ["ReloadService"]

log = Logger()


class ReloadService(Service):
    """Runs a reload on SIGHUP or when called, and reports it.

    @param reactor: C{callFromThread} for the signal.
    @param apply: does the reload; returns the keys of changed settings that keep
        their old value; raises L{ConfigError} to refuse it.
    """

    name: str | None = "reload"

    def __init__(self, reactor: Any, apply: Callable[[], list[str]]) -> None:
        self.reactor = reactor
        self.apply = apply
        self._previousHandler: Any = None

    def reload(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Reload now: C{{"reloaded": True, "restartNeeded": [keys]}}.

        @raise ValueError: the new settings were refused (the message is the one line
            logged); the old ones stay.
        """
        try:
            fixed = self.apply()
        except ConfigError as e:
            log.warn("reload refused, the running settings stay: {error}", error=str(e))
            raise ValueError(str(e)) from None
        if fixed:
            log.warn("reloaded; these settings cannot change while running and keep their "
                     "old values until a restart: {keys}", keys=", ".join(fixed))
        else:
            log.info("reloaded the settings, the TLS certificate, the user table and the "
                     "relay lists")
        return {"reloaded": True, "restartNeeded": fixed}

    def _signalled(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self._fromSignal)

    def _fromSignal(self) -> None:
        try:
            self.reload()
        except ValueError:
            pass  # logged

    def startService(self) -> None:
        """Take SIGHUP (when the reactor runs in the main thread, as under twistd)."""
        super().startService()
        try:
            self._previousHandler = signal.signal(signal.SIGHUP, self._signalled)
        except ValueError:  # not the main thread: only the gateway method reloads
            self._previousHandler = None

    def stopService(self) -> None:
        """Give SIGHUP back."""
        super().stopService()
        if self._previousHandler is not None:
            signal.signal(signal.SIGHUP, self._previousHandler)
            self._previousHandler = None
