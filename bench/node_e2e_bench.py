#!/usr/bin/env python3
"""End-to-end benchmark of the KVM node: real processes, real sessions; prints figures.

    .venv/bin/python bench/node_e2e_bench.py [--seconds 10] [--only 60x4-relay ...]

The node runs as C{twistd -n p2pnet --services node} with a C{file:} source (the 1080p
H.264 clip of C{bench/node_bench.py}: testsrc2, 8 Mbit/s, a keyframe every 2 s),
registered over UDP with p2pnet's rendezvous server, which runs with the relay in a
second C{twistd}. This process is the viewers: each finds the node through the server
and logs in like C{p2pnet connect} (encrypted session), directly or through the relay.
For 30 and 60 fps and 1 and 4 viewers it prints:

- frames per second each viewer receives, and the video bitrate;
- node CPU: user + system seconds of the node process over the run, as a share of one
  core and per frame sent (every viewer's frames counted);
- node resident memory at the end;
- delivery delay: for each frame, arrival time minus its pts, less the smallest such
  value of that viewer — the delay a frame gets beyond the quickest one (queueing in the
  node, the relay and the sockets), p50 / p99. The constant part (the quickest frame's
  own latency) is not in it: the pts clock starts inside the node.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from processes import cpuSeconds, freePort, rssKiB, startP2pnet, stop

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet import defer, error, reactor  # noqa: E402
from twisted.internet.task import deferLater  # noqa: E402

from p2pnet.node.viewer import ConnectError, findAndConnect  # noqa: E402

SECRET = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQGKiOPddAnxlf1S2y08ul1yymcJvx2UEhvzdIgBtA9vXA=="
PUBLIC = "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w="
CASES = [(fps, viewers, path) for fps in (30, 60) for viewers in (1, 4)
         for path in ("direct", "relay")]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Viewer:
    """Counts one session's frames and their delivery delay."""

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0
        self.offsets: list[float] = []
        self.counting = False

    def onFrame(self, frame: Any, codec: str) -> None:
        if not self.counting:
            return
        self.frames += 1
        self.bytes += len(frame.data)
        self.offsets.append(time.time() - frame.pts / 1000.0)


def portGroup(offsets: tuple[int, ...]) -> int:
    """A port P with P + each offset free on 127.0.0.1 (TCP and UDP) a moment ago."""
    import socket

    for _ in range(200):
        port = freePort(above=1024)
        try:
            for offset in offsets:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return port
    raise SystemExit("no free group of ports")


def tail(log: str) -> str:
    try:
        with open(log, errors="replace") as f:
            return f.read()[-2000:]
    except OSError:
        return "(no log)"


async def connect(port: int, viewer: Viewer, relay: bool, procs: list[Any]) -> Any:
    import base64

    for _ in range(100):
        for proc, log in procs:
            if proc.poll() is not None:
                raise SystemExit(f"a server exited:\n{tail(log)}")
        try:
            path, session = await findAndConnect(
                reactor, ("127.0.0.1", port), "bench-node", "bench-pw",
                serverPk=base64.b64decode(PUBLIC), licenceKey=PUBLIC,
                bindAddress="127.0.0.2", forceRelay=relay, onFrame=viewer.onFrame)
        except (ConnectError, error.ConnectError, OSError, defer.TimeoutError):
            await deferLater(reactor, 0.2, lambda: None)
            continue
        return path, session
    raise SystemExit("the node did not come online:\n" + "\n".join(tail(log) for _, log in procs))


async def runCase(tmp: str, clip: str, fps: int, viewers: int, relay: bool,
                  seconds: float) -> dict[str, Any]:
    case = os.path.join(tmp, f"{fps}x{viewers}-{'relay' if relay else 'direct'}")
    os.makedirs(os.path.join(case, "srv"))
    os.makedirs(os.path.join(case, "node"))
    rport = portGroup((-1, 0, 2))  # the NAT-test and WebSocket ports come with it
    relayPort = portGroup((0, 2))
    server, serverLog = startP2pnet(os.path.join(case, "srv"), [
        "--services", "rendezvous,relay", "--listen", "127.0.0.1",
        "--rendezvous-port", str(rport), "--relay-port", str(relayPort), "--key", SECRET,
        "--relay-servers", f"127.0.0.1:{relayPort}", "--data-dir", "data"])
    node, nodeLog = startP2pnet(os.path.join(case, "node"), [
        "--services", "node", "--data-dir", "data", "--node-id", "bench-node",
        "--node-password", "bench-pw", "--node-server", f"127.0.0.1:{rport}",
        "--node-key", PUBLIC, "--node-video", f"file:{clip}", "--node-fps", str(fps),
        "--node-max-viewers", "8"])
    try:
        sessions = []
        watchers = [Viewer() for _ in range(viewers)]
        paths = set()
        for w in watchers:
            path, session = await connect(rport, w, relay,
                                          [(node, nodeLog), (server, serverLog)])
            paths.add(path)
            sessions.append(session)
        await deferLater(reactor, 1.0, lambda: None)  # past the first GOP burst
        for w in watchers:
            w.counting = True
        cpu0, t0 = cpuSeconds(node.pid), time.monotonic()
        await deferLater(reactor, seconds, lambda: None)
        cpu1, t1 = cpuSeconds(node.pid), time.monotonic()
        for w in watchers:
            w.counting = False
        rss = rssKiB(node.pid)
        for session in sessions:
            session.close()
    finally:
        stop(node)
        stop(server)
    elapsed = t1 - t0
    frames = sum(w.frames for w in watchers)
    delays = [(o - min(w.offsets)) * 1000 for w in watchers for o in w.offsets]
    return {
        "case": f"1080p{fps} to {viewers} {'relay' if relay else 'direct'}",
        "path": ",".join(sorted(paths)),
        "fps": [round(w.frames / elapsed, 1) for w in watchers],
        "mbps": sum(w.bytes for w in watchers) * 8 / elapsed / 1e6 / viewers,
        "cpu": (cpu1 - cpu0) / elapsed * 100,
        "cpuPerFrame": (cpu1 - cpu0) / max(frames, 1) * 1e6,
        "rssMiB": rss / 1024,
        "p50": percentile(delays, 0.5),
        "p99": percentile(delays, 0.99),
        "logs": (serverLog, nodeLog),
    }


async def main(reactor_: Any, args: argparse.Namespace) -> None:
    from node_bench import makeClip

    tmp = tempfile.mkdtemp(prefix="node-e2e-bench-")
    try:
        clip = os.path.join(tmp, "clip.h264")
        makeClip(clip)
        print(f"{'case':28} {'path':7} {'fps per viewer':22} {'Mbit/s':>7} "
              f"{'node CPU':>9} {'us/frame':>9} {'RSS MiB':>8} {'delay p50/p99 ms':>17}")
        for fps, viewers, path in CASES:
            name = f"{fps}x{viewers}-{path}"
            if args.only and name not in args.only:
                continue
            r = await runCase(tmp, clip, fps, viewers, path == "relay", args.seconds)
            fpsText = "/".join(f"{f:g}" for f in r["fps"])
            print(f"{r['case']:28} {r['path']:7} {fpsText:22} {r['mbps']:7.2f} "
                  f"{r['cpu']:8.1f}% {r['cpuPerFrame']:9.0f} {r['rssMiB']:8.1f} "
                  f"{r['p50']:8.2f}/{r['p99']:.2f}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--only", nargs="*", default=[],
                        help="cases such as 60x4-relay, 30x1-direct")
    from twisted.internet.task import react

    react(lambda r: defer.ensureDeferred(main(r, parser.parse_args())))
