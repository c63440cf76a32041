"""Sub-commands of the C{p2pnet} command (see L{p2pnet.cli})."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from twisted.internet.task import react

__all__ = ["reactMain"]


def reactMain(
    main: Callable[[Any, argparse.Namespace], Awaitable[int]], args: argparse.Namespace
) -> NoReturn:
    """Run C{main(reactor, args)} on the global reactor with L{twisted.internet.task.react}
    and exit the process with the status it returns.

    A status of 0 exits with 0; any other status is raised as C{SystemExit(status)} inside
    the reactor, which C{react} turns into the process's exit status. An exception C{main}
    raises is logged by C{react} and exits with 1.

    @param main: the command's work: an C{async} function of the reactor and C{args}
        returning the exit status.
    """

    async def run(reactor: Any) -> None:
        status = await main(reactor, args)
        if status:
            raise SystemExit(status)

    react(run)
