#!/usr/bin/env python3
"""STUN Binding throughput and server CPU per transaction: p2pnet, and coturn beside it.

Run by hand (or C{make bench}) from the repository with the venv's Python::

    .venv/bin/python bench/stun_bench.py [--seconds 5] [--clients 8] [--no-coturn]

It starts p2pnet's STUN server as a subprocess (C{twistd -n p2pnet --services stun} on
127.0.0.1, a free port, log to a temporary file), drives it with its own load generator,
then does the same with coturn's C{turnserver} (STUN only, no TLS/DTLS/CLI/auth, on
127.0.0.1) when it is on C{PATH}. The load generator is C{--workers} processes sharing
C{--clients} UDP sockets, each socket keeping at most C{--window} Binding requests
outstanding (RFC 5389 requests built with L{p2pnet.codecs.stun}); a request unanswered
after C{--lost-after} seconds counts as lost. Every run is bounded in time (C{--seconds},
at most 120) and in count (C{--max-requests} per server).

Figures: transactions (answered requests) per second, and the server's CPU time (user +
system, every thread, read from C{/proc/<pid>/stat}) per transaction in microseconds,
measured over the load period only (after C{--warmup}). Then the ratio p2pnet/coturn of
CPU per transaction. Loss is requests that got no answer. These are figures to read,
never a pass/fail test; the exit status is 0 unless a server could not be started.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from processes import (
    LOOPBACK,
    coturnVersion,
    cpuTimes,
    freePort,
    splitCpus,
    startCoturn,
    startP2pnet,
    stop,
    threadCount,
    waitUntil,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from p2pnet.codecs.stun import (  # noqa: E402
    Attr,
    Message,
    Method,
    StunClass,
    decode,
    decodeXorAddress,
)

#: Binding success response type and the magic cookie, for the fast path check.
SUCCESS_TYPE = struct.pack("!H", 0x0101)
MAX_SECONDS = 120.0


# -- requests ------------------------------------------------------------------------------


def requestTemplate(size: int) -> bytes:
    """A Binding request of C{size} bytes (20 = bare header), built by p2pnet's codec.

    Bytes past the header are one SOFTWARE attribute (comprehension-optional, so every
    server ignores it); the transaction ID (bytes 8-20) is replaced per request.
    """
    message = Message(Method.BINDING, StunClass.REQUEST, bytes(12))
    if size > 20:
        message.add(Attr.SOFTWARE, b"p" * (size - 24))
    data = message.encode()
    assert len(data) == size, (len(data), size)
    return data


def checkAnswer(data: bytes, local: tuple[str, int]) -> list[str]:
    """Decode one answer fully; check XOR-MAPPED-ADDRESS is C{local}; attribute names."""
    message = decode(data)
    mapped = message.get(Attr.XOR_MAPPED_ADDRESS)
    if mapped is None or decodeXorAddress(mapped, message.transactionId) != local:
        raise SystemExit(f"answer without the right XOR-MAPPED-ADDRESS: {message}")
    names = []
    for t, _ in message.attributes:
        try:
            names.append(Attr(t).name)
        except ValueError:
            names.append(f"0x{t:04x}")
    return names


# -- the load generator ----------------------------------------------------------------------


@dataclass
class Load:
    """What the load generator is asked to do."""

    server: tuple[str, int]
    clients: int
    window: int
    seconds: float
    maxRequests: int
    rateLimit: float
    size: int
    lostAfter: float
    #: CPUs the load generator runs on (empty: wherever the kernel puts it)
    cpus: tuple[int, ...] = ()


@dataclass
class Counts:
    """What one load generator worker saw."""

    sent: int = 0
    answered: int = 0
    errors: int = 0
    lost: int = 0
    late: int = 0
    attributes: list[str] = field(default_factory=list)

    def add(self, other: Counts) -> None:
        self.sent += other.sent
        self.answered += other.answered
        self.errors += other.errors
        self.lost += other.lost
        self.late += other.late
        self.attributes = self.attributes or other.attributes


def generate(load: Load, worker: int, start: Any, results: Any) -> None:
    """One worker: C{load.clients} sockets, each with a bounded window of requests.

    Waits on C{start} (an event) so CPU is measured from when the load begins; puts its
    L{Counts} on C{results}.
    """
    if load.cpus:
        os.sched_setaffinity(0, load.cpus)
    template = bytearray(requestTemplate(load.size))
    sockets: list[socket.socket] = []
    poller = select.epoll()
    for _ in range(load.clients):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((LOOPBACK, 0))
        s.connect(load.server)
        s.setblocking(False)
        sockets.append(s)
        poller.register(s.fileno(), select.EPOLLIN)
    byFd = {s.fileno(): i for i, s in enumerate(sockets)}
    locals_ = [s.getsockname() for s in sockets]
    #: per socket: transaction ID -> time sent
    pending: list[dict[bytes, float]] = [{} for _ in sockets]
    counts = Counts()
    prefix = struct.pack("!H", worker)
    serial = 0
    start.wait()
    began = time.monotonic()
    deadline = began + load.seconds
    nextSweep = began + load.lostAfter / 4
    rate = load.rateLimit
    checked = False
    while True:
        now = time.monotonic()
        sending = now < deadline and counts.sent < load.maxRequests
        if not sending and not any(pending):
            break
        if not sending and now > deadline + load.lostAfter:
            break
        if sending:
            allowed = load.maxRequests - counts.sent
            if rate:
                allowed = min(allowed, int(rate * (now - began)) + 1 - counts.sent)
            for i, s in enumerate(sockets):
                waiting = pending[i]
                while allowed > 0 and len(waiting) < load.window:
                    serial += 1
                    tid = prefix + struct.pack("!HQ", i, serial)
                    template[8:20] = tid
                    try:
                        s.send(template)
                    except BlockingIOError:
                        break
                    waiting[tid] = now
                    counts.sent += 1
                    allowed -= 1
        for fd, _ in poller.poll(0.01):
            i = byFd[fd]
            s = sockets[i]
            waiting = pending[i]
            while True:
                try:
                    data = s.recv(2048)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    break
                tid = data[8:20]
                if waiting.pop(tid, None) is None:
                    counts.late += 1
                    continue
                if data[:2] == SUCCESS_TYPE:
                    counts.answered += 1
                    if not checked:
                        counts.attributes = checkAnswer(data, locals_[i])
                        checked = True
                else:
                    counts.errors += 1
        if now >= nextSweep:
            nextSweep = now + load.lostAfter / 4
            old = now - load.lostAfter
            for waiting in pending:
                stale = [tid for tid, sent in waiting.items() if sent < old]
                for tid in stale:
                    del waiting[tid]
                counts.lost += len(stale)
    counts.lost += sum(len(w) for w in pending)
    for s in sockets:
        s.close()
    poller.close()
    results.put(counts)


def runLoad(load: Load, workers: int, pid: int) -> tuple[Counts, float, tuple[float, float]]:
    """Run the workers against the server C{pid}.

    @return: C{(counts, seconds, (server user CPU s, server system CPU s))}.
    """
    context = multiprocessing.get_context("fork")
    start = context.Event()
    results = context.Queue()
    share = [load.clients // workers + (1 if w < load.clients % workers else 0)
             for w in range(workers)]
    procs = []
    for w, clients in enumerate(share):
        part = Load(load.server, clients, load.window, load.seconds,
                    load.maxRequests // workers, load.rateLimit / workers, load.size,
                    load.lostAfter, load.cpus)
        p = context.Process(target=generate, args=(part, w, start, results), daemon=True)
        p.start()
        procs.append(p)
    time.sleep(0.3)  # sockets made
    cpu0 = cpuTimes(pid)
    t0 = time.monotonic()
    start.set()
    total = Counts()
    for _ in procs:
        total.add(results.get(timeout=load.seconds + load.lostAfter + 30))
    elapsed = time.monotonic() - t0
    cpu1 = cpuTimes(pid)
    for p in procs:
        p.join(10)
    return total, elapsed, (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1])


# -- servers ---------------------------------------------------------------------------------


def bindingAnswered(server: tuple[str, int]) -> Callable[[], bool]:
    """A C{ready} for L{processes.waitUntil}: C{server} answers a Binding request."""
    request = requestTemplate(20)

    def ready() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            s.sendto(request, server)
            try:
                s.recvfrom(2048)
                return True
            except (TimeoutError, ConnectionRefusedError):
                return False

    return ready


def startStunP2pnet(tmp: str, cpus: tuple[int, ...]
                    ) -> tuple[subprocess.Popen[bytes], tuple[str, int], str, str]:
    """p2pnet's STUN service on 127.0.0.1; C{(process, address, log, description)}."""
    port = freePort()
    # Every load-generator socket is on 127.0.0.1, one source to the per-source budgets
    # (1,000 unauthenticated requests/s by default): off, as coturn has none.
    proc, log = startP2pnet(tmp, ["--services", "stun", "--listen", LOOPBACK,
                                  "--stun-port", str(port), "--tls-port", "0",
                                  "--stun-request-rate", "0",
                                  "--data-dir", os.path.join(tmp, "p2pnet-data")], cpus)
    waitUntil(bindingAnswered((LOOPBACK, port)), proc, log, what=f"p2pnet on port {port}")
    description = f"twistd -n p2pnet --services stun (CPython {platform.python_version()})"
    return proc, (LOOPBACK, port), log, description


