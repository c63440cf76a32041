#!/usr/bin/env python3
"""A STUN UDP flood from one address against a second client's latency.

Run by hand from the repository with the venv's Python::

    .venv/bin/python bench/stun_flood.py [--seconds 4] [--rates 25000,0]

It starts p2pnet's STUN service as a subprocess (C{twistd -n p2pnet --services stun} on
127.0.0.1) twice: with the default per-source budgets, and with them off
(C{--stun-request-rate 0 --stun-error-rate 0}). Against each it runs, for each flood
rate (0: as fast as one process can send), a flooder on 127.0.0.1 sending 20-byte
Binding requests without reading answers, and during the flood two probes: Binding over
UDP from 127.0.0.2 and over TCP from 127.0.0.3, one request every 25 ms, each waiting
at most 1 s. It prints the probes' round trips (median, 95th percentile, lost), what the
flooder sent, the server's CPU seconds, its resident memory and its log size. Every run
is bounded in count and time; figures to read, never a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from processes import LOOPBACK, cpuSeconds, freePort, rssKiB, startP2pnet, stop, waitUntil
from stun_bench import bindingAnswered

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = [sys.executable, "-m", "test.interop.stunflood"]


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def _summary(times: list[float | None]) -> str:
    answered = [t for t in times if t is not None]
    return (f"median {_percentile(answered, 0.5):7.2f} ms, p95 {_percentile(answered, 0.95):7.2f}"
            f" ms, lost {len(times) - len(answered)}/{len(times)}")


def run(limits: bool, rate: int, seconds: float) -> None:
    """One server, one flood, two probes; print one block of figures."""
    with tempfile.TemporaryDirectory() as tmp:
        port = freePort()
        options = ["--services", "stun", "--listen", LOOPBACK, "--stun-port", str(port),
                   "--tls-port", "0", "--data-dir", os.path.join(tmp, "data")]
        if not limits:
            options += ["--stun-request-rate", "0", "--stun-error-rate", "0"]
        proc, log = startP2pnet(tmp, options)
        try:
            waitUntil(bindingAnswered((LOOPBACK, port)), proc, log)
            env = {**os.environ, "PYTHONPATH": REPO}
            count = int(seconds / 0.025) - 20
            cpu = cpuSeconds(proc.pid)
            flood = subprocess.Popen(
                [*HELPER, "flood", LOOPBACK, str(port), "5000000", str(seconds), str(rate)],
                cwd=REPO, env=env, stdout=subprocess.PIPE)
            probes = [subprocess.Popen(
                [*HELPER, "probe", LOOPBACK, str(port), str(count), "0.025", "0.3", source,
                 *extra], cwd=REPO, env=env, stdout=subprocess.PIPE)
                for source, extra in (("127.0.0.2", []), ("127.0.0.3", ["tcp"]))]
            sent = int(flood.communicate(timeout=seconds + 30)[0])
            udp, tcp = (json.loads(p.communicate(timeout=seconds + 30)[0]) for p in probes)
            cpu = cpuSeconds(proc.pid) - cpu
            rss = rssKiB(proc.pid)
        finally:
            stop(proc)
        size = os.path.getsize(log)
        print(f"limits {'on ' if limits else 'off'} flood {rate or 'max':>6}/s: sent {sent:,} "
              f"({sent / seconds:,.0f}/s); server CPU {cpu:.2f} s, RSS {rss / 1024:.1f} MiB, "
              f"log {size:,} bytes")
        print(f"    UDP probe 127.0.0.2: {_summary(udp)}")
        print(f"    TCP probe 127.0.0.3: {_summary(tcp)}")


def main() -> None:
    """Parse the options and run every combination."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="flood length (max 60)")
    parser.add_argument("--rates", default="25000,0",
                        help="comma-separated flood rates per second; 0: as fast as possible")
    args = parser.parse_args()
    seconds = min(args.seconds, 60.0)
    for limits in (True, False):
        for rate in (int(r) for r in args.rates.split(",")):
            run(limits, rate, seconds)


if __name__ == "__main__":
    main()
