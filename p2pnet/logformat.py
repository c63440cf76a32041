# -*- test-case-name: test.unit.test_logformat,test.interop.test_logformat -*-
"""C{--log-format json}: twistd's log as one JSON object per line.

twistd builds its log observer after the plugin's options are parsed and before the
service starts. For C{json}, L{useJsonLog} points twistd's own C{--logger} option at
L{twistdJsonObserver}, which writes where twistd would have written text (C{--logfile},
stdout with C{--nodaemon}) through C{twisted.logger.jsonFileLogObserver}: each event as
C{eventAsJSON} gives it, with the same fields the text log formats (no record-separator
character, so every line is one JSON object).
"""

from __future__ import annotations

import sys
from typing import IO, Any

from twisted.logger import FileLogObserver, ILogObserver, jsonFileLogObserver
from twisted.python.logfile import LogFile

from p2pnet.errors import ConfigError

__all__ = ["jsonObserver", "twistdJsonObserver", "useJsonLog"]

#: The C{--logfile} and C{--nodaemon} values L{twistdJsonObserver} writes by.
_twistd: dict[str, Any] = {}


def jsonObserver(out: IO[Any]) -> FileLogObserver:
    """An observer writing each event to C{out} as one line of JSON."""
    return jsonFileLogObserver(out, recordSeparator="")


def useJsonLog(twistdOptions: Any) -> None:
    """Make twistd (whose parsed options are C{twistdOptions}) log JSON lines.

    @raise ConfigError: twistd was also given C{--logger} or C{--syslog}, which would
        decide the format themselves.
    """
    if twistdOptions.get("logger"):
        raise ConfigError("log-format", "json and twistd's --logger cannot be used together")
    if twistdOptions.get("syslog"):
        raise ConfigError("log-format", "json cannot go to syslog; use --logfile")
    _twistd["logfile"] = twistdOptions.get("logfile") or ""
    _twistd["nodaemon"] = bool(twistdOptions.get("nodaemon"))
    twistdOptions["logger"] = f"{__name__}.twistdJsonObserver"


def twistdJsonObserver() -> ILogObserver:
    """The JSON observer on the file twistd would have chosen (its C{--logger} factory)."""
    logfile, nodaemon = _twistd.get("logfile", ""), _twistd.get("nodaemon", False)
    out: IO[Any]
    if logfile == "-" or (nodaemon and not logfile):
        out = sys.stdout
    else:
        out = LogFile.fromFullPath(logfile or "twistd.log")
    return jsonObserver(out)
