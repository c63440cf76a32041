# -*- test-case-name: test.unit.test_commands_run -*-
"""The C{p2pnet} command for people: one sub-command per module in L{COMMANDS}.

Each module has C{register(subparsers)}, which adds its parser and sets C{run} to a
function taking the parsed arguments and returning the exit status.

A usage error (an unknown flag, a missing argument) is one line naming it and status
2; C{p2pnet --version} prints the version; Ctrl-C and a closed output pipe end a
command with one line, no traceback (see L{p2pnet.commands}).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from p2pnet._version import __version__
from p2pnet.commands import INTERRUPTED, closedPipe, fail

__all__ = ["COMMANDS", "Parser", "main"]

#: Modules that each add sub-commands, in the order C{p2pnet --help} lists them.
COMMANDS: tuple[str, ...] = (
    "p2pnet.commands.stun",
    "p2pnet.commands.turn",
    "p2pnet.commands.ice",
    "p2pnet.commands.users",
    "p2pnet.commands.keygen",
    "p2pnet.commands.peers",
    "p2pnet.commands.gateway",
    "p2pnet.commands.connect",
    "p2pnet.commands.operate",
    "p2pnet.commands.migrate",
    "p2pnet.commands.cluster",
)


class Parser(argparse.ArgumentParser):
    """An C{ArgumentParser} whose usage errors are one line (sub-command parsers too)."""

    def error(self, message: str) -> NoReturn:
        """C{p2pnet users: unrecognized arguments: --bogus (see p2pnet users --help)}."""
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def buildParser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = Parser(
        prog="p2pnet", description="Tools for the p2pnet appliance and its protocols."
    )
    parser.add_argument("--version", action="version", version=f"p2pnet {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run C{p2pnet ARGS}; return the exit status."""
    from p2pnet.commands.operate import OPERATOR_COMMANDS

    argv = list(sys.argv[1:] if argv is None else argv)
    if tuple(argv[:2]) in OPERATOR_COMMANDS:  # p2pnet turn sessions: turn-sessions
        argv[:2] = ["-".join(argv[:2])]
    args = buildParser().parse_args(argv)
    try:
        status = int(args.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return status
    except KeyboardInterrupt:
        return fail(args, "interrupted", INTERRUPTED)
    except BrokenPipeError:
        return closedPipe(args)


if __name__ == "__main__":
    sys.exit(main())
