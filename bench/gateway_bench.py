#!/usr/bin/env python3
"""Control-gateway figures: signed handshakes per second, request round trips per second
with many clients connected, and memory per idle connection.

Run by hand from the repository with the venv's Python::

    .venv/bin/python bench/gateway_bench.py [--seconds 5] [--clients 1000] [--workers 2]

It starts the gateway as a subprocess (C{twistd -n p2pnet --services gateway} on
127.0.0.1, a free port, a temporary data directory) and drives it from C{--workers}
load-generator processes that speak WebSocket over plain non-blocking sockets (so the
load generator stays cheap):

1. Round trips: C{--clients} connections complete the handshake (token, no device) and
   stay connected; the server's resident memory is read before and after (on a fresh
   server), giving the memory per idle connection. Then every connection sends C{health}
   requests, C{--depth} outstanding at a time (default 1), and answers are counted.
2. Handshakes: each worker keeps C{--concurrency} connections going through the whole
   handshake (upgrade, C{connect.challenge}, C{connect} signed with an Ed25519 device
   key over the v3 payload, hello-ok), then closes and starts again. The devices are
   paired first (loopback auto-approval), so the timed loop is the steady state of a
   known device: proof verified, device token reused, no disk write.

Each figure comes with the server's CPU time (user + system, from C{/proc/<pid>/stat})
per operation, which does not depend on how busy the load generator or the other
processes on the machine are. Figures to read, never a pass/fail test; every run is
bounded in time (C{--seconds}, at most 120).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from nacl.signing import SigningKey  # noqa: E402

from p2pnet.codecs.device_auth import (  # noqa: E402
    b64urlEncode,
    buildPayloadV3,
    deriveDeviceId,
)

LOOPBACK = "127.0.0.1"
TOKEN = "bench-token"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MAX_SECONDS = 120.0
#: Handshakes a worker keeps in flight (two workers stay under the gateway's 32 per IP).
PREAUTH_PER_WORKER = 15
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


# -- a minimal WebSocket client -------------------------------------------------------------


def textFrame(text: str) -> bytes:
    """One masked client text frame."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    mask = os.urandom(4)
    repeated = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        n, "big"
    )
    return header + mask + masked


def serverFrames(buffer: bytearray) -> list[bytes]:
    """Complete (unmasked) server frames taken off the front of C{buffer}."""
    frames = []
    while len(buffer) >= 2:
        n = buffer[1] & 0x7F
        start = 2
        if n == 126:
            if len(buffer) < 4:
                break
            n, start = struct.unpack("!H", buffer[2:4])[0], 4
        elif n == 127:
            if len(buffer) < 10:
                break
            n, start = struct.unpack("!Q", buffer[2:10])[0], 10
        if len(buffer) < start + n:
            break
        frames.append(bytes(buffer[start : start + n]))
        del buffer[: start + n]
    return frames


def connectParams(nonce: str, ts: int, key: SigningKey | None) -> dict[str, Any]:
    """C{connect} params: with a device (signed v3) or token-only as a local CLI."""
    if key is None:
        return {
            "minProtocol": 4,
            "maxProtocol": 4,
            "client": {"id": "cli", "version": "bench", "platform": "linux", "mode": "cli"},
            "auth": {"token": TOKEN},
        }
    raw = bytes(key.verify_key)
    deviceId = deriveDeviceId(raw)
    payload = buildPayloadV3(deviceId, "test", "test", "operator", [], ts, TOKEN, nonce,
                             "linux", None)
    return {
        "minProtocol": 4,
        "maxProtocol": 4,
        "client": {"id": "test", "version": "bench", "platform": "linux", "mode": "test"},
        "auth": {"token": TOKEN},
        "device": {
            "id": deviceId,
            "publicKey": b64urlEncode(raw),
            "signature": b64urlEncode(key.sign(payload.encode()).signature),
            "signedAt": ts,
            "nonce": nonce,
        },
    }


class Conn:
    """One client socket driven by L{step}: upgrade, challenge, connect, then requests."""

    def __init__(self, port: int, key: SigningKey | None) -> None:
        self.key = key
        self.sock = socket.create_connection((LOOPBACK, port))
        self.sock.setblocking(False)
        self.sock.sendall(UPGRADE)
        self.buffer = bytearray()
        self.state = "upgrade"
        self.ids = 0

    def request(self, method: str) -> None:
        self.ids += 1
        frame = textFrame(json.dumps({"type": "req", "id": str(self.ids), "method": method}))
        self.sock.sendall(frame)

    def step(self) -> list[str]:
        """Read what is there; return what happened.

        One of C{"challenge"} (connect sent), C{"hello"} (hello-ok), C{"res"} (a
        response), C{"closed"}.
        """
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return []
        if not data:
            return ["closed"]
        self.buffer += data
        happened = []
        if self.state == "upgrade":
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return []
            if not self.buffer.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(bytes(self.buffer[:80]))
            del self.buffer[: end + 4]
            self.state = "challenge"
        for frame in serverFrames(self.buffer):
            message = json.loads(frame)
            if self.state == "challenge":
                payload = message["payload"]
                params = connectParams(payload["nonce"], payload["ts"], self.key)
                self.sock.sendall(textFrame(json.dumps(
                    {"type": "req", "id": "c", "method": "connect", "params": params})))
                self.state = "hello"
                happened.append("challenge")
            elif self.state == "hello" and message.get("type") == "res":
                if not message["ok"]:
                    raise RuntimeError(message["error"])
                self.state = "open"
                happened.append("hello")
            elif message.get("type") == "res":
                happened.append("res")
        return happened

    def close(self) -> None:
        self.sock.close()


