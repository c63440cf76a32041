#!/usr/bin/env python3
"""ICE agent: time from start to a selected pair on loopback (host-only and relay-only
through p2pnet's TURN server), and connectivity checks per second the agent answers.

Run by hand from the repository with the venv's Python::

    .venv/bin/python bench/ice_bench.py [--runs 20] [--seconds 3]

- Start to selected pair: two L{p2pnet.ice.Agent}s in this process (one reactor), from
  the first C{gather()} to both C{connect()} Deferreds having fired, C{--runs} times;
  host-only on 127.0.0.1, then relay-only with UDP allocations on a p2pnet TURN server
  running as a subprocess (C{twistd -n p2pnet --services stun,turn}). Median and 95th
  percentile in milliseconds.
- Checks answered per second: the sans-IO core alone (C{IceCore.receive} of valid,
  signed checks from 16 sources, each answer encoded and signed), for C{--seconds}; and
  the Twisted agent on a loopback UDP socket, flooded by a second process that sends
  checks as fast as it can and counts the answers.

Figures to read, never pass/fail; every loop is bounded by time or count.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from typing import Any

from processes import LOOPBACK, freePort, startP2pnet, stop, tcpListening, waitUntil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from twisted.internet import defer, task, utils  # noqa: E402

from p2pnet.ice import Agent, TurnServer  # noqa: E402
from p2pnet.ice.core import IceCore  # noqa: E402
from p2pnet.ice.stunchecks import buildCheck  # noqa: E402

USER, PASSWORD = "bench", "bench-password"


def _signal(a: Agent, b: Agent) -> None:
    for x, y in ((a, b), (b, a)):
        description = x.localDescription()
        y.setRemote(description["ufrag"], description["pwd"])
        for line in description["candidates"]:
            y.addRemoteCandidate(line)
        y.endOfRemoteCandidates()


async def _once(reactor: Any, turn: TurnServer | None) -> float:
    kwargs: dict[str, Any] = {"hosts": [LOOPBACK]}
    if turn is not None:
        kwargs.update(turnServers=[turn], relayOnly=True)
    start = time.perf_counter()
    a = Agent(reactor, controlling=True, **kwargs)
    b = Agent(reactor, controlling=False, **kwargs)
    try:
        await defer.gatherResults([defer.Deferred.fromCoroutine(a.gather()),
                                   defer.Deferred.fromCoroutine(b.gather())])
        _signal(a, b)
        await defer.gatherResults([a.connect(), b.connect()])
        return (time.perf_counter() - start) * 1000
    finally:
        await a.close()
        await b.close()


def _report(name: str, times: list[float]) -> None:
    times.sort()
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    print(f"{name:<34} median {statistics.median(times):7.1f} ms   p95 {p95:7.1f} ms   "
          f"({len(times)} runs)")


def coreRate(seconds: float) -> float:
    """Checks per second C{IceCore.receive} answers (parse, verify, answer, sign)."""
    core = IceCore(controlling=False, rng=random.Random(1))
    base = (LOOPBACK, 5000)
    core.addLocalCandidate("host", base, base)
    core.setRemoteCredentials("peer", "p" * 22)
    checks = []
    for i in range(16):
        _, data = buildCheck("peer", core.ufrag, core.pwd, 1862270975, True, 7)
        checks.append(((f"192.0.2.{i + 1}", 6000 + i), data))
    answered = 0
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        for source, data in checks:
            core.receive(data, base, source, 0.0)
        answered += len(core.takeTransmits())
        core.takeEvents()
    return answered / (time.perf_counter() - start)


FLOODER = r"""
import socket, sys, time
sys.path.insert(0, sys.argv[4])
from p2pnet.ice.stunchecks import buildCheck
port, ufrag, pwd, seconds = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0)); s.setblocking(False)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
checks = [buildCheck("peer", ufrag, pwd, 1862270975, True, 7)[1] for _ in range(64)]
sent = answered = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(16):
        try:
            s.sendto(checks[sent % 64], ("127.0.0.1", port)); sent += 1
        except BlockingIOError:
            break
    while True:
        try:
            s.recv(2048); answered += 1
        except BlockingIOError:
            break
deadline = time.monotonic() + 0.5
while time.monotonic() < deadline:
    try:
        s.recv(2048); answered += 1
    except BlockingIOError:
        time.sleep(0.01)
print(sent, answered)
"""


async def agentRate(reactor: Any, seconds: float) -> tuple[int, int]:
    """C{(sent, answered)}: checks the Twisted agent answers on a loopback socket while a
    second process floods it."""
    agent = Agent(reactor, controlling=False, hosts=[LOOPBACK])
    try:
        await agent.gather()
        agent.setRemote("peer", "p" * 22)
        port = agent.localCandidates()[0].port
        out = await utils.getProcessOutput(sys.executable, [
            "-c", FLOODER, str(port), agent.ufrag, agent.pwd, REPO, str(seconds)])
        sent, answered = (int(x) for x in out.split())
        return sent, answered
    finally:
        await agent.close()


async def main(reactor: Any, args: argparse.Namespace) -> None:
    times = [await _once(reactor, None) for _ in range(args.runs)]
    _report("host-only, start to selected pair", times)
    tmp = tempfile.mkdtemp(prefix="ice-bench-")
    port = freePort()
    proc, log = startP2pnet(tmp, [
        "--services", "stun,turn", "--listen", LOOPBACK, "--stun-port", str(port),
        "--tls-port", "0", "--data-dir", os.path.join(tmp, "data"),
        "--user", f"{USER}:{PASSWORD}", "--allow-loopback-peers"])
    try:
        waitUntil(tcpListening(port), proc, log)
        turn = TurnServer(LOOPBACK, port, USER, PASSWORD)
        times = [await _once(reactor, turn) for _ in range(args.runs)]
        _report("relay-only (TURN/UDP), start to pair", times)
    finally:
        stop(proc)
    print(f"{'checks answered, sans-IO core':<34} {coreRate(args.seconds):9.0f} /s")
    sent, answered = await agentRate(reactor, args.seconds)
    print(f"{'checks answered, agent on UDP':<34} {answered / args.seconds:9.0f} /s "
          f"({answered} of {sent} sent by one flooding process in {args.seconds:g} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=3.0)
    arguments = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, arguments)))