def startStunCoturn(tmp: str, turnserver: str, relayThreads: int | None,
                    cpus: tuple[int, ...]
                    ) -> tuple[subprocess.Popen[bytes], tuple[str, int], str, str]:
    """coturn's turnserver, STUN only, on 127.0.0.1; as L{startStunP2pnet}."""
    port = freePort()
    options = ["--stun-only", "--no-auth"]
    if relayThreads is not None:
        options += ["--relay-threads", str(relayThreads)]
    proc, log = startCoturn(tmp, turnserver, port, options, cpus)
    waitUntil(bindingAnswered((LOOPBACK, port)), proc, log, what=f"coturn on port {port}")
    threads = "default relay threads" if relayThreads is None else f"--relay-threads {relayThreads}"
    description = f"turnserver {coturnVersion(turnserver)} --stun-only, {threads}"
    return proc, (LOOPBACK, port), log, description


@dataclass
class Result:
    """One server's figures."""

    name: str
    description: str
    threads: int
    counts: Counts
    seconds: float
    user: float
    system: float

    @property
    def cpu(self) -> float:
        return self.user + self.system

    @property
    def rate(self) -> float:
        return self.counts.answered / self.seconds if self.seconds else 0.0

    @property
    def cpuPerTransaction(self) -> float:
        """Microseconds of server CPU per answered request."""
        return self.perTransaction(self.cpu)

    def perTransaction(self, seconds: float) -> float:
        """Microseconds of C{seconds} per answered request."""
        return seconds * 1e6 / self.counts.answered if self.counts.answered else float("nan")

    @property
    def loss(self) -> float:
        return self.counts.lost / self.counts.sent if self.counts.sent else 0.0


