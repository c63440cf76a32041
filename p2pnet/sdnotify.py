# -*- test-case-name: test.unit.test_sdnotify,test.interop.test_drain -*-
"""systemd's readiness protocol (C{sd_notify}): READY=1 once every listener is bound,
STOPPING=1 when the appliance stops, STATUS= lines between.

When systemd starts a C{Type=notify} unit it sets C{NOTIFY_SOCKET} to a Unix datagram
socket (a path, or an abstract name written with a leading C{@}); each notification is
one datagram of C{KEY=VALUE} lines. Without C{NOTIFY_SOCKET} nothing is sent. Why these
few lines instead of a library: docs/architecture.md §8.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

__all__ = ["SystemdNotifier", "notify"]

log = Logger()


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send C{state} (e.g. C{"READY=1"}) to systemd; C{False} when there is no
    C{NOTIFY_SOCKET} or the datagram could not be sent (logged)."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), target)
    except OSError as e:
        log.warn("cannot notify systemd at {address}: {error}", address=address, error=e)
        return False
    return True


class SystemdNotifier(Service):
    """READY=1 when the reactor runs (every listener of the appliance was bound while
    the services started), STOPPING=1 when the appliance stops.

    @param reactor: runs the READY notification once it is running.
    @param send: how a state is sent (default L{notify}).
    """

    name: str | None = "sd-notify"

    def __init__(self, reactor: Any, send: Callable[[str], object] = notify) -> None:
        self.reactor = reactor
        self.send = send

    def startService(self) -> None:
        """Notify READY=1 as soon as the reactor runs."""
        super().startService()
        self.reactor.callWhenRunning(self.send, "READY=1\nSTATUS=serving")

    def stopService(self) -> None:
        """Notify STOPPING=1."""
        super().stopService()
        self.send("STOPPING=1\nSTATUS=stopping")
