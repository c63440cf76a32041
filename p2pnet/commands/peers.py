# -*- test-case-name: test.unit.test_commands_rustdesk -*-
"""C{p2pnet peers}: the RustDesk peer registry, for the operator.

C{list}, C{show ID} and C{import-hbbs FILE} work on C{DATA_DIR/peers.sqlite3} directly
(SQLite WAL lets them run while the server is up); C{online} asks the running server
through the gateway (L{p2pnet.commands.operate}).
"""

from __future__ import annotations

import argparse
import base64
import os
import sqlite3
import sys

from p2pnet.commands import addDataDir
from p2pnet.commands.operate import registerPeersOnline
from p2pnet.store.peers import (
    FILENAME,
    countPeers,
    importHbbs,
    listPeers,
    openSync,
    selectPeer,
)

__all__ = ["register"]


def _open(args: argparse.Namespace) -> sqlite3.Connection | None:
    path = os.path.join(args.data_dir, FILENAME)
    if not os.path.exists(path) and args.peers_command != "import-hbbs":
        sys.stderr.write(f"p2pnet: no peer registry at {path}\n")
        return None
    if args.peers_command == "import-hbbs":
        os.makedirs(args.data_dir, mode=0o700, exist_ok=True)
    return openSync(path)


def run(args: argparse.Namespace) -> int:
    """Run the chosen C{peers} sub-command."""
    conn = _open(args)
    if conn is None:
        return 1
    out = args.out or sys.stdout
    try:
        cursor = conn.cursor()
        if args.peers_command == "list":
            records = listPeers(cursor, args.limit, args.offset)
            out.write(f"{countPeers(cursor)} peers\n")
            for r in records:
                out.write(f"{r.id}\t{r.ip or '-'}\t{r.createdAt}\n")
            return 0
        if args.peers_command == "show":
            record = selectPeer(cursor, args.id)
            if record is None:
                sys.stderr.write(f"p2pnet: no peer {args.id!r}\n")
                return 1
            out.write(f"id:         {record.id}\n")
            out.write(f"ip:         {record.ip or '-'}\n")
            out.write(f"registered: {record.createdAt}\n")
            out.write(f"pk:         {base64.b64encode(record.pk).decode()}\n")
            out.write(f"uuid:       {base64.b64encode(record.uuid).decode()}\n")
            return 0
        try:
            with conn:
                added = importHbbs(cursor, args.file)
        except sqlite3.Error as e:
            sys.stderr.write(f"p2pnet: cannot import {args.file}: {e}\n")
            return 1
        out.write(f"imported {added} peers from {args.file}\n")
        return 0
    finally:
        conn.close()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add C{peers list|show|import-hbbs}."""
    parser = subparsers.add_parser("peers", help="list, show or import RustDesk peers")
    sub = parser.add_subparsers(dest="peers_command", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="registered peers, by id")
    listing.add_argument("--limit", type=int, default=1000)
    listing.add_argument("--offset", type=int, default=0)
    show = sub.add_parser("show", help="one peer's details")
    show.add_argument("id")
    imported = sub.add_parser("import-hbbs", help="import peers from hbbs's db_v2.sqlite3")
    imported.add_argument("file")
    online = registerPeersOnline(sub)
    addDataDir(parser, listing, show, imported, online)  # before or after the action
    parser.set_defaults(run=run, out=None)
