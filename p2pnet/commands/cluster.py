# -*- test-case-name: test.unit.test_cluster,test.interop.test_cluster_redis -*-
"""C{p2pnet cluster --store URL [--json]}: the nodes sharing a store, their services and
load (TURN allocations, RustDesk peers online there, relay pairs, gateway clients), from
the node table each node writes (L{p2pnet.cluster})."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from p2pnet.commands import runOnStore, usingStore
from p2pnet.commands.operate import formatTable

__all__ = ["nodeRows", "register"]


def nodeRows(nodes: dict[str, dict[str, Any]], now: float) -> str:
    """The node table as text."""
    rows = []
    for name, state in sorted(nodes.items()):
        load = state.get("load", {})
        rows.append((name, ",".join(state.get("services", [])),
                     str(load.get("allocations", 0)), str(load.get("peersOnline", 0)),
                     str(load.get("relayPairs", 0)), str(load.get("gatewayClients", 0)),
                     f"{max(0, int(now - state.get('startedAt', now)))}s",
                     f"{max(0, int(now - state.get('updatedAt', now)))}s ago"))
    return formatTable(rows, ("NODE", "SERVICES", "ALLOCATIONS", "PEERS", "RELAY PAIRS",
                              "GATEWAY CLIENTS", "UP", "UPDATED"))


async def _main(reactor: Any, args: argparse.Namespace) -> int:
    from p2pnet.store.redis import RedisNodes

    table = RedisNodes(args.store)

    async def work() -> int:
        nodes = await table.nodes()
        if args.json:
            sys.stdout.write(json.dumps(nodes, indent=2, sort_keys=True) + "\n")
        elif nodes:
            sys.stdout.write(nodeRows(nodes, reactor.seconds()))
        else:
            sys.stdout.write("no node has written to this store in the last 30 s\n")
        return 0

    return await usingStore(args, table, work)


def run(args: argparse.Namespace) -> int:
    """List the nodes of C{--store}."""
    return runOnStore(_main, args, 30.0)


def register(subparsers: Any) -> None:
    """Add C{cluster}."""
    parser = subparsers.add_parser("cluster", help="the nodes sharing a store and their load")
    parser.add_argument("--store", required=True, metavar="URL",
                        help="the store the nodes name (redis://... or redis-sentinel://...)")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.set_defaults(run=run)
