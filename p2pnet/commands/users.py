# -*- test-case-name: test.test_commands_users -*-
"""C{p2pnet users add|del|list}: the durable TURN user table, for the operator.

Works on C{DATA_DIR/users.sqlite3} directly (SQLite WAL lets it run while the server
is up; the server re-reads the table within ten seconds). The password of C{add} is
read from standard input (one line) unless C{--password} gives it, so it need not
appear in the process list or shell history. Only keys are stored, and they depend on
the realm: C{--realm} must be the server's C{realm} setting.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time

from p2pnet.store.users import FILENAME, addUser, deleteUser, listUsers, openSync

__all__ = ["register"]


def run(args: argparse.Namespace) -> int:
    """Run the chosen C{users} sub-command."""
    out = args.out or sys.stdout
    path = os.path.join(args.data_dir, FILENAME)
    if args.users_command != "add" and not os.path.exists(path):
        if args.users_command == "list":
            out.write("0 users\n")
            return 0
        sys.stderr.write(f"p2pnet: no user table at {path}\n")
        return 1
    password = ""
    if args.users_command == "add":
        if not args.name or ":" in args.name:
            sys.stderr.write("p2pnet: a user name is not empty and has no ':'\n")
            return 2
        password = args.password
        if password is None:
            password = (args.stdin or sys.stdin).readline().rstrip("\r\n")
        if not password:
            sys.stderr.write("p2pnet: empty password\n")
            return 2
        os.makedirs(args.data_dir, mode=0o700, exist_ok=True)
    try:
        conn = openSync(path)
    except (OSError, sqlite3.Error) as e:
        sys.stderr.write(f"p2pnet: cannot open {path}: {e}\n")
        return 1
    try:
        with conn:
            cursor = conn.cursor()
            if args.users_command == "add":
                try:
                    new = addUser(cursor, args.name, password, args.realm)
                except ValueError as e:
                    sys.stderr.write(f"p2pnet: {e}\n")
                    return 2
                out.write(f"{'added' if new else 'changed password of'} {args.name}\n")
                return 0
            if args.users_command == "del":
                if not deleteUser(cursor, args.name):
                    sys.stderr.write(f"p2pnet: no user {args.name!r}\n")
                    return 1
                out.write(f"deleted {args.name}\n")
                return 0
            users = listUsers(cursor)
            out.write(f"{len(users)} users\n")
            for name, realm, created in users:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(created))
                out.write(f"{name}\t{realm}\t{stamp}\n")
            return 0
    except sqlite3.Error as e:
        sys.stderr.write(f"p2pnet: {path}: {e}\n")
        return 1
    finally:
        conn.close()


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add C{users add|del|list}."""
    parser = subparsers.add_parser("users", help="add, delete or list TURN users")
    parser.add_argument("--data-dir", default="./p2pnet-data",
                        help="the server's data directory (default: ./p2pnet-data)")
    sub = parser.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="add a user or change its password")
    add.add_argument("name")
    add.add_argument("--password", default=None,
                     help="the password (default: one line read from standard input)")
    add.add_argument("--realm", default="p2pnet",
                     help="the server's realm setting (default: p2pnet); the stored keys "
                          "are valid in that realm only")
    remove = sub.add_parser("del", help="delete a user")
    remove.add_argument("name")
    sub.add_parser("list", help="user names, their realm and when they were added")
    parser.set_defaults(run=run, out=None, stdin=None)
