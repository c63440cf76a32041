#!/usr/bin/env python3
"""Control-gateway figures: signed handshakes per second, request round trips per second
with many clients connected, and memory per idle connection.

Run by hand from the repository with the venv's Python::

    .venv/bin/python bench/gateway_bench.py [--seconds 5] [--clients 1000] [--workers 2]
        [--depth 1] [--no-pin]

It starts the gateway as a subprocess (C{twistd -n p2pnet --services gateway} on
127.0.0.1, a free port, a temporary data directory) and drives it from C{--workers}
load-generator processes that speak WebSocket over plain non-blocking sockets on one
C{epoll} each (so the load generator stays cheap):

1. Round trips: C{--clients} connections complete the handshake (token, no device) and
   stay connected; the server's resident memory is read before and after (on a fresh
   server), giving the memory per idle connection. Then every connection sends C{health}
   requests, C{--depth} outstanding at a time (default 1), and answers are counted.
2. Handshakes: each worker keeps C{--concurrency} connections going through the whole
   handshake (upgrade, C{connect.challenge}, C{connect} signed with an Ed25519 device
   key over the v3 payload, hello-ok), then closes and starts again. The devices are
   paired first (loopback auto-approval), so the timed loop is the steady state of a
   known device: proof verified, device token reused, no disk write.

By default the server is pinned to the first CPU this process may use and the load
generators to the others (as C{taskset} would; C{--no-pin} turns it off), so the two do
not compete for one core. Each rate is printed twice: per second of wall clock, and per
second of the server's CPU time (user + system, from C{/proc/<pid>/stat}), which depends
less on how busy the load generator or the other processes on the machine are. Figures
to read, never a pass/fail test; every run is bounded in time (C{--seconds}, at most 120).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from processes import (
    LOOPBACK,
    cpuSeconds,
    freePort,
    rssBytes,
    splitCpus,
    startP2pnet,
    stop,
    tcpListening,
    waitUntil,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from nacl.signing import SigningKey  # noqa: E402

from p2pnet.codecs.device_auth import (  # noqa: E402
    b64urlEncode,
    buildPayloadV3,
    deriveDeviceId,
)
from p2pnet.codecs.websocket_frame import OP_TEXT, MessageDecoder, encodeFrame  # noqa: E402

TOKEN = "bench-token"
MAX_SECONDS = 120.0
#: Handshakes a worker keeps in flight (two workers stay under the gateway's 32 per IP).
PREAUTH_PER_WORKER = 15
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


# -- a minimal WebSocket client -------------------------------------------------------------


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
    """One client socket driven by L{step}: upgrade, challenge, connect, then requests.

    Frames are built and parsed with p2pnet's own codec; each connection masks with one
    random key of its own (the server unmasks every frame all the same).
    """

    def __init__(self, port: int, key: SigningKey | None) -> None:
        self.key = key
        self.sock = socket.create_connection((LOOPBACK, port))
        self.sock.setblocking(False)
        self.sock.sendall(UPGRADE)
        self.head = b""
        self.decoder = MessageDecoder(1 << 24, masked=False)
        self.mask = os.urandom(4)
        self.state = "upgrade"
        self.ids = 0

    def send(self, text: str) -> None:
        self.sock.sendall(encodeFrame(OP_TEXT, text.encode(), mask=self.mask))

    def request(self, method: str) -> None:
        self.ids += 1
        self.send(f'{{"type":"req","id":"{self.ids}","method":"{method}"}}')

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
        happened = []
        if self.state == "upgrade":
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return []
            if not self.head.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(self.head[:80])
            data = self.head[end + 4 :]
            self.state = "challenge"
        for _, text in self.decoder.feed(data):
            if self.state == "open":  # only responses are counted: no JSON parsing
                if text.startswith('{"type":"res"'):  # type: ignore[union-attr]
                    happened.append("res")
                continue
            message = json.loads(text)
            if self.state == "challenge":
                payload = message["payload"]
                params = connectParams(payload["nonce"], payload["ts"], self.key)
                self.send(json.dumps(
                    {"type": "req", "id": "c", "method": "connect", "params": params}))
                self.state = "hello"
                happened.append("challenge")
            elif self.state == "hello" and message.get("type") == "res":
                if not message["ok"]:
                    raise RuntimeError(message["error"])
                self.state = "open"
                happened.append("hello")
        return happened

    def close(self) -> None:
        self.sock.close()


class Poller:
    """The load generator's connections on one C{epoll} (C{select} over hundreds of
    sockets per wake-up would cost more than the gateway's answer)."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.conns: dict[int, Conn] = {}

    def add(self, conn: Conn) -> None:
        fd = conn.sock.fileno()
        self.conns[fd] = conn
        self.epoll.register(fd, select.EPOLLIN)

    def remove(self, conn: Conn) -> None:
        fd = conn.sock.fileno()
        self.epoll.unregister(fd)
        del self.conns[fd]
        conn.close()

    def pump(self, timeout: float) -> list[tuple[Conn, str]]:
        """Wait for readable sockets; return (connection, event) pairs."""
        out = []
        for fd, _ in self.epoll.poll(timeout):
            conn = self.conns[fd]
            for happened in conn.step():
                out.append((conn, happened))
        return out

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()
        self.epoll.close()


