# -*- test-case-name: test.unit.test_tap -*-
"""C{twistd p2pnet}: command-line L{Options} and L{makeService}.

Options are generated from L{p2pnet.config.settings}, so every setting has its flag and
C{twistd p2pnet --help} documents them all. A configuration problem prints one line that
names the setting and exits with status 1, before or while ports are opened.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage

from p2pnet.app import buildService
from p2pnet.config import Config, Setting, fileSettings, loadConfig, settings
from p2pnet.errors import ConfigError
from p2pnet.listen import raiseDescriptorLimit
from p2pnet.logformat import useJsonLog

log = Logger()

__all__ = ["Options", "makeService"]


def _fail(error: ConfigError | str) -> None:
    # The real stderr: once twistd has started logging, sys.stderr feeds the log.
    stream = sys.__stderr__ or sys.stderr
    stream.write(f"p2pnet: {error}\n")
    stream.flush()
    raise SystemExit(1)


def _optionMethod(s: Setting) -> Any:
    if s.switch:

        def method(self: Options) -> None:
            self.given[s.key] = True

    elif s.repeatable:

        def method(self: Options, value: str) -> None:  # type: ignore[misc]
            self.given.setdefault(s.key, []).append(value)

    else:

        def method(self: Options, value: str) -> None:  # type: ignore[misc]
            self.given[s.key] = value

    default = s.default
    if s.switch or default is None or default in ((), ""):
        shown = ""
    elif s.repeatable:
        shown = f" [default: {', '.join(map(str, default))}]"
    elif isinstance(default, tuple):
        shown = f" [default: {','.join(map(str, default))}]"
    else:
        shown = f" [default: {default}]"
    method.__doc__ = s.help + (" (repeatable)" if s.repeatable else "") + shown
    method.__name__ = "opt_" + s.attr
    return method


class Options(usage.Options):
    """Command-line options of C{twistd p2pnet}; C{self.config} holds the result."""

    synopsis = "[options]"
    longdesc = (
        "Run the p2pnet appliance. Every option is also a key of the TOML file given "
        "with --config; an option on the command line wins over the file."
    )
    optParameters = [["config", "c", None, "TOML file with settings."]]

    config: Config

    def __init__(self) -> None:
        super().__init__()
        self.given: dict[str, Any] = {}

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse; a usage error (an unknown flag, a missing value) is one line naming it
        and exit status 1, not twistd's whole usage text."""
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            _fail(f"{e} (twistd p2pnet --help lists every option)")

    def postOptions(self) -> None:
        try:
            self.config = loadConfig(self.given, self["config"])
            twistdOptions = getattr(self, "parent", None)
            if self.config.log_format == "json" and twistdOptions is not None:
                useJsonLog(twistdOptions)
        except ConfigError as e:
            _fail(e)


def _fileOptionMethod(key: str, s: Setting) -> Any:
    def method(self: Options, value: str) -> None:
        self.given[key] = value

    kind = "one value per line" if s.repeatable else "its content, without the final newline"
    method.__doc__ = f"File holding {s.key} ({kind}): keeps the secret off the command line."
    method.__name__ = "opt_" + key.replace("-", "_")
    return method


for _s in settings():
    setattr(Options, "opt_" + _s.attr, _optionMethod(_s))
for _key, _s in fileSettings().items():
    setattr(Options, "opt_" + _key.replace("-", "_"), _fileOptionMethod(_key, _s))
del _s, _key


class CommandLineService(MultiService):
    """The root service under twistd: a L{ConfigError} while binding ends the process.

    Embedders do not get this: L{buildService} raises, and they decide.
    """

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except ConfigError as e:
            _fail(e)

    def startService(self) -> None:
        try:
            super().startService()
        except ConfigError as e:
            _fail(e)

    def stopService(self) -> Any:
        """Stop every service; once they stopped cleanly after a SIGTERM, make twistd
        exit with status 0 instead of re-raising the signal (status 143), which a
        supervisor may count as a failure (issue 14 item 19)."""
        from twisted.internet import reactor

        def clean(result: list[tuple[bool, object]]) -> object:
            stopped = all(ok for ok, _ in result)
            if stopped and getattr(reactor, "_exitSignal", None) == signal.SIGTERM:
                reactor._exitSignal = None  # type: ignore[attr-defined]
            return result

        return super().stopService().addCallback(clean)


def makeService(options: Options) -> MultiService:
    """The appliance configured by C{options}, ready for twistd to start.

    The process's soft descriptor limit is raised to the hard limit first (issue 14
    item 13): the connection guard's budget is that limit minus a reserve.
    """
    before, after = raiseDescriptorLimit()
    if after != before:
        log.info("descriptor limit raised from {before} to {after}", before=before, after=after)
    root = CommandLineService()
    try:
        appliance = buildService(options.config,
                                 load=lambda: loadConfig(options.given, options["config"]))
    except ConfigError as e:
        _fail(e)
    appliance.setServiceParent(root)
    return root
