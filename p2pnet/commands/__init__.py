# -*- test-case-name: test.unit.test_commands_run -*-
"""Sub-commands of the C{p2pnet} command (see L{p2pnet.cli}), and what they share.

Every client command ends the same way (issue 14 item 7):

  - within its deadline whatever the server does (L{reactMain}'s C{deadline}: the
    command's C{--timeout} covers connecting, TLS and the answer), with one line that
    says what it was waiting for (L{step}), not Twisted's C{(30, 'Deferred')};
  - on Ctrl-C with one line C{"p2pnet X: interrupted"} and status 130;
  - on a closed output pipe (C{p2pnet peers list | head}) with one line and status 141
    (L{closedPipe});
  - never with a traceback for something a person can fix: L{fail} writes C{"p2pnet X:
    what went wrong; what to do"}.

L{addDataDir} gives a command group one C{--data-dir} accepted before or after its
action (C{p2pnet users --data-dir D list} and C{p2pnet users list --data-dir D}).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import IO, Any, NoReturn

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.task import react

__all__ = [
    "BROKEN_PIPE",
    "DEFAULT_DATA_DIR",
    "INTERRUPTED",
    "addDataDir",
    "closedPipe",
    "fail",
    "reactMain",
    "step",
]

#: The server's default data directory (L{p2pnet.config.Config.data_dir}).
DEFAULT_DATA_DIR = "./p2pnet-data"

#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
#: Exit status after a closed output pipe (128 + SIGPIPE).
BROKEN_PIPE = 141


def commandName(args: argparse.Namespace) -> str:
    """C{p2pnet stun}: how error lines name the command."""
    return f"p2pnet {getattr(args, 'command', '') or ''}".rstrip()


def fail(args: argparse.Namespace, message: str, status: int = 1,
         err: IO[str] | None = None) -> int:
    """Write C{"p2pnet X: message"} on one line to C{err} (standard error); return
    C{status}. The message should say what to do, not only what went wrong."""
    stream = sys.stderr if err is None else err
    text = " ".join(message.split())  # one line whatever the message holds
    stream.write(f"{commandName(args)}: {text}\n")
    stream.flush()
    return status


def step(args: argparse.Namespace, text: str) -> None:
    """Record what the command waits for now (C{"TLS handshake with 192.0.2.1:5349"}),
    for the line written when its deadline passes."""
    args.step = text


def closedPipe(args: argparse.Namespace) -> int:
    """The reader of standard output went away: one line on standard error, standard
    output pointed at C{/dev/null} so the interpreter's final flush stays quiet; returns
    141."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    try:
        return fail(args, "output closed (broken pipe)", BROKEN_PIPE)
    except OSError:
        return BROKEN_PIPE


def addDataDir(parser: argparse.ArgumentParser, *actions: argparse.ArgumentParser) -> None:
    """One C{--data-dir} for a command group, given before or after the action.

    The group parser holds the default; on each action parser the option only
    overrides what was given (C{argparse.SUPPRESS}), so either position works.
    """
    text = f"the server's data directory (default: {DEFAULT_DATA_DIR})"
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, metavar="DIR", help=text)
    for action in actions:
        action.add_argument("--data-dir", default=argparse.SUPPRESS, metavar="DIR", help=text)


def reactMain(
    main: Callable[[Any, argparse.Namespace], Awaitable[int]],
    args: argparse.Namespace,
    deadline: float | None = None,
) -> NoReturn:
    """Run C{main(reactor, args)} on the global reactor with L{twisted.internet.task.react}
    and exit the process with the status it returns.

    @param main: the command's work: an C{async} function of the reactor and C{args}
        returning the exit status.
    @param deadline: seconds after which the command gives up, whatever it waits for;
        the line then names the last L{step}. C{None}: the command bounds itself.

    Ctrl-C ends it with status 130, a closed standard output with 141, each with one
    line (see the module docstring); another exception is logged by C{react} (a bug).
    """

    async def run(reactor: Any) -> None:
        status = await guarded(reactor, main, args, deadline)
        if status:
            raise SystemExit(status)

    react(run)


async def guarded(
    reactor: Any,
    main: Callable[[Any, argparse.Namespace], Awaitable[int]],
    args: argparse.Namespace,
    deadline: float | None = None,
    err: IO[str] | None = None,
    installSignal: bool = True,
) -> int:
    """C{main(reactor, args)} under a deadline and Ctrl-C; its status, or the status of
    how it was cut short (1 deadline, 130 interrupted, 141 closed pipe).

    Used by L{reactMain}; tests call it with a clock and C{installSignal=False}.
    """
    work: Deferred[int] = Deferred.fromCoroutine(main(reactor, args))  # type: ignore[arg-type]
    reason: list[str] = []

    def interrupt() -> None:
        reason.append("interrupted")
        work.cancel()

    if installSignal:
        def onSignal(number: int, frame: Any) -> None:
            reactor.callFromThread(interrupt)

        reactor.callWhenRunning(signal.signal, signal.SIGINT, onSignal)

    def expire() -> None:
        reason.append("deadline")
        work.cancel()

    timer = reactor.callLater(deadline, expire) if deadline is not None else None
    try:
        return await work
    except CancelledError:
        if "interrupted" in reason:
            return fail(args, "interrupted", INTERRUPTED, err)
        if "deadline" in reason:
            return _gaveUp(args, deadline, err)
        raise
    except TimeoutError as e:  # a step's own Deferred.addTimeout
        seconds = e.args[0] if e.args and isinstance(e.args[0], int | float) else deadline
        return _gaveUp(args, seconds, err)
    except BrokenPipeError:
        return closedPipe(args)
    finally:
        if timer is not None and timer.active():
            timer.cancel()


def _gaveUp(args: argparse.Namespace, seconds: float | None, err: IO[str] | None) -> int:
    waiting = getattr(args, "step", "")
    what = f" while waiting for {waiting}" if waiting else ""
    after = f" after {seconds:g} s" if seconds is not None else ""
    return fail(args, f"gave up{after}{what} (raise --timeout to wait longer)", 1, err)


async def usingStore(args: argparse.Namespace, store: Any,
                     work: Callable[[], Awaitable[int]]) -> int:
    """Run C{work} on a networked C{store} (C{--store}), closing it after; a failure of
    the store is one line and status 1 (the deadline and Ctrl-C propagate)."""
    step(args, "the store at --store")
    try:
        return await work()
    except Exception as e:
        if isinstance(e, CancelledError):
            raise
        return fail(args, f"cannot use the store: {e}")
    finally:
        store.close()


def runOnStore(main: Callable[[Any, argparse.Namespace], Awaitable[int]],
               args: argparse.Namespace, deadline: float) -> int:
    """L{reactMain} for a command on the networked store of C{--store}; a malformed URL
    is one line and status 2 instead."""
    from p2pnet.config import parseStoreUrl

    try:
        parseStoreUrl(args.store)
    except ValueError as e:
        return fail(args, f"--store: {e}", 2)
    reactMain(main, args, deadline=deadline)
