"""A private C{redis-server} for tests: loopback, a free port, a temporary directory,
append-only with fsync on every write; killed in the test's cleanup."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from typing import Any

#: Seconds the server may take to accept connections.
START_TIMEOUT = 10.0


def freePort(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server that can be killed and started again on its data and port."""

    def __init__(self, testCase: Any, host: str = "127.0.0.1", *extra: str) -> None:
        """@param extra: more redis-server options (a replica's C{--replicaof})."""
        self.extra = extra
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            testCase.skipTest("redis-server is not installed (make test installs Debian's)")
        self.host = host
        self.directory = os.path.abspath(testCase.mktemp())
        os.makedirs(self.directory)
        self.port = freePort(host)
        self.url = f"redis://{host}:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        testCase.addCleanup(self.kill)
        self.start()

    def start(self) -> None:
        """Start it and wait (bounded) until it accepts connections."""
        assert self.binary is not None
        self.process = subprocess.Popen(
            [self.binary, "--bind", self.host, "--port", str(self.port), "--dir",
             self.directory, "--save", "", "--appendonly", "yes", "--appendfsync", "always",
             "--protected-mode", "no", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL, if it runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def command(port: int, *argv: str, host: str = "127.0.0.1") -> str:
    """What C{redis-cli} prints for one command (bounded to 10 s)."""
    return subprocess.run(["redis-cli", "-h", host, "-p", str(port), *argv],
                          capture_output=True, text=True, timeout=10).stdout


def waitFor(condition: Any, what: str, timeout: float = START_TIMEOUT) -> None:
    """Poll C{condition()} every 50 ms until it is true; fail after C{timeout} s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


class SentinelGroup:
    """A primary, a replica and one Sentinel (quorum 1, a second's silence marks the
    primary down), all on loopback, started for one test: what a failover needs."""

    SERVICE = "p2pnet"

    def __init__(self, testCase: Any, host: str = "127.0.0.1") -> None:
        self.host = host
        self.primary = RedisServer(testCase, host)
        self.replica = RedisServer(testCase, host, "--replicaof", host,
                                   str(self.primary.port))
        command(self.primary.port, "config", "set", "repl-diskless-sync-delay", "0")
        waitFor(lambda: "master_link_status:up" in command(self.replica.port, "info",
                                                           "replication"),
                "the replica's first sync")
        self.port = freePort(host)
        directory = os.path.abspath(testCase.mktemp())
        os.makedirs(directory)
        config = os.path.join(directory, "sentinel.conf")
        with open(config, "w") as file:
            file.write(f"bind {host}\nport {self.port}\nprotected-mode no\n"
                       f"sentinel monitor {self.SERVICE} {host} {self.primary.port} 1\n"
                       f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                       f"sentinel failover-timeout {self.SERVICE} 3000\n")
        assert self.primary.binary is not None
        self.process = subprocess.Popen([self.primary.binary, config, "--sentinel"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        testCase.addCleanup(self._kill)
        waitFor(lambda: "slave" in command(self.port, "sentinel", "replicas", self.SERVICE),
                "the Sentinel finding the replica")
        self.url = f"redis-sentinel://{host}:{self.port}/0#{self.SERVICE}"

    def primaryPort(self) -> int:
        """The port of the primary the Sentinel names now."""
        reply = command(self.port, "sentinel", "get-master-addr-by-name", self.SERVICE)
        return int(reply.split()[1])

    def _kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def startRedis(testCase: Any, host: str = "127.0.0.1") -> str:
    """Start one for C{testCase}; its C{redis://} URL. Skips without Debian's redis-server."""
    return RedisServer(testCase, host).url
