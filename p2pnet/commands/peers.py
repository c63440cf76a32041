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
from typing import Any

from p2pnet.commands import addDataDir, fail, runOnStore, usingStore
from p2pnet.commands.operate import registerPeersOnline
from p2pnet.store.peers import (
    FILENAME,
    PeerRecord,
    countPeers,
    importHbbs,
    listPeers,
    openSync,
    readHbbs,
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


def _writeList(out: Any, count: int, records: list[PeerRecord]) -> None:
    out.write(f"{count} peers\n")
    for r in records:
        out.write(f"{r.id}\t{r.ip or '-'}\t{r.createdAt}\n")


def _writeShow(out: Any, record: PeerRecord) -> None:
    out.write(f"id:         {record.id}\n")
    out.write(f"ip:         {record.ip or '-'}\n")
    out.write(f"registered: {record.createdAt}\n")
    out.write(f"pk:         {base64.b64encode(record.pk).decode()}\n")
    out.write(f"uuid:       {base64.b64encode(record.uuid).decode()}\n")


async def _inRedis(reactor: Any, args: argparse.Namespace) -> int:
    """The action on the Redis registry of C{--store}."""
    from p2pnet.store.redis import RedisPeerStore

    out = args.out or sys.stdout
    store = RedisPeerStore(args.store)

    async def work() -> int:
        if args.peers_command == "list":
            _writeList(out, await store.count(), await store.list(args.limit, args.offset))
            return 0
        if args.peers_command == "show":
            record = await store.get(args.id)
            if record is None:
                return fail(args, f"no peer {args.id!r}")
            _writeShow(out, record)
            return 0
        try:
            records = readHbbs(args.file)
        except sqlite3.Error as e:
            return fail(args, f"cannot import {args.file}: {e}")
        out.write(f"imported {await store.importRecords(records)} peers from {args.file}\n")
        return 0

    return await usingStore(args, store, work)


def run(args: argparse.Namespace) -> int:
    """Run the chosen C{peers} sub-command."""
    if args.store:
        return runOnStore(_inRedis, args, 60.0)
    conn = _open(args)
    if conn is None:
        return 1
    out = args.out or sys.stdout
    try:
        cursor = conn.cursor()
        if args.peers_command == "list":
            _writeList(out, countPeers(cursor), listPeers(cursor, args.limit, args.offset))
            return 0
        if args.peers_command == "show":
            record = selectPeer(cursor, args.id)
            if record is None:
                sys.stderr.write(f"p2pnet: no peer {args.id!r}\n")
                return 1
            _writeShow(out, record)
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
    text = ("the servers' store, redis://... or redis-sentinel://... (default: the data directory's SQLite "
            "registry); the same URL as the store setting")
    parser.add_argument("--store", default="", metavar="URL", help=text)
    for action in (listing, show, imported):
        action.add_argument("--store", default=argparse.SUPPRESS, metavar="URL", help=text)
    parser.set_defaults(run=run, out=None)
