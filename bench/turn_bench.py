#!/usr/bin/env python3
"""TURN relay throughput, server CPU per relayed message and memory per allocation:
p2pnet, and coturn beside it when installed.

Run by hand from the repository with the venv's Python::

    .venv/bin/python bench/turn_bench.py [--seconds 5] [--rate 20000] [--no-coturn]

Each server runs as a subprocess on 127.0.0.1 (p2pnet: C{twistd -n p2pnet --services
stun,turn}; coturn: C{turnserver} without TLS/DTLS/CLI), with one long-term user and
loopback peers allowed. Then, for ChannelData over UDP of 120 and 1000 bytes with 10, 50
and 100 allocations:

- its own load generator: one process holding the allocations (each a UDP socket with a
  channel bound to a sink peer) sends ChannelData round-robin, paced to C{--rate}
  messages per second (and, with C{--max}, as fast as it can); a second process is the
  peer and counts what the relay delivered. Relayed messages per second is what the
  sink counted over the load period, loss is sent minus counted.
- coturn's C{turnutils_uclient} (C{-m} allocations, C{-n} messages each, echoed by
  C{turnutils_peer}), paced by uclient itself (one message per 20 ms per session);
  every message crosses the relay twice.

Server CPU time (user + system, every thread, from C{/proc/<pid>/stat}) over the load
period divided by relayed messages gives microseconds per message. p2pnet runs twice,
with C{fast-path off} and C{on} (C{--fast-path}); the kernel's forwarding runs in
softirq context and is charged to no process, so the own generator's runs also give the
whole machine's busy CPU time (C{/proc/stat}: user, system, irq, softirq, steal) per
relayed message, generator and sink included alike for every server; both ratios
against coturn are printed. The generator and the sink are also measured alone, sending
straight to each other at the paced rate; subtracting that from a server's whole-machine
figure gives the relay's own share (paced runs), whose ratio is printed too. Resident memory per idle allocation is (RSS with C{--idle}
allocations - RSS before) / C{--idle}. Every loop is bounded by time and count. Figures
to read, never pass/fail; exit status 0 unless a server could not start.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from processes import (
    LOOPBACK,
    coturnVersion,
    cpuSeconds,
    freePort,
    raiseFileLimit,
    rssKiB,
    startCoturn,
    startP2pnet,
    stop,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from p2pnet.codecs.stun import (  # noqa: E402
    PROTOCOL_UDP,
    Attr,
    Message,
    Method,
    StunClass,
    decode,
    decodeErrorCode,
    decodeXorAddress,
    encodeChannelNumber,
    encodeRequestedTransport,
    encodeUInt32,
    longTermKey,
)

USER, PASSWORD, REALM = "bench", "bench-password", "p2pnet"
MAX_SECONDS = 60.0
#: Open files for the bench and each server: 10,000 allocations need 10,000 sockets each side.
FILES = 65536
#: Relayed ports are taken from 10000-32000; the servers' own ports lie above.
RELAY_PORTS = (10000, 32000)


# -- processes -------------------------------------------------------------------------------


def startTurnP2pnet(tmp: str, port: int, fastPath: str = "off"
                    ) -> tuple[subprocess.Popen[bytes], str]:
    """p2pnet STUN+TURN on 127.0.0.1:C{port} (C{fast-path} C{fastPath}); C{(process,
    description)}."""
    proc, _log = startP2pnet(tmp, ["--fast-path", fastPath,
        "--services", "stun,turn", "--listen", LOOPBACK, "--stun-port", str(port),
        "--tls-port", str(freePort(RELAY_PORTS[1])),
        "--data-dir", os.path.join(tmp, "p2pnet-data"),
        "--user", f"{USER}:{PASSWORD}", "--realm", REALM, "--allow-loopback-peers",
        "--relay-ports", f"{RELAY_PORTS[0]}-{RELAY_PORTS[1]}", "--max-allocations", "20000",
        "--ip-quota", "20000", "--user-quota", "20000", "--max-connections-per-ip", "1000"],
        files=FILES)
    path = "kernel fast path" if fastPath == "on" else "Python path"
    return proc, f"p2pnet (twistd, CPython {platform.python_version()}, {path})"


def startTurnCoturn(tmp: str, port: int, turnserver: str) -> tuple[subprocess.Popen[bytes], str]:
    """coturn's turnserver, long-term credentials, no TLS/DTLS/CLI, on 127.0.0.1."""
    proc, _log = startCoturn(tmp, turnserver, port, [
        "--lt-cred-mech", "--user", f"{USER}:{PASSWORD}", "--realm", REALM,
        "--allow-loopback-peers", "--min-port", str(RELAY_PORTS[0]),
        "--max-port", str(RELAY_PORTS[1]), "--total-quota", "20000",
        "--no-stun-backward-compatibility"], files=FILES)
    return proc, f"coturn turnserver {coturnVersion(turnserver)}"


