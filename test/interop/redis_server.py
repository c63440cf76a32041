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

    def __init__(self, testCase: Any, host: str = "127.0.0.1") -> None:
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
             "--protected-mode", "no"],
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


def startRedis(testCase: Any, host: str = "127.0.0.1") -> str:
    """Start one for C{testCase}; its C{redis://} URL. Skips without Debian's redis-server."""
    return RedisServer(testCase, host).url
