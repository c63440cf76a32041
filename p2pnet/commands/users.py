# -*- test-case-name: test.unit.test_commands_users -*-
"""C{p2pnet users add|del|list}: the durable TURN user table, for the operator.

Works on C{DATA_DIR/users.sqlite3} directly (SQLite WAL lets it run while the server
is up; the server re-reads the table within ten seconds). The password of C{add} is
read from standard input (one line) or C{--password-file} unless C{--password} gives
it, so it need not appear in the process list or shell history. C{--data-dir} may come
before or after the action. Only keys are stored, and they depend on
the realm: C{--realm} must be the server's C{realm} setting.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from typing import Any

from p2pnet.commands import addDataDir, fail, reactMain, usingStore
from p2pnet.config import parseStoreUrl, readSecretFile
from p2pnet.errors import ConfigError
from p2pnet.files import privateDirectory
from p2pnet.store.users import FILENAME, addUser, deleteUser, listUsers, openSync

__all__ = ["register"]


def run(args: argparse.Namespace) -> int:
    """Run the chosen C{users} sub-command."""
    out = args.out or sys.stdout
    path = os.path.join(args.data_dir, FILENAME)
    if args.store:
        try:
            parseStoreUrl(args.store)
        except ValueError as e:
            return fail(args, f"--store: {e}", 2)
    elif args.users_command != "add" and not os.path.exists(path):
        where = "no data directory" if not os.path.isdir(args.data_dir) else "no user table"
        return fail(args, f"{where} at {path}: give the server's directory with --data-dir "
                    "(users are added with 'p2pnet users add NAME')")
    password = ""
    if args.users_command == "add":
        if not args.name or ":" in args.name:
            return fail(args, "a user name is not empty and has no ':'", 2)
        if args.password is not None and args.password_file is not None:
            return fail(args, "give --password or --password-file, not both", 2)
        if args.password_file is not None:
            try:
                password = readSecretFile(args.password_file, "password-file")
            except ConfigError as e:
                return fail(args, str(e), 2)
        elif args.password is not None:
            password = args.password
        else:
            password = (args.stdin or sys.stdin).readline().rstrip("\r\n")
        if not password:
            return fail(args, "empty password", 2)
    if args.store:
        reactMain(_inRedis, _withPassword(args, password), deadline=30.0)
    if args.users_command == "add":
        try:
            privateDirectory(args.data_dir)
        except OSError as e:
            return fail(args, f"cannot create {args.data_dir}: {e.strerror}")
    try:
        conn = openSync(path)
    except (OSError, sqlite3.Error) as e:
        return fail(args, f"cannot open {path}: {e}")
    try:
        with conn:
            cursor = conn.cursor()
            if args.users_command == "add":
                try:
                    new = addUser(cursor, args.name, password, args.realm, time.time())
                except ValueError as e:
                    return fail(args, str(e), 2)
                out.write(f"{'added' if new else 'changed password of'} {args.name}\n")
                return 0
            if args.users_command == "del":
                if not deleteUser(cursor, args.name):
                    return fail(args, f"no user {args.name!r} in {path} ('p2pnet users list' "
                                "shows them)")
                out.write(f"deleted {args.name}\n")
                return 0
            users = listUsers(cursor)
            out.write(f"{len(users)} users\n")
            for name, realm, created in users:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(created))
                out.write(f"{name}\t{realm}\t{stamp}\n")
            return 0
    except sqlite3.Error as e:
        return fail(args, f"{path}: {e}")
    finally:
        conn.close()


def _withPassword(args: argparse.Namespace, password: str) -> argparse.Namespace:
    args.password = password
    return args


async def _inRedis(reactor: Any, args: argparse.Namespace) -> int:
    """The action on the Redis user table of C{--store} (every node naming it sees the
    change within ten seconds, or at once after a reload)."""
    from p2pnet.store.redis import RedisUserStore

    out = args.out or sys.stdout
    store = RedisUserStore(args.store)

    async def work() -> int:
        if args.users_command == "add":
            try:
                new = await store.add(args.name, args.password, args.realm, reactor.seconds())
            except ValueError as e:
                return fail(args, str(e), 2)
            out.write(f"{'added' if new else 'changed password of'} {args.name}\n")
            return 0
        if args.users_command == "del":
            if not await store.remove(args.name):
                return fail(args, f"no user {args.name!r} in the store")
            out.write(f"deleted {args.name}\n")
            return 0
        users = await store.list()
        out.write(f"{len(users)} users\n")
        for name, realm, created in users:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(created))
            out.write(f"{name}\t{realm}\t{stamp}\n")
        return 0

    return await usingStore(args, store, work)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add C{users add|del|list}."""
    parser = subparsers.add_parser("users", help="add, delete or list TURN users")
    sub = parser.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="add a user or change its password")
    add.add_argument("name")
    add.add_argument("--password", default=None,
                     help="the password (default: one line read from standard input); "
                          "shows in the process list, prefer --password-file")
    add.add_argument("--password-file", default=None, metavar="FILE",
                     help="read the password from FILE (without its final newline)")
    add.add_argument("--realm", default="p2pnet",
                     help="the server's realm setting (default: p2pnet); the stored keys "
                          "are valid in that realm only")
    remove = sub.add_parser("del", help="delete a user")
    remove.add_argument("name")
    listing = sub.add_parser("list", help="user names, their realm and when they were added")
    addDataDir(parser, add, remove, listing)
    text = ("the servers' store, redis://... or redis-sentinel://... (default: the data directory's SQLite "
            "table); the same URL as the store setting")
    parser.add_argument("--store", default="", metavar="URL", help=text)
    for action in (add, remove, listing):
        action.add_argument("--store", default=argparse.SUPPRESS, metavar="URL", help=text)
    parser.set_defaults(run=run, out=None, stdin=None)