def pump(conns: dict[int, Conn], timeout: float) -> list[tuple[Conn, str]]:
    """Wait for readable sockets; return (connection, event) pairs."""
    readable, _, _ = select.select(list(conns), [], [], timeout)
    out = []
    for fd in readable:
        conn = conns[fd]
        for happened in conn.step():
            out.append((conn, happened))
    return out


# -- workers --------------------------------------------------------------------------------


def handshakeWorker(port: int, concurrency: int, seconds: float, ready: Any, go: Any,
                    result: Any) -> None:
    keys = [SigningKey.generate() for _ in range(concurrency)]
    for key in keys:  # pair each device once (loopback auto-approval)
        conn = Conn(port, key)
        while "hello" not in [e for _, e in pump({conn.sock.fileno(): conn}, 5)]:
            pass
        conn.close()
    ready.wait()
    go.wait()
    done = 0
    deadline = time.monotonic() + seconds
    conns = {}
    for key in keys:
        conn = Conn(port, key)
        conns[conn.sock.fileno()] = conn
    while time.monotonic() < deadline:
        for conn, happened in pump(conns, 0.5):
            if happened == "hello":
                done += 1
                del conns[conn.sock.fileno()]
                conn.close()
                fresh = Conn(port, conn.key)
                conns[fresh.sock.fileno()] = fresh
    for conn in conns.values():
        conn.close()
    result.put(done)


def requestWorker(port: int, clients: int, seconds: float, ready: Any, go: Any,
                  result: Any, depth: int = 1) -> None:
    conns: dict[int, Conn] = {}
    connected = 0
    # The gateway admits 32 unauthenticated sockets per address: stay under it.
    while connected < clients:
        while len(conns) - connected < PREAUTH_PER_WORKER and len(conns) < clients:
            conn = Conn(port, None)
            conns[conn.sock.fileno()] = conn
        events = pump(conns, 5)
        if not events:
            raise RuntimeError("handshakes stalled")
        connected += sum(1 for _, e in events if e == "hello")
    ready.wait()  # the parent reads the server's memory here
    go.wait()
    for conn in conns.values():
        for _ in range(depth):
            conn.request("health")
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for conn, happened in pump(conns, 0.5):
            if happened == "res":
                done += 1
                conn.request("health")
    for conn in conns.values():
        conn.close()
    result.put(done)


# -- the server -----------------------------------------------------------------------------


def freePort() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def cpuSeconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rssBytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def startServer(port: int, dataDir: str) -> subprocess.Popen[bytes]:
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    server = subprocess.Popen(
        [twistd, "-n", "--pidfile", os.path.join(dataDir, "twistd.pid"),
         "-l", os.path.join(dataDir, "twistd.log"), "p2pnet",
         "--services", "gateway", "--listen", LOOPBACK, "--gateway-port", str(port),
         "--data-dir", dataDir, "--gateway-token", TOKEN],
        cwd=REPO,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("gateway did not start")


def phase(target: Any, port: int, workers: int, perWorker: int, seconds: float,
          pid: int, beforeGo: Any = None, extra: tuple[Any, ...] = ()) -> tuple[int, float, Any]:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Barrier(workers + 1)
    go = ctx.Barrier(workers + 1)
    result = ctx.Queue()
    procs = [ctx.Process(target=target,
                         args=(port, perWorker, seconds, ready, go, result, *extra))
             for _ in range(workers)]
    for p in procs:
        p.start()
    ready.wait(timeout=MAX_SECONDS)
    measured = beforeGo() if beforeGo else None
    cpu = cpuSeconds(pid)
    go.wait(timeout=MAX_SECONDS)
    total = sum(result.get(timeout=seconds + 60) for _ in procs)
    cpu = cpuSeconds(pid) - cpu
    for p in procs:
        p.join(timeout=10)
    return total, cpu, measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--depth", type=int, default=1,
                        help="requests each client keeps outstanding (default 1)")
    parser.add_argument("--concurrency", type=int, default=PREAUTH_PER_WORKER,
                        help="handshakes in flight per worker (default %(default)s)")
    args = parser.parse_args()
    seconds = min(args.seconds, MAX_SECONDS)
    port = freePort()
    with tempfile.TemporaryDirectory() as dataDir:
        server = startServer(port, dataDir)
        try:
            warm = Conn(port, None)  # first use: lazy imports and caches, not per connection
            while "hello" not in [e for _, e in pump({warm.sock.fileno(): warm}, 5)]:
                pass
            warm.close()
            time.sleep(0.2)
            baseline = rssBytes(server.pid)
            perWorker = args.clients // args.workers
            count, cpu, loaded = phase(requestWorker, port, args.workers, perWorker,
                                       seconds, server.pid, lambda: rssBytes(server.pid),
                                       (max(1, args.depth),))
            clients = perWorker * args.workers
            print(f"memory per idle connection: {(loaded - baseline) / clients / 1024:.1f} KiB "
                  f"({clients} connections, RSS {baseline / 2**20:.1f} -> "
                  f"{loaded / 2**20:.1f} MiB)")
            print(f"round trips with {clients} clients, {max(1, args.depth)} outstanding each: "
                  f"{count / seconds:,.0f}/s "
                  f"(server CPU {cpu / max(count, 1) * 1e6:,.1f} us each, "
                  f"{count / max(cpu, 1e-9):,.0f}/s per server CPU second)")
            count, cpu, _ = phase(handshakeWorker, port, args.workers, args.concurrency,
                                  seconds, server.pid)
            print(f"signed handshakes: {count / seconds:,.0f}/s "
                  f"({count} in {seconds:g} s; server CPU {cpu / max(count, 1) * 1e6:,.0f} "
                  f"us each, {count / max(cpu, 1e-9):,.0f}/s per server CPU second)")
        finally:
            server.terminate()
            server.wait(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