def handshakeOnce(port: int, key: SigningKey | None) -> None:
    """Open one connection, wait for hello-ok, close it."""
    poller = Poller()
    poller.add(Conn(port, key))
    while "hello" not in [e for _, e in poller.pump(5)]:
        pass
    poller.close()


# -- workers --------------------------------------------------------------------------------


def handshakeWorker(port: int, concurrency: int, seconds: float, ready: Any, go: Any,
                    result: Any) -> None:
    keys = [SigningKey.generate() for _ in range(concurrency)]
    for key in keys:  # pair each device once (loopback auto-approval)
        handshakeOnce(port, key)
    ready.wait()
    go.wait()
    done = 0
    deadline = time.monotonic() + seconds
    poller = Poller()
    for key in keys:
        poller.add(Conn(port, key))
    while time.monotonic() < deadline:
        for conn, happened in poller.pump(0.5):
            if happened == "hello":
                done += 1
                poller.remove(conn)
                poller.add(Conn(port, conn.key))
    poller.close()
    result.put(done)


def requestWorker(port: int, clients: int, seconds: float, ready: Any, go: Any,
                  result: Any, depth: int = 1) -> None:
    poller = Poller()
    connected = 0
    # The gateway admits 32 unauthenticated sockets per address: stay under it.
    while connected < clients:
        while len(poller.conns) - connected < PREAUTH_PER_WORKER and \
                len(poller.conns) < clients:
            poller.add(Conn(port, None))
        events = poller.pump(5)
        if not events:
            raise RuntimeError("handshakes stalled")
        connected += sum(1 for _, e in events if e == "hello")
    ready.wait()  # the parent reads the server's memory here
    go.wait()
    for conn in poller.conns.values():
        for _ in range(depth):
            conn.request("health")
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for conn, happened in poller.pump(0.5):
            if happened == "res":
                done += 1
                conn.request("health")
    poller.close()
    result.put(done)


# -- the server -----------------------------------------------------------------------------


def startServer(port: int, dataDir: str, cpus: tuple[int, ...]) -> subprocess.Popen[bytes]:
    """The gateway on 127.0.0.1:C{port}, once it accepts connections."""
    server, log = startP2pnet(dataDir, [
        "--services", "gateway", "--listen", LOOPBACK, "--gateway-port", str(port),
        "--data-dir", dataDir, "--gateway-token", TOKEN], cpus)
    waitUntil(tcpListening(port), server, log, what="the gateway")
    return server


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


def rates(count: int, seconds: float, cpu: float, digits: int) -> str:
    """Wall-clock rate, rate per server CPU second, and server CPU per operation."""
    return (f"{count / seconds:,.0f}/s wall clock, {count / max(cpu, 1e-9):,.0f}/s per "
            f"server CPU second (server CPU {cpu / max(count, 1) * 1e6:,.{digits}f} us each)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--depth", type=int, default=1,
                        help="requests each client keeps outstanding (default 1)")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                        help="server on one CPU, load generators on the others (default on)")
    parser.add_argument("--concurrency", type=int, default=PREAUTH_PER_WORKER,
                        help="handshakes in flight per worker (default %(default)s)")
    args = parser.parse_args()
    seconds = min(args.seconds, MAX_SECONDS)
    port = freePort()
    serverCpus, loadCpus = splitCpus(args.pin)
    if serverCpus:
        os.sched_setaffinity(0, loadCpus)  # the load generators fork from this process
        print(f"pinned: server on CPU {serverCpus[0]}, load generators on CPU "
              f"{','.join(map(str, loadCpus))}")
    else:
        print("not pinned: server and load generators share every CPU")
    with tempfile.TemporaryDirectory() as dataDir:
        server = startServer(port, dataDir, serverCpus)
        try:
            handshakeOnce(port, None)  # first use: lazy imports and caches, not per connection
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
                  + rates(count, seconds, cpu, 1))
            count, cpu, _ = phase(handshakeWorker, port, args.workers, args.concurrency,
                                  seconds, server.pid)
            print(f"signed handshakes ({count} in {seconds:g} s): " + rates(count, seconds, cpu, 0))
        finally:
            stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