# -- a minimal synchronous TURN client ------------------------------------------------------


class Session:
    """One allocation: a UDP socket, authenticated requests, one channel."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(1.0)
        self.nonce = b""
        self.key = longTermKey(USER, REALM, PASSWORD)

    def transact(self, message: Message) -> Message:
        """Send (signed after the first 401/438), retransmitting the same transaction
        on silence; bounded attempts."""
        data = b""
        request = message
        for _attempt in range(12):
            if not data:
                request = Message(message.method, StunClass.REQUEST,
                                  attributes=list(message.attributes))
                if self.nonce:
                    request.add(Attr.USERNAME, USER.encode())
                    request.add(Attr.REALM, REALM.encode())
                    request.add(Attr.NONCE, self.nonce)
                    data = request.encode(self.key)
                else:
                    data = request.encode()
            self.sock.sendto(data, self.server)
            try:
                while True:
                    reply = decode(self.sock.recv(65535))
                    if reply.transactionId == request.transactionId:
                        break
            except (TimeoutError, ValueError):
                continue  # the same transaction again
            if reply.cls == StunClass.SUCCESS:
                return reply
            code = decodeErrorCode(reply.get(Attr.ERROR_CODE))[0]
            if code == 437 and message.method == Method.REFRESH:
                return reply  # deleted already (a retransmitted LIFETIME 0 Refresh)
            if code in (401, 438) and reply.get(Attr.NONCE):
                self.nonce = reply.get(Attr.NONCE)
                data = b""
                continue
            raise RuntimeError(f"{Method(message.method).name} failed: {code}")
        raise RuntimeError("no answer from the server")

    def allocate(self) -> tuple[str, int]:
        """Allocate; a port whose 5-tuple is still allocated (left by an earlier client,
        e.g. uclient exiting without deleting) gets 437, so move to another port."""
        for _ in range(5):
            try:
                reply = self.transact(Message(Method.ALLOCATE, StunClass.REQUEST, attributes=[
                    (Attr.REQUESTED_TRANSPORT, encodeRequestedTransport(PROTOCOL_UDP)),
                    (Attr.LIFETIME, encodeUInt32(3600))]))
            except RuntimeError as e:
                if "437" not in str(e):
                    raise
                _retired.append(self.sock)
                self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.sock.bind((LOOPBACK, 0))
                self.sock.settimeout(1.0)
                continue
            return decodeXorAddress(reply.get(Attr.XOR_RELAYED_ADDRESS), reply.transactionId)
        raise RuntimeError("every port tried had an allocation (437)")

    def bind(self, peer: tuple[str, int], channel: int = 0x4000) -> None:
        message = Message(Method.CHANNEL_BIND, StunClass.REQUEST)
        message.add(Attr.CHANNEL_NUMBER, encodeChannelNumber(channel))
        message.add(Attr.XOR_PEER_ADDRESS, message.xorMapped(*peer))
        self.transact(message)

    def delete(self) -> None:
        """Delete the allocation. The socket stays open until the server's runs are over
        (L{closeRetired}), so no later session reuses its port: a 5-tuple whose deletion
        was lost in a backlog would answer 437."""
        try:
            self.transact(Message(Method.REFRESH, StunClass.REQUEST,
                                  attributes=[(Attr.LIFETIME, encodeUInt32(0))]))
        except RuntimeError:
            pass
        _retired.append(self.sock)


#: Sockets of deleted sessions (bounded by the sessions one server's runs make).
_retired: list[socket.socket] = []


def closeRetired() -> None:
    """Close the sockets of every deleted session."""
    for sock in _retired:
        sock.close()
    _retired.clear()


def sink(port: int, ready: Any, stopAt: Any, counted: Any) -> None:
    """The peer: count every datagram until told to stop (bounded by MAX_SECONDS)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((LOOPBACK, port))
    sock.settimeout(0.2)
    ready.set()
    count = 0
    deadline = time.monotonic() + MAX_SECONDS + 30
    while time.monotonic() < deadline:
        try:
            sock.recv(65535)
            count += 1
        except TimeoutError:
            if stopAt.is_set():
                break
    counted.value = count
    sock.close()


