# -*- test-case-name: test.unit.test_hid -*-
"""Where the KVM node's USB HID reports go (docs/kvm-node.md "Input").

A sink takes whole reports: the 8-byte boot keyboard report or the 6-byte absolute mouse
report that L{p2pnet.node.input} builds. L{FileHidSink} writes them to a USB gadget's
C{/dev/hidgN} (opened non-blocking: a host that stops reading costs a dropped report, never
a stalled reactor) or appends them to a regular file; L{MemoryHidSink} records them for
tests and embedders. A sink never raises into the viewer's session: write errors are
counted and the device is reopened on the next report.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque

from zope.interface import Interface, implementer

__all__ = ["FileHidSink", "IHidSink", "MemoryHidSink"]


class IHidSink(Interface):
    """Receives USB HID reports, one whole report per call."""

    def write(report: bytes) -> None:
        """Deliver one report. Never raises."""


@implementer(IHidSink)
class MemoryHidSink:
    """Records reports in memory (the last C{limit} of them).

    @ivar reports: the recorded reports, oldest first.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.reports: deque[bytes] = deque(maxlen=limit)

    def write(self, report: bytes) -> None:
        """Record C{report}."""
        self.reports.append(bytes(report))


@implementer(IHidSink)
class FileHidSink:
    """Writes reports to a gadget device (non-blocking) or appends them to a regular file.

    The path is opened on the first report, not at construction, so a node starts before
    its gadget is configured. A path under C{/dev/} is never created; any other missing
    path is created (mode 0600) as a regular file.

    @ivar written: reports written.
    @ivar dropped: reports the device would not take now (the host is not reading).
    @ivar errors: reports lost to an error (open or write); C{lastError} says which.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self.lastError: str | None = None

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            isDevice = stat.S_ISCHR(os.stat(self.path).st_mode)
        except FileNotFoundError:
            isDevice = False
        if not isDevice:
            flags |= os.O_APPEND
            if not os.path.abspath(self.path).startswith("/dev/"):
                flags |= os.O_CREAT
        return os.open(self.path, flags, 0o600)

    def write(self, report: bytes) -> None:
        """Write C{report}; count, never raise, what goes wrong."""
        try:
            if self._fd is None:
                self._fd = self._open()
            os.write(self._fd, report)
        except BlockingIOError:
            self.dropped += 1
            return
        except OSError as e:
            self.errors += 1
            self.lastError = f"{self.path}: {os.strerror(e.errno or errno.EIO)}"
            self.close()
            return
        self.written += 1

    def close(self) -> None:
        """Close the device or file; the next report opens it again."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass
