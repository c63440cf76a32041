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


def startRedis(testCase: Any, host: str = "127.0.0.1") -> str:
    """Start one for C{testCase}; its C{redis://} URL. Skips without Debian's redis-server."""
    binary = shutil.which("redis-server")
    if binary is None:
        testCase.skipTest("redis-server is not installed (make test installs Debian's)")
    directory = os.path.abspath(testCase.mktemp())
    os.makedirs(directory)
    port = freePort(host)
    process = subprocess.Popen(
        [binary, "--bind", host, "--port", str(port), "--dir", directory, "--save", "",
         "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop() -> None:
        process.kill()
        process.wait(10)

    testCase.addCleanup(stop)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return f"redis://{host}:{port}/0"
        except OSError:
            time.sleep(0.05)
    raise AssertionError("redis-server did not start")
