#!/usr/bin/env python3
"""Benchmarks of the RustDesk rendezvous and relay services; prints figures.

    .venv/bin/python bench/rendezvous_bench.py [--seconds 3] [--only NAME ...]

Figures (docs/performance.md records them):

- ``register``: RegisterPeer datagrams answered per second (peers known, so each is the
  full refresh path), server pinned to one core, a load generator on another;
- ``punch``: punch-hole round trips per second: a controller connects, sends
  PunchHoleRequest, the TCP-registered target gets PunchHole on its link and answers
  PunchHoleSent, the controller gets PunchHoleResponse (with a signed pk);
- ``relay1`` / ``relay100``: relay throughput in MB/s for 1 and 100 pairs over loopback
  (limits off), bytes counted at the receiving ends;
- ``memory``: resident memory per registered online peer at 100,000 peers;
- ``flood``: a second client's RegisterPk round trip (UDP, from 127.0.0.2, a new id
  each time, so each is written to the registry) while one client (127.0.0.1, a child
  process) floods the TCP port with PunchHoleRequests as fast as it can, against a
  server with the default per-source limits and against one with them off.

The server runs in a child process (``--serve``); nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from processes import cpuSeconds, pinSelf, splitCpus
from processes import stop as stopProcess

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from p2pnet.codecs.proto.rendezvous_pb2 import (  # noqa: E402
    LocalAddr,
    PunchHoleRequest,
    PunchHoleSent,
    RegisterPeer,
    RegisterPk,
    RendezvousMessage,
    RequestRelay,
)
from p2pnet.codecs.rustdesk_frame import FrameDecoder, encodeFrame  # noqa: E402

PEERS = 1000
#: The server's CPU and the load generators' (the first CPU this process may use, and the
#: others; neither pinned on a single CPU).
SERVER_CPUS, LOAD_CPUS = splitCpus()


# -- the server process ----------------------------------------------------------------------


def serve(dataDir: str, limits: bool = False, store: str = "", node: str = "") -> None:
    """Run rendezvous + relay on 127.0.0.1 (ephemeral ports), print them, serve forever.

    With C{limits}, the per-source limits are the defaults of the settings; else off.
    With C{store} (a redis:// URL) the registry is shared and the node joins the cluster
    as C{node} (bench/cluster_bench.py).
    """
    pinSelf(SERVER_CPUS)
    from twisted.internet import reactor

    from p2pnet.config import Config
    from p2pnet.services.relay import RelayService
    from p2pnet.services.rendezvous import OnlinePeer, RendezvousService
    from p2pnet.services.rendezvous_keys import loadServerKey
    from p2pnet.store.peers import PeerStore

    defaults = Config()
    rates: dict[str, Any] = {}
    if limits:
        rates = dict(udpRatePerIp=defaults.rendezvous_udp_rate,
                     streamRatePerIp=defaults.rendezvous_tcp_rate,
                     maxConnectionsPerIp=defaults.rendezvous_connections_per_ip)
    else:
        rates = dict(maxConnectionsPerIp=100000, registerRate=1e9, registerBurst=1e9)
    if store:
        from p2pnet.store.redis import RedisInbox, RedisPeerStore

        peers: Any = RedisPeerStore(store)
    else:
        peers = PeerStore(os.path.join(dataDir, "peers.sqlite3"))
    rendezvous = RendezvousService(reactor, peers, loadServerKey("", dataDir),
                                   listen=("127.0.0.1",), port=0, maxConnections=100000,
                                   **rates)
    if store:
        rendezvous.joinCluster(peers, RedisInbox(store, node))
    relay = RelayService(reactor, listen=("127.0.0.1",), port=0, maxPendingPerIp=100000,
                         maxConnections=100000)
    now = reactor.seconds()
    for i in range(PEERS):
        peer = OnlinePeer(f"bench{i:05d}", b"uuid", b"k" * 32, "127.0.0.1")
        peer.addr = ("127.0.0.1", 1)
        peer.lastRegTime = now
        rendezvous.registry.admit(peer)
    rendezvous.startService()
    relay.startService()
    print(json.dumps({"udp": rendezvous.boundPorts["udp"], "tcp": rendezvous.boundPorts["tcp"],
                      "relay": relay.boundPorts["tcp"]}), flush=True)
    reactor.run()


# -- load generators ---------------------------------------------------------------------------


def benchRegister(ports: dict[str, int], seconds: float) -> float:
    """RegisterPeer answered per second with a window of datagrams in flight."""
    pinSelf(LOAD_CPUS)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.connect(("127.0.0.1", ports["udp"]))
    sock.settimeout(1.0)
    packets = [RendezvousMessage(register_peer=RegisterPeer(id=f"bench{i:05d}"))
               .SerializeToString() for i in range(PEERS)]
    window, sent, answered = 128, 0, 0
    for _ in range(window):
        sock.send(packets[sent % PEERS])
        sent += 1
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        try:
            sock.recv(64)
        except TimeoutError:
            for _ in range(window):  # lost datagrams: refill the window
                sock.send(packets[sent % PEERS])
                sent += 1
            continue
        answered += 1
        sock.send(packets[sent % PEERS])
        sent += 1
    elapsed = time.perf_counter() - start
    sock.close()
    return answered / elapsed


def _recvMessage(sock: socket.socket, decoder: FrameDecoder, pending: list[bytes]) -> Any:
    while not pending:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        pending.extend(p for p in decoder.feed(data) if p)
    return RendezvousMessage.FromString(pending.pop(0))


def benchPunch(ports: dict[str, int], seconds: float, concurrency: int = 16,
               controllerPorts: dict[str, int] | None = None) -> float:
    """Punch-hole round trips per second with C{concurrency} controllers in parallel; the
    targets register at C{ports}, the controllers ask C{controllerPorts} (default the
    same server: another node of a cluster otherwise)."""
    asked = (controllerPorts or ports)["tcp"]
    pinSelf(LOAD_CPUS)
    count = [0]
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    from nacl.signing import SigningKey

    # A real Ed25519 key: the server ignores a RegisterPk whose pk is not one.
    pk = bytes(SigningKey.generate().verify_key)

    def target(peerId: str, ready: threading.Event) -> None:
        sock = socket.create_connection(("127.0.0.1", ports["tcp"]), timeout=10)
        decoder, pending = FrameDecoder(), []
        sock.sendall(encodeFrame(RendezvousMessage(register_pk=RegisterPk(
            id=peerId, uuid=peerId.encode(), pk=pk)).SerializeToString()))
        while True:
            m = _recvMessage(sock, decoder, pending)
            if m.WhichOneof("union") == "register_pk_response":
                break
        ready.set()
        sock.settimeout(2.0)
        try:
            while True:
                m = _recvMessage(sock, decoder, pending)
                kind = m.WhichOneof("union")
                if kind == "punch_hole":
                    reply = RendezvousMessage(punch_hole_sent=PunchHoleSent(
                        socket_addr=m.punch_hole.socket_addr, id=peerId, version="1"))
                elif kind == "fetch_local_addr":  # controller and target share 127.0.0.1
                    reply = RendezvousMessage(local_addr=LocalAddr(
                        socket_addr=m.fetch_local_addr.socket_addr, id=peerId, version="1",
                        local_addr=m.fetch_local_addr.socket_addr))
                else:
                    continue
                sock.sendall(encodeFrame(reply.SerializeToString()))
        except (OSError, ConnectionError):
            sock.close()

    def controller(peerId: str) -> None:
        request = encodeFrame(RendezvousMessage(punch_hole_request=PunchHoleRequest(
            id=peerId, version="1")).SerializeToString())
        while time.perf_counter() < stop:
            # Bounded: a server that stops answering ends the run with an error.
            sock = socket.create_connection(("127.0.0.1", asked), timeout=10)
            decoder, pending = FrameDecoder(), []
            sock.sendall(request)
            while True:
                m = _recvMessage(sock, decoder, pending)
                if m.WhichOneof("union") == "punch_hole_response":
                    break
            sock.close()
            with lock:
                count[0] += 1

    threads = []
    for i in range(concurrency):
        ready = threading.Event()
        t = threading.Thread(target=target, args=(f"punchtarget{i}", ready), daemon=True)
        t.start()
        ready.wait(10)
    start = time.perf_counter()
    stop = start + seconds
    for i in range(concurrency):
        threads.append(threading.Thread(target=controller, args=(f"punchtarget{i}",)))
        threads[-1].start()
    for t in threads:
        t.join()
    return count[0] / (time.perf_counter() - start)


def benchRelay(ports: dict[str, int], seconds: float, pairs: int) -> float:
    """MB/s received through C{pairs} relay pairs, one writer and one reader each."""
    pinSelf(LOAD_CPUS)
    total = [0]
    lock = threading.Lock()
    stop = [0.0]
    block = b"\x5a" * (1 << 20)

    def leg(uuid: str) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", ports["relay"]))
        sock.sendall(encodeFrame(RendezvousMessage(request_relay=RequestRelay(
            uuid=uuid)).SerializeToString()))
        return sock

    def writer(sock: socket.socket) -> None:
        try:
            while time.perf_counter() < stop[0]:
                sock.sendall(block)
        except OSError:
            pass
        sock.close()

    def reader(sock: socket.socket) -> None:
        buf = bytearray(1 << 20)
        got = 0
        sock.settimeout(2.0)
        try:
            while True:
                n = sock.recv_into(buf)
                if not n:
                    break
                if time.perf_counter() < stop[0]:
                    got += n
        except OSError:
            pass
        with lock:
            total[0] += got
        sock.close()

    legs = []
    for i in range(pairs):
        a = leg(f"relay-bench-{i}")
        b = leg(f"relay-bench-{i}")
        legs.append((a, b))
    time.sleep(0.5)
    start = time.perf_counter()
    stop[0] = start + seconds
    threads = [threading.Thread(target=writer, args=(a,)) for a, _ in legs] + \
        [threading.Thread(target=reader, args=(b,)) for _, b in legs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return total[0] / seconds / 1e6


def flood(port: int, seconds: float) -> None:
    """The flooding client (a child process): PunchHoleRequests for unknown ids, as fast
    as the socket takes them, for C{seconds}; prints how many were written."""
    pinSelf(LOAD_CPUS)
    batch = b"".join(encodeFrame(RendezvousMessage(punch_hole_request=PunchHoleRequest(
        id=f"nobody{i:04d}", licence_key="x" * 44, version="1")).SerializeToString())
        for i in range(1000))
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(0.2)
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sock.sendall(batch)
        except TimeoutError:
            continue
        sent += 1000
    print(sent, flush=True)
    sock.close()


def probeRegisterPk(port: int, seconds: float, interval: float = 0.05) -> list[float]:
    """RegisterPk round trips (seconds) from 127.0.0.2, a new id each."""
    from nacl.signing import SigningKey

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    sock.settimeout(15.0)
    pk = bytes(SigningKey.generate().verify_key)
    out: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rk = RegisterPk(id=f"{time.monotonic_ns() % 10**12:012d}", uuid=os.urandom(16), pk=pk)
        start = time.perf_counter()
        sock.sendto(RendezvousMessage(register_pk=rk).SerializeToString(),
                    ("127.0.0.1", port))
        try:
            sock.recv(256)
        except TimeoutError:
            out.append(15.0)
            continue
        out.append(time.perf_counter() - start)
        time.sleep(interval)
    sock.close()
    return out


def benchFlood(seconds: float, limits: bool) -> dict[str, float]:
    """Quiet and flooded RegisterPk latency against a fresh server."""
    import tempfile

    with tempfile.TemporaryDirectory() as data:
        server = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", data]
            + (["--limits"] if limits else []), stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            ports = json.loads(server.stdout.readline())
            quiet = probeRegisterPk(ports["udp"], seconds)
            flooder = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--flood", str(ports["tcp"]),
                 str(seconds + 1)], stdout=subprocess.PIPE, text=True)
            time.sleep(0.5)
            busy = probeRegisterPk(ports["udp"], seconds)
            out, _ = flooder.communicate(timeout=seconds + 30)
        finally:
            stopProcess(server)

    def pct(values: list[float], q: float) -> float:
        values = sorted(values)
        return values[min(len(values) - 1, int(q * len(values)))] * 1000

    return {"quiet p50": pct(quiet, 0.5), "quiet p95": pct(quiet, 0.95),
            "flood p50": pct(busy, 0.5), "flood p95": pct(busy, 0.95),
            "flood max": max(busy) * 1000, "flood rate": int(out.strip() or 0) / (seconds + 1)}


def benchMemory(count: int = 100_000) -> tuple[float, float]:
    """Bytes per registered online peer: (Python heap via tracemalloc, process RSS)."""
    import gc
    import tracemalloc

    from twisted.internet import defer
    from twisted.internet.task import Clock

    from p2pnet.services.rendezvous import RendezvousService
    from p2pnet.services.rendezvous_keys import ServerKey

    class MemoryStore:
        def get(self, peerId: str) -> Any:
            return defer.succeed(None)

        def put(self, record: Any) -> Any:
            return defer.succeed(None)

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    from nacl.signing import SigningKey

    # Registration checks that a key is an Ed25519 point; a thousand distinct ones do.
    keys = [bytes(SigningKey.generate().verify_key) for _ in range(1000)]

    def fill(service: RendezvousService, clock: Clock) -> None:
        for i in range(count):
            clock.advance(0.0001)
            source = (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 30000 + i % 30000)
            peerId = str(1_000_000_000 + i)
            rk = RegisterPk(id=peerId, uuid=str(i).zfill(36).encode(), pk=keys[i % len(keys)])
            service.registry.registerPk(rk, source, None)
            service.registerPeer(peerId, 0, source)
        online = sum(1 for p in service.peers.values() if p.online(clock.seconds()))
        assert online == count, online

    # Resident memory first, without tracemalloc's own overhead.
    gc.collect()
    before = rss()
    clock = Clock()
    service = RendezvousService(clock, MemoryStore(), ServerKey(None, ""))  # type: ignore[arg-type]
    fill(service, clock)
    gc.collect()
    resident = (rss() - before) / count
    del service
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    clock = Clock()
    service = RendezvousService(clock, MemoryStore(), ServerKey(None, ""))  # type: ignore[arg-type]
    fill(service, clock)
    gc.collect()
    heap = (tracemalloc.get_traced_memory()[0] - start) / count
    tracemalloc.stop()
    return heap, resident


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", metavar="DATA_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--limits", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--flood", nargs=2, metavar=("PORT", "SECONDS"), help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--only", nargs="*", default=["register", "punch", "relay1",
                                                       "relay100", "memory"])
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.limits)
        return
    if args.flood:
        flood(int(args.flood[0]), float(args.flood[1]))
        return
    import tempfile

    results: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as data:
        server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", data],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            ports = json.loads(server.stdout.readline())

            def measured(run: Any) -> tuple[float, float]:
                before = cpuSeconds(server.pid)
                rate = run()
                return rate, cpuSeconds(server.pid) - before

            seconds = args.seconds
            if "register" in args.only:
                rate, cpu = measured(lambda: benchRegister(ports, seconds))
                results["RegisterPeer answered per second (one server core)"] = f"{rate:,.0f}"
                results["  server CPU per RegisterPeer (us)"] = \
                    f"{cpu / (rate * seconds) * 1e6:,.1f}"
            if "punch" in args.only:
                rate, cpu = measured(lambda: benchPunch(ports, seconds))
                results["punch-hole round trips per second"] = f"{rate:,.0f}"
                results["  server CPU per round trip (us)"] = \
                    f"{cpu / (rate * seconds) * 1e6:,.0f}"
            for name, pairs in (("relay1", 1), ("relay100", 100)):
                if name in args.only:
                    rate, cpu = measured(lambda n=pairs: benchRelay(ports, seconds, n))
                    label = "1 pair" if pairs == 1 else f"{pairs} pairs, total"
                    results[f"relay throughput, {label} (MB/s)"] = f"{rate:,.0f}"
                    results[f"  server CPU seconds per GB relayed, {label}"] = \
                        f"{cpu / (rate * seconds / 1000):,.2f}"
        finally:
            stopProcess(server)
    if "flood" in args.only:
        for limits in (True, False):
            figures = benchFlood(args.seconds, limits)
            label = "default limits" if limits else "limits off"
            results[f"RegisterPk round trip, quiet, {label} (p50 / p95 ms)"] = \
                f"{figures['quiet p50']:.1f} / {figures['quiet p95']:.1f}"
            results[f"RegisterPk round trip, TCP flood, {label} (p50 / p95 / max ms)"] = \
                f"{figures['flood p50']:.1f} / {figures['flood p95']:.1f} / " \
                f"{figures['flood max']:.0f}"
            results[f"  flood offered, {label} (PunchHoleRequests/s)"] = \
                f"{figures['flood rate']:,.0f}"
    if "memory" in args.only:
        heap, resident = benchMemory()
        results["memory per online peer at 100,000 peers (Python heap, bytes)"] = f"{heap:,.0f}"
        results["memory per online peer at 100,000 peers (RSS, bytes)"] = f"{resident:,.0f}"
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