def measure(name: str, started: tuple[subprocess.Popen[bytes], tuple[str, int], str, str],
            args: argparse.Namespace) -> Result:
    """Warm up, then run the measured load against one started server, then stop it."""
    proc, server, _log, description = started
    try:
        def load(seconds: float, maxRequests: int) -> Load:
            return Load(server, args.clients, args.window, seconds, maxRequests,
                        args.rate_limit, args.size, args.lost_after, args.loadCpus)

        if args.warmup > 0:
            runLoad(load(args.warmup, args.max_requests), args.workers, proc.pid)
        counts, seconds, cpu = runLoad(load(args.seconds, args.max_requests), args.workers,
                                       proc.pid)
        threads = threadCount(proc.pid)
    finally:
        stop(proc)
    return Result(name, description, threads, counts, seconds, *cpu)


# -- the report ------------------------------------------------------------------------------


def machine() -> str:
    """C{nproc} and the CPU model."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}"


def report(results: list[Result], args: argparse.Namespace) -> None:
    """Print the table and the ratio."""
    print(f"machine: {machine()}")
    print(f"load: {args.clients} UDP clients in {args.workers} process(es), window "
          f"{args.window} per client, {args.size}-byte Binding requests, "
          f"{args.seconds:g} s after {args.warmup:g} s warm-up, "
          f"rate limit {args.rate_limit or 'none'}")
    if args.serverCpus:
        print(f"pinned: server on CPU {','.join(map(str, args.serverCpus))}, load generator "
              f"on CPU {','.join(map(str, args.loadCpus))}")
    else:
        print("not pinned: server and load generator share every CPU")
    for r in results:
        print(f"{r.name}: {r.description}; answer attributes: {' '.join(r.counts.attributes)}")
    print()
    header = (f"{'server':<8} {'threads':>7} {'sent':>9} {'answered':>9} {'tx/s':>9} "
              f"{'CPU s':>7} {'CPU us/tx':>10} {'(user':>6} {'+ sys)':>6} "
              f"{'lost':>7} {'loss':>7} {'errors':>6}")
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r.name:<8} {r.threads:>7} {r.counts.sent:>9} {r.counts.answered:>9} "
              f"{r.rate:>9.0f} {r.cpu:>7.2f} {r.cpuPerTransaction:>10.1f} "
              f"{r.perTransaction(r.user):>6.1f} {r.perTransaction(r.system):>6.1f} "
              f"{r.counts.lost:>7} {r.loss:>7.2%} {r.counts.errors:>6}")
    byName = {r.name: r for r in results}
    if "p2pnet" in byName and "coturn" in byName:
        ratio = byName["p2pnet"].cpuPerTransaction / byName["coturn"].cpuPerTransaction
        verdict = "within" if ratio <= 3 else "above"
        print()
        print(f"ratio p2pnet/coturn, server CPU per Binding: {ratio:.3f}x "
              f"({verdict} the 3x target)")
        print(f"ratio p2pnet/coturn, transactions/s: "
              f"{byName['p2pnet'].rate / byName['coturn'].rate:.2f}x")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run p2pnet then coturn, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="measured load period per server (default 5, at most 120)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="unmeasured load before it (default 1)")
    parser.add_argument("--clients", type=int, default=8,
                        help="concurrent UDP client sockets (default 8)")
    parser.add_argument("--workers", type=int, default=1,
                        help="load generator processes sharing the clients (default 1)")
    parser.add_argument("--window", type=int, default=8,
                        help="most requests outstanding per client (default 8)")
    parser.add_argument("--rate-limit", type=float, default=0.0,
                        help="most requests per second over all clients (default: none)")
    parser.add_argument("--max-requests", type=int, default=2_000_000,
                        help="most requests per server and phase (default 2000000)")
    parser.add_argument("--size", type=int, default=20,
                        help="Binding request size in bytes, 20 or 24+ and a multiple of 4 "
                        "(default 20: no attributes)")
    parser.add_argument("--lost-after", type=float, default=1.0,
                        help="seconds after which an unanswered request is lost (default 1)")
    parser.add_argument("--coturn", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure coturn's turnserver when installed (default on)")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                        help="run the server on CPU 0 and the load generator on the others, "
                        "when there are at least 2 (default on)")
    parser.add_argument("--relay-threads", type=int, default=None,
                        help="coturn --relay-threads (default: coturn's own, one per CPU)")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be more than 0 and at most {MAX_SECONDS:g}")
    if args.size != 20 and (args.size < 24 or args.size % 4 or args.size > 1400):
        parser.error("--size must be 20, or a multiple of 4 from 24 to 1400")
    if not 1 <= args.workers <= args.clients:
        parser.error("--workers must be from 1 to --clients")
    if args.clients < 1 or args.window < 1 or args.max_requests < 1:
        parser.error("--clients, --window and --max-requests must be at least 1")

    args.serverCpus, args.loadCpus = splitCpus(args.pin)

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="stun-bench-") as tmp:
        results.append(measure("p2pnet", startStunP2pnet(tmp, args.serverCpus), args))
        turnserver = shutil.which("turnserver")
        if args.coturn and turnserver is None:
            print("coturn's turnserver is not on PATH: measuring p2pnet only "
                  "(Debian package coturn; `make system-deps`)")
        elif args.coturn and turnserver is not None:
            started = startStunCoturn(tmp, turnserver, args.relay_threads, args.serverCpus)
            results.append(measure("coturn", started, args))
    report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
