# -*- test-case-name: test.test_cli -*-
"""The C{p2pnet} command for people: one sub-command per module in L{COMMANDS}.

Each module has C{register(subparsers)}, which adds its parser and sets C{run} to a
function taking the parsed arguments and returning the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "main"]

#: Modules that each add sub-commands, in the order C{p2pnet --help} lists them.
COMMANDS: tuple[str, ...] = (
    "p2pnet.commands.stun",
    "p2pnet.commands.turn",
    "p2pnet.commands.users",
    "p2pnet.commands.keygen",
    "p2pnet.commands.peers",
    "p2pnet.commands.gateway",
)


def buildParser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="p2pnet", description="Tools for the p2pnet appliance and its protocols."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run C{p2pnet ARGS}; return the exit status."""
    args = buildParser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