def generate(sessions: list[Session], size: int, rate: float, seconds: float) -> int:
    """Send ChannelData round-robin at C{rate}/s (0: as fast as possible) for
    C{seconds}; return how many were sent."""
    frame = struct.pack("!HH", 0x4000, size) + bytes(size)
    return send([s.sock for s in sessions], frame, sessions[0].server, rate, seconds)


def send(socks: list[socket.socket], frame: bytes, destination: tuple[str, int],
         rate: float, seconds: float) -> int:
    """L{generate}'s loop: C{frame} from C{socks} round-robin to C{destination}."""
    server = destination
    sent = 0
    start = time.monotonic()
    end = start + seconds
    batch = 50
    n = len(socks)
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if rate and sent >= (now - start) * rate:
            time.sleep(0.0005)
            continue
        for i in range(batch):
            try:
                socks[(sent + i) % n].sendto(frame, server)
            except OSError:
                pass
        sent += batch
    return sent


class Sink:
    """The peer process (L{sink}) on one port, started afresh for each count."""

    def __init__(self) -> None:
        self.port = freePort(RELAY_PORTS[1])
        self.ready, self.stopAt = multiprocessing.Event(), multiprocessing.Event()
        self.counted = multiprocessing.Value("q", 0)
        self.process: multiprocessing.Process | None = None

    def start(self) -> None:
        """Start counting (bounded wait for the socket)."""
        self.ready.clear()
        self.stopAt.clear()
        self.process = multiprocessing.Process(
            target=sink, args=(self.port, self.ready, self.stopAt, self.counted))
        self.process.start()
        self.ready.wait(10)

    def stop(self, wait: float = MAX_SECONDS) -> int:
        """Stop counting; what was counted."""
        assert self.process is not None
        self.stopAt.set()
        self.process.join(wait)
        return int(self.counted.value)

    def kill(self) -> None:
        """Make sure the process is gone."""
        if self.process is not None and self.process.is_alive():
            self.process.terminate()


def measure(pid: int | None, run: Callable[[], int], peer: Sink) -> dict[str, float]:
    """Run C{run} (it returns how many it sent) and give its figures: the rate C{peer}
    counted, the CPU of process C{pid} (if any) and of the whole machine per counted
    message, loss."""
    cpu0, busy0, t0 = cpuSeconds(pid) if pid else 0.0, machineBusySeconds(), time.monotonic()
    sent = run()
    elapsed = time.monotonic() - t0
    time.sleep(0.5)
    cpu1, busy1 = cpuSeconds(pid) if pid else 0.0, machineBusySeconds()
    time.sleep(1.5)  # an unpaced run leaves a backlog in the server's socket
    received = peer.stop()
    figures = {"sent": sent, "relayed": received, "rate": received / elapsed,
               "machine_us": (busy1 - busy0) * 1e6 / max(received, 1),
               "loss": (sent - received) / max(sent, 1)}
    if pid:
        figures["cpu_us"] = (cpu1 - cpu0) * 1e6 / max(received, 1)
    return figures


def ownLoad(server: tuple[str, int], pid: int, allocations: int, size: int, rate: float,
            seconds: float) -> dict[str, float]:
    """One run of the own load generator; figures."""
    peer = Sink()
    peer.start()
    sessions = [Session(server) for _ in range(allocations)]
    try:
        for s in sessions:
            s.allocate()
            s.bind((LOOPBACK, peer.port))
        generate(sessions, size, rate, 0.5)  # warm-up, not counted
        time.sleep(0.5)
        peer.stop(10)
        peer.start()
        return measure(pid, lambda: generate(sessions, size, rate, seconds), peer)
    finally:
        for s in sessions:
            s.delete()
        peer.kill()


def directLoad(allocations: int, size: int, rate: float, seconds: float) -> dict[str, float]:
    """The generator and the sink alone, no relay between them: the whole machine's
    busy time per message that every server's figure includes (subtracted to give a
    server's own share)."""
    peer = Sink()
    peer.start()
    socks = []
    for _ in range(allocations):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOOPBACK, 0))
        socks.append(sock)
    try:
        return measure(None, lambda: send(socks, bytes(size), (LOOPBACK, peer.port), rate,
                                          seconds), peer)
    finally:
        for sock in socks:
            sock.close()
        peer.kill()


