# -*- test-case-name: test.interop.test_stun_limits -*-
"""A STUN Binding flooder and a latency probe, run as separate processes.

Used by L{test.interop.test_stun_limits} and C{bench/stun_flood.py}::

    python -m test.interop.stunflood flood HOST PORT COUNT SECONDS RATE [SOURCE]
    python -m test.interop.stunflood probe HOST PORT COUNT INTERVAL DELAY [SOURCE] [tcp]

C{flood} sends at most COUNT 20-byte Binding requests for at most SECONDS from one UDP
socket on SOURCE (default 127.0.0.1), paced to RATE per second (0: as fast as it can),
never reading the answers, and prints how many it sent. C{probe} waits DELAY seconds,
then sends COUNT Binding requests INTERVAL seconds apart from SOURCE (default
127.0.0.2), each waiting up to 1 s for its answer (over UDP, or over one TCP connection
with C{tcp}), and prints a JSON list of round-trip times in milliseconds (C{null} for
no answer). Every loop is bounded by its count and by time.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import time

_HEADER = struct.pack("!HHI", 0x0001, 0, 0x2112A442)


def flood(host: str, port: int, count: int, seconds: float, rate: float,
          source: str = "127.0.0.1") -> int:
    """Send Binding requests from one socket; return how many were sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    start = time.monotonic()
    deadline = start + seconds
    ids = os.urandom(12 * 4096)
    sent = 0
    while sent < count:
        now = time.monotonic()
        if now >= deadline:
            break
        if rate and sent >= (now - start) * rate:
            time.sleep(0.0005)
            continue
        for _ in range(64):
            offset = (sent % 4096) * 12
            try:
                sock.sendto(_HEADER + ids[offset : offset + 12], (host, port))
            except BlockingIOError:
                break
            sent += 1
    sock.close()
    return sent


def _answer(sock: socket.socket, tid: bytes, deadline: float, stream: bool) -> bool:
    buffer = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return False
        data = sock.recv(65536)
        if stream:
            if not data:
                return False
            buffer += data
            while len(buffer) >= 20:
                size = 20 + struct.unpack_from("!H", buffer, 2)[0]
                if len(buffer) < size:
                    break
                frame, buffer = buffer[:size], buffer[size:]
                if frame[8:20] == tid:
                    return True
        elif data[8:20] == tid:
            return True


def probe(host: str, port: int, count: int, interval: float, delay: float,
          source: str = "127.0.0.2", tcp: bool = False) -> list[float | None]:
    """Round-trip times in ms of COUNT Binding requests (C{None}: no answer in 1 s)."""
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind((source, 0))
    if tcp:
        sock.settimeout(2.0)
        sock.connect((host, port))
    time.sleep(delay)
    times: list[float | None] = []
    for _ in range(count):
        tid = os.urandom(12)
        start = time.monotonic()
        if tcp:
            sock.sendall(_HEADER + tid)
        else:
            sock.sendto(_HEADER + tid, (host, port))
        if _answer(sock, tid, start + 1.0, tcp):
            times.append(round((time.monotonic() - start) * 1000, 3))
        else:
            times.append(None)
        time.sleep(max(0.0, start + interval - time.monotonic()))
    sock.close()
    return times


def percentile(values: list[float], fraction: float) -> float:
    """The C{fraction} percentile of C{values} (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: list[str]) -> None:
    """Command line: see the module docstring."""
    if argv[0] == "flood":
        host, port, count, seconds, rate = argv[1:6]
        print(flood(host, int(port), int(count), float(seconds), float(rate), *argv[6:7]))
    elif argv[0] == "probe":
        host, port, count, interval, delay = argv[1:6]
        rest = argv[6:]
        tcp = "tcp" in rest
        sources = [a for a in rest if a != "tcp"]
        print(json.dumps(probe(host, int(port), int(count), float(interval), float(delay),
                               *sources[:1], tcp=tcp)))
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
