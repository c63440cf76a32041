"""aioice's ICE agent (C{aioice.Connection}) speaking the line protocol of C{p2pnet ice}.

Usage::

    python test/interop/aioice_ice.py --role controlling|controlled [--stun HOST:PORT]
        [--turn HOST:PORT --turn-user U --turn-password P --turn-transport udp|tcp]
        [--relay-only] [--echo | --send TEXT --count N] [--timeout S]

It prints its description as one JSON line (RFC 8839 candidate lines, as aioice writes
them, with the C{candidate:} prefix) and an end-of-candidates line, reads the peer's
description and trickled lines from stdin, and when connected prints
C{selected LOCALTYPE REMOTETYPE}; C{--echo} returns every datagram until stdin ends,
C{--send} sends N datagrams and prints C{echoed K/N}. Exit status 0 on success.

aioice leaves 127.0.0.1 out of its host addresses; the peer runs on loopback only, so
the address discovery is replaced by one that returns 127.0.0.1 (DESIGN.md's note).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from aioice import Candidate, Connection, TransportPolicy, ice


def _loopbackOnly(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


ice.get_host_addresses = _loopbackOnly


def _hostPort(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _selectedTypes(connection: Connection) -> tuple[str, str]:
    pair = connection._nominated[1]  # type: ignore[attr-defined]
    return pair.local_candidate.type, pair.remote_candidate.type


async def _readLines(connection: Connection, described: asyncio.Event,
                     ended: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    remoteEnded = False
    while True:
        line = await reader.readline()
        if not line:
            break
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if not isinstance(message, dict):
            continue
        if not described.is_set() and "ufrag" in message:
            connection.remote_username = message["ufrag"]
            connection.remote_password = message["pwd"]
            connection.remote_is_lite = bool(message.get("lite"))
            for text in message.get("candidates", []):
                await connection.add_remote_candidate(
                    Candidate.from_sdp(text.removeprefix("candidate:")))
            described.set()
        elif "candidate" in message and not remoteEnded:
            await connection.add_remote_candidate(
                Candidate.from_sdp(message["candidate"].removeprefix("candidate:")))
        elif message.get("end-of-candidates") and not remoteEnded:
            remoteEnded = True
            await connection.add_remote_candidate(None)
    if not remoteEnded:
        await connection.add_remote_candidate(None)
    described.set()
    ended.set()


async def main(args: argparse.Namespace) -> int:
    kwargs = {}
    if args.stun:
        kwargs["stun_server"] = _hostPort(args.stun)
    if args.turn:
        kwargs.update(turn_server=_hostPort(args.turn), turn_username=args.turn_user,
                      turn_password=args.turn_password, turn_transport=args.turn_transport)
    connection = Connection(
        ice_controlling=args.role == "controlling", use_ipv6=False,
        transport_policy=TransportPolicy.RELAY if args.relay_only else TransportPolicy.ALL,
        **kwargs)
    try:
        await connection.gather_candidates()
        print(json.dumps({
            "ufrag": connection.local_username, "pwd": connection.local_password,
            "lite": False,
            "candidates": ["candidate:" + c.to_sdp() for c in connection.local_candidates],
        }), flush=True)
        print(json.dumps({"end-of-candidates": True}), flush=True)
        described, ended = asyncio.Event(), asyncio.Event()
        reading = asyncio.ensure_future(_readLines(connection, described, ended))
        await asyncio.wait_for(described.wait(), args.timeout)
        await asyncio.wait_for(connection.connect(), args.timeout)
        local, remote = _selectedTypes(connection)
        print(f"selected {local} {remote}", flush=True)
        if args.echo:
            async def echo() -> None:
                while True:
                    data = await connection.recv()
                    await connection.send(data)

            echoing = asyncio.ensure_future(echo())
            await ended.wait()
            echoing.cancel()
            return 0
        if args.send is not None:
            payloads = {f"{args.send} {i}".encode() for i in range(args.count)}
            for payload in sorted(payloads):
                await connection.send(payload)
                await asyncio.sleep(0.02)
            echoed: set[bytes] = set()

            async def collect() -> None:
                while len(echoed) < args.count:
                    data = await connection.recv()
                    if data in payloads:
                        echoed.add(data)

            try:
                await asyncio.wait_for(collect(), args.timeout)
            except TimeoutError:
                pass
            print(f"echoed {len(echoed)}/{args.count}", flush=True)
            return 0 if echoed else 1
        reading.cancel()
        return 0
    finally:
        await connection.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", choices=("controlling", "controlled"), required=True)
    parser.add_argument("--stun")
    parser.add_argument("--turn")
    parser.add_argument("--turn-user")
    parser.add_argument("--turn-password")
    parser.add_argument("--turn-transport", choices=("udp", "tcp"), default="udp")
    parser.add_argument("--relay-only", action="store_true")
    parser.add_argument("--echo", action="store_true")
    parser.add_argument("--send")
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=20.0)
    try:
        sys.exit(asyncio.run(main(parser.parse_args())))
    except Exception as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