def machineBusySeconds() -> float:
    """CPU seconds every CPU of the machine spent busy so far (C{/proc/stat}: user,
    nice, system, irq, softirq and steal; idle and iowait left out). The kernel's work
    in softirq context, the fast path's included, is charged here and to no process."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def uclientLoad(uclient: str, peerTool: str, server: tuple[str, int], pid: int,
                allocations: int, size: int, messages: int) -> dict[str, float]:
    """One run of turnutils_uclient against the server, echoed by turnutils_peer."""
    peerPort = freePort(RELAY_PORTS[1])
    peer = subprocess.Popen([peerTool, "-L", LOOPBACK, "-p", str(peerPort)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        cpu0, t0 = cpuSeconds(pid), time.monotonic()
        out = subprocess.run(
            [uclient, "-u", USER, "-w", PASSWORD, "-p", str(server[1]), "-e", LOOPBACK,
             "-r", str(peerPort), "-m", str(allocations), "-n", str(messages), "-l",
             str(size), "-c", LOOPBACK], capture_output=True, text=True,
            timeout=MAX_SECONDS + 60).stdout
        elapsed = time.monotonic() - t0
        cpu1 = cpuSeconds(pid)
    finally:
        peer.terminate()
        peer.wait(10)
    totals = re.search(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", out, re.M)
    lost = re.search(r"Total lost packets (\d+)", out)
    sent, received = (int(totals.group(1)), int(totals.group(2))) if totals else (0, 0)
    relayed = sent + received  # each message crosses the relay out and back
    return {"sent": sent, "relayed": relayed, "rate": relayed / elapsed,
            "cpu_us": (cpu1 - cpu0) * 1e6 / max(relayed, 1),
            "loss": int(lost.group(1)) / max(sent, 1) if lost else 1.0}


def idleMemory(server: tuple[str, int], pid: int, count: int) -> float:
    """KiB of resident memory per idle allocation at C{count} allocations."""
    raiseFileLimit(FILES)
    before = rssKiB(pid)
    sessions = []
    try:
        for _ in range(count):
            s = Session(server)
            s.allocate()
            sessions.append(s)
        time.sleep(1.0)
        after = rssKiB(pid)
    finally:
        for s in sessions:
            s.sock.close()  # left to expire: deleting 10,000 would only slow the bench
    return (after - before) / max(len(sessions), 1)


def waitUp(server: tuple[str, int], proc: subprocess.Popen[bytes]) -> None:
    """Wait (bounded) until the server answers an Allocate challenge."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited during start-up")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            s.sendto(Message(Method.ALLOCATE, StunClass.REQUEST).encode(), server)
            try:
                s.recv(2048)
                return
            except OSError:
                continue
    raise RuntimeError("the server did not answer within 30 s")


