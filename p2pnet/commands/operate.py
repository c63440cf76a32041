# -*- test-case-name: test.unit.test_commands_operate,test.interop.test_commands_operate -*-
"""Sessions from the shell: C{p2pnet turn sessions|kill}, C{p2pnet peers online},
C{p2pnet relay pairs|kill}, after coturn's CLI and eturnalctl.

Each goes through the control gateway as an operator, with the methods C{p2pnet gateway
call} reaches (C{turn.allocations.list|kill}, C{rendezvous.peers.list},
C{relay.pairs.list|kill}), so the running server is asked, not its files; the gateway's
connection options (C{--url}, C{--token} or the token generated in C{--data-dir}, ...)
apply. Lists are read page by page to the end; C{--json} prints the rows as one JSON
array instead of a table.

C{p2pnet turn HOST} already tests a TURN server, so C{turn sessions} and C{turn kill}
are separate sub-commands the C{p2pnet} command routes to (L{OPERATOR_COMMANDS}).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from p2pnet.commands import DEFAULT_DATA_DIR, addDataDir, reactMain
from p2pnet.commands.gateway import addConnectionOptions, callReporting, connectionFrom
from p2pnet.commands.stun import splitHostPort

__all__ = ["OPERATOR_COMMANDS", "formatTable", "register", "registerPeersOnline"]

#: C{p2pnet WORD ACTION} pairs that name a command of this module (C{turn sessions} is
#: the sub-command C{turn-sessions}).
OPERATOR_COMMANDS = {("turn", "sessions"), ("turn", "kill")}

#: Pages read at most for one list (at the gateway's 1,000 rows a page).
MAX_PAGES = 1000


def formatTable(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Columns padded to their widest cell, the header first; no trailing spaces."""
    table = [list(header)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in table]
    return "\n".join(lines) + "\n"


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _bytes(count: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def turnSessionRows(items: list[dict[str, Any]]) -> str:
    """C{turn.allocations.list} rows as a table."""
    return formatTable([
        (i["user"], i["client"], i["transport"], " ".join(i["relayed"]), _age(i["age"]),
         _bytes(i["bytesToPeers"]), _bytes(i["bytesFromPeers"]), str(len(i["permissions"])),
         str(len(i["channels"])))
        for i in items
    ], ("USER", "CLIENT", "TRANSPORT", "RELAYED", "AGE", "TO PEERS", "FROM PEERS",
        "PERMISSIONS", "CHANNELS"))


def peerRows(items: list[dict[str, Any]]) -> str:
    """C{rendezvous.peers.list} rows as a table."""
    return formatTable([
        (i["id"], f"{i['address'][0]}:{i['address'][1]}", i["transport"],
         _age(i["lastSeen"])) for i in items
    ], ("ID", "ADDRESS", "TRANSPORT", "LAST SEEN"))


def pairRows(items: list[dict[str, Any]]) -> str:
    """C{relay.pairs.list} rows as a table."""
    return formatTable([
        (i["uuid"], i["a"], i["b"], _age(i["age"]), _bytes(i["bytes"]),
         f"{_bytes(int(i['rate']))}/s") for i in items
    ], ("UUID", "A", "B", "AGE", "BYTES", "RATE"))


def _options(parser: argparse.ArgumentParser, listing: bool) -> None:
    addConnectionOptions(parser)
    if listing:
        parser.add_argument("--json", action="store_true",
                            help="print the rows as a JSON array instead of a table")


async def readList(reactor: Any, args: argparse.Namespace, method: str,
                   options: Any, tlsPolicy: Any) -> tuple[int, list[Any]]:
    """Every row of the gateway list C{method}, page after page."""
    rows: list[Any] = []
    offset: int | None = 0
    for _ in range(MAX_PAGES):
        if offset is None:
            break
        status, page = await callReporting(reactor, args, method,
                                           {"offset": offset, "limit": 1000}, options,
                                           tlsPolicy)
        if status:
            return status, []
        rows += page["items"]
        offset = page["nextOffset"]
    return 0, rows


def _listCommand(method: str, table: Callable[[list[Any]], str],
                 keep: Callable[[argparse.Namespace, Any], bool] = lambda args, row: True
                 ) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            options, tlsPolicy = connectionFrom(args)
        except ValueError as e:
            sys.stderr.write(f"p2pnet: {e}\n")
            return 2

        async def main(reactor: Any, args: argparse.Namespace) -> int:
            status, rows = await readList(reactor, args, method, options, tlsPolicy)
            if status:
                return status
            rows = [r for r in rows if keep(args, r)]
            out: IO[str] = sys.stdout
            if args.json:
                out.write(json.dumps(rows, indent=2, sort_keys=True) + "\n")
            elif rows:
                out.write(table(rows))
            else:
                out.write("none\n")
            return 0

        reactMain(main, args, deadline=args.timeout)

    return run


def _actionCommand(method: str, params: Callable[[argparse.Namespace], dict[str, Any]],
                   report: Callable[[dict[str, Any]], tuple[int, str]]
                   ) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            options, tlsPolicy = connectionFrom(args)
            request = params(args)
        except ValueError as e:
            sys.stderr.write(f"p2pnet: {e}\n")
            return 2

        async def main(reactor: Any, args: argparse.Namespace) -> int:
            status, answer = await callReporting(reactor, args, method, request, options,
                                                 tlsPolicy)
            if status:
                return status
            code, line = report(answer)
            (sys.stdout if code == 0 else sys.stderr).write(line + "\n")
            return code

        reactMain(main, args, deadline=args.timeout)

    return run


def _killTarget(args: argparse.Namespace) -> dict[str, Any]:
    if args.user is not None:
        return {"user": args.user}
    try:
        host, port = splitHostPort(args.client)
    except ValueError as e:
        raise ValueError(f"--client: {e}") from None
    return {"client": host} if port is None else {"client": host, "port": port}


def _killed(answer: dict[str, Any]) -> tuple[int, str]:
    count = answer["killed"]
    return 0, f"killed {count} allocation{'s' if count != 1 else ''}"


def _pairKilled(answer: dict[str, Any]) -> tuple[int, str]:
    if answer["killed"]:
        return 0, f"ended relay pair {answer['uuid']}"
    return 1, f"p2pnet: no active relay pair {answer['uuid']}"


def register(subparsers: Any) -> None:
    """Add C{turn sessions}, C{turn kill} (as C{turn-sessions}, C{turn-kill}) and
    C{relay pairs|kill}."""
    sessions = subparsers.add_parser(
        "turn-sessions", prog="p2pnet turn sessions",
        help="the running server's TURN allocations (also: p2pnet turn sessions)")
    sessions.add_argument("--user", help="only this user's allocations")
    _options(sessions, listing=True)
    sessions.set_defaults(run=_listCommand(
        "turn.allocations.list", turnSessionRows,
        lambda args, row: args.user is None or row["user"] == args.user))
    kill = subparsers.add_parser(
        "turn-kill", prog="p2pnet turn kill",
        help="end TURN allocations of a user or client (also: p2pnet turn kill)")
    target = kill.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", help="every allocation of this user")
    target.add_argument("--client", metavar="ADDR[:PORT]",
                        help="every allocation from this address (or exactly this one)")
    _options(kill, listing=False)
    kill.set_defaults(run=_actionCommand("turn.allocations.kill", _killTarget, _killed))

    relay = subparsers.add_parser("relay", help="the running relay server's pairs")
    actions = relay.add_subparsers(dest="relayCommand", required=True, metavar="ACTION")
    pairs = actions.add_parser("pairs", help="active relay pairs, oldest first")
    _options(pairs, listing=True)
    pairs.set_defaults(run=_listCommand("relay.pairs.list", pairRows))
    end = actions.add_parser("kill", help="end one relay pair (both connections close)")
    end.add_argument("uuid", help="the pair's uuid (p2pnet relay pairs lists them)")
    _options(end, listing=False)
    end.set_defaults(run=_actionCommand("relay.pairs.kill",
                                        lambda args: {"uuid": args.uuid}, _pairKilled))
    addDataDir(relay, pairs, end)
    for parser in (sessions, kill):
        parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, metavar="DIR",
                            help="the server's data directory, for its generated token "
                                 f"(default: {DEFAULT_DATA_DIR})")


def registerPeersOnline(actions: Any) -> argparse.ArgumentParser:
    """Add C{online} to C{p2pnet peers}' actions: the running server's online peers."""
    online = actions.add_parser("online", help="peers online now, from the running server")
    _options(online, listing=True)
    online.set_defaults(run=_listCommand("rendezvous.peers.list", peerRows))
    parser: argparse.ArgumentParser = online
    return parser
