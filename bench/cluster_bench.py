"""Cluster benchmark: the Redis store against SQLite, and a punch across two nodes.

    .venv/bin/python bench/cluster_bench.py [--seconds 3]

Starts a private redis-server (Debian's) on loopback. Prints, for one rendezvous server
(pinned like bench/rendezvous_bench.py): RegisterPeer answered per second and server CPU
per RegisterPeer with the SQLite registry, with the Redis registry (presence written at
most every 10 s per peer, as configured), and with a presence write on every
RegisterPeer (the worst case); then punch-hole round trips with the target and the
controller on one node, and with the controller on a second node (routed through Redis):
one controller at a time (the round trip's latency) and sixteen together.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from processes import cpuSeconds
from processes import stop as stopProcess
from rendezvous_bench import benchPunch, benchRegister, serve

HERE = os.path.abspath(__file__)


def startRedis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server on a free loopback port in C{directory}; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (make system-deps installs it)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--dir",
                                directory, "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def server(data: str, store: str = "", node: str = "", always: bool = False
           ) -> tuple[subprocess.Popen[str], dict[str, int]]:
    argv = [sys.executable, HERE, "--serve", data, "--store", store, "--node", node]
    if always:
        argv.append("--presence-always")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, json.loads(process.stdout.readline())


def measured(process: subprocess.Popen[str], run: Any) -> tuple[float, float]:
    before = cpuSeconds(process.pid)
    rate = run()
    return rate, cpuSeconds(process.pid) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", metavar="DATA_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--store", default="", help=argparse.SUPPRESS)
    parser.add_argument("--node", default="", help=argparse.SUPPRESS)
    parser.add_argument("--presence-always", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    if args.serve:
        if args.presence_always:
            import p2pnet.services.rendezvous_registry as registry

            registry.PRESENCE_INTERVAL = 0.0
        serve(args.serve, store=args.store, node=args.node)
        return
    seconds = args.seconds
    with tempfile.TemporaryDirectory() as top:
        redis, url = startRedis(top)
        try:
            for label, store, always in (("SQLite", "", False), ("Redis", url, False),
                                         ("Redis, presence on every RegisterPeer", url, True)):
                data = tempfile.mkdtemp(dir=top)
                process, ports = server(data, store, "solo", always)
                try:
                    rate, cpu = measured(process, lambda p=ports: benchRegister(p, seconds))
                    print(f"RegisterPeer, {label}: {rate:,.0f}/s, "
                          f"{cpu / (rate * seconds) * 1e6:.1f} us server CPU each")
                finally:
                    stopProcess(process)
            a, portsA = server(tempfile.mkdtemp(dir=top), url, "a")
            b, portsB = server(tempfile.mkdtemp(dir=top), url, "b")
            try:
                for label, asked in (("one node", None), ("across two nodes", portsB)):
                    for concurrency in (1, 16):
                        rate = benchPunch(portsA, seconds, concurrency, asked)
                        print(f"punch round trips, {label}, {concurrency} at a time: "
                              f"{rate:,.0f}/s ({concurrency / rate * 1000:.2f} ms each)")
            finally:
                stopProcess(a)
                stopProcess(b)
        finally:
            redis.kill()
            redis.wait()


if __name__ == "__main__":
    main()