def benchServer(name: str, start: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement on one server (started afresh for the memory figure)."""
    results: dict[str, Any] = {"name": name, "own": {}, "max": {}, "uclient": {}}
    with tempfile.TemporaryDirectory(prefix="turn-bench-") as tmp:
        port = freePort(RELAY_PORTS[1])
        proc, description = start(tmp, port)
        results["description"] = description
        server = (LOOPBACK, port)
        try:
            waitUp(server, proc)
            for size in (120, 1000):
                for allocations in (10, 50, 100):
                    key = (size, allocations)
                    results["own"][key] = ownLoad(server, proc.pid, allocations, size,
                                                  args.rate, args.seconds)
                    if args.max:
                        results["max"][key] = ownLoad(server, proc.pid, allocations, size,
                                                      0, args.seconds)
                    if args.uclient:
                        results["uclient"][key] = uclientLoad(
                            args.uclient, args.peer, server, proc.pid, allocations, size,
                            args.uclient_messages)
        finally:
            stop(proc)
            closeRetired()
        port = freePort(RELAY_PORTS[1])
        proc, _ = start(tmp, port)
        try:
            waitUp((LOOPBACK, port), proc)
            results["memory_kib"] = idleMemory((LOOPBACK, port), proc.pid, args.idle)
            results["rss_kib"] = rssKiB(proc.pid)
        finally:
            stop(proc)
    return results


def report(all_results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print the figures, with p2pnet/coturn CPU ratios when both ran."""
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{platform.platform()}; load {args.seconds:g} s per run\n")
    for result in all_results:
        print(f"== {result['description']}")
        for label, table in ((f"own generator, paced to {args.rate:.0f} msg/s", "own"),
                             ("own generator, unpaced", "max"),
                             ("turnutils_uclient (echo, both directions)", "uclient")):
            if not result[table]:
                continue
            print(f"   {label}")
            print("   size  allocs   relayed/s   CPU us/msg  machine us/msg    loss")
            for (size, allocations), r in sorted(result[table].items()):
                machine = f"{r['machine_us']:14.1f}" if "machine_us" in r else " " * 14
                print(f"   {size:4d}  {allocations:6d}  {r['rate']:10.0f}  {r['cpu_us']:11.1f}"
                      f"  {machine}  {r['loss'] * 100:6.2f}%")
        print(f"   idle allocation: {result['memory_kib'] * 1024:.0f} bytes of RSS each at "
              f"{args.idle} allocations (process RSS {result['rss_kib'] / 1024:.0f} MiB)\n")
    baseline = getattr(args, "baseline", {})
    if baseline:
        print(f"== generator and sink alone (no relay), paced to {args.rate:.0f} msg/s")
        print("   size  allocs   machine us/msg")
        for (size, allocations), r in sorted(baseline.items()):
            print(f"   {size:4d}  {allocations:6d}  {r['machine_us']:14.1f}")
        print()
    coturn = next((r for r in all_results if r["name"] == "coturn"), None)
    for ours in all_results:
        if coturn is None or ours is coturn:
            continue
        print(f"== ratio {ours['description']} / coturn, per relayed message")
        for table in ("own", "max", "uclient"):
            for key in sorted(ours[table]):
                if key in coturn[table]:
                    mine, theirs = ours[table][key], coturn[table][key]
                    ratio = mine["cpu_us"] / max(theirs["cpu_us"], 1e-9)
                    line = (f"   {table:8s} {key[0]:4d} bytes {key[1]:3d} allocations: "
                            f"server process {ratio:5.2f}x")
                    if "machine_us" in mine and "machine_us" in theirs:
                        whole = mine["machine_us"] / max(theirs["machine_us"], 1e-9)
                        line += f", whole machine {whole:5.2f}x"
                        base = baseline.get(key) if table == "own" else None
                        if base is not None:
                            own = mine["machine_us"] - base["machine_us"]
                            other = theirs["machine_us"] - base["machine_us"]
                            line += (f", relay's share {own:5.1f} / {other:5.1f} us = "
                                     f"{own / max(other, 1e-9):5.2f}x")
                    print(line)
        print(f"   memory per idle allocation: "
              f"{ours['memory_kib'] / max(coturn['memory_kib'], 1e-9):5.2f}x\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="load period per run")
    parser.add_argument("--rate", type=float, default=20000.0,
                        help="paced rate of the own generator, messages/s")
    parser.add_argument("--max", action="store_true", help="also run the generator unpaced")
    parser.add_argument("--idle", type=int, default=10000,
                        help="allocations for the memory figure")
    parser.add_argument("--uclient-messages", type=int, default=200,
                        help="messages per uclient session")
    parser.add_argument("--no-uclient", dest="use_uclient", action="store_false")
    parser.add_argument("--no-coturn", dest="coturn", action="store_false")
    parser.add_argument("--fast-path", choices=("both", "on", "off"), default="both",
                        help="p2pnet's TURN fast path: run with it, without it, or both "
                             "(default; 'on' needs root and make fastpath)")
    args = parser.parse_args(argv)
    args.seconds = min(args.seconds, MAX_SECONDS)
    args.idle = min(args.idle, 20000)
    args.uclient = shutil.which("turnutils_uclient") if args.use_uclient else None
    args.peer = shutil.which("turnutils_peer")
    if args.peer is None:
        args.uclient = None
    raiseFileLimit(FILES)
    args.baseline = {(size, allocations): directLoad(allocations, size, args.rate,
                                                     args.seconds)
                     for size in (120, 1000) for allocations in (10, 50, 100)}
    modes = ("off", "on") if args.fast_path == "both" else (args.fast_path,)
    results = [benchServer(f"p2pnet-{mode}",
                           lambda tmp, port, mode=mode: startTurnP2pnet(tmp, port, mode), args)
               for mode in modes]
    turnserver = shutil.which("turnserver")
    if args.coturn and turnserver is not None:
        results.append(benchServer(
            "coturn", lambda tmp, port: startTurnCoturn(tmp, port, turnserver), args))
    elif args.coturn:
        print("coturn's turnserver is not on PATH: measuring p2pnet only", file=sys.stderr)
    report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
