# -*- test-case-name: test.interop.test_ice_command -*-
"""C{p2pnet ice}: find a working path to another C{p2pnet ice} (or any agent speaking
the same lines) with the appliance's STUN and TURN, and say which path it is.

Signalling is plain lines, so two terminals (or two programs) paste them to each other.
The command prints its description as one line of JSON on stdout::

    {"ufrag": "...", "pwd": "...", "lite": false, "candidates": ["candidate:...", ...]}
    {"end-of-candidates": true}

and reads the remote's description from stdin, then trickled lines
C{{"candidate": "candidate:..."}} and C{{"end-of-candidates": true}} (end of input
counts as end-of-candidates). Lines that are not JSON objects are ignored, so each
side's whole output can be fed to the other. When a pair is selected it prints
C{selected LOCALTYPE REMOTETYPE}. With C{--echo} it returns every datagram it
receives until its input ends; with C{--send TEXT --count N} it sends N datagrams and
prints C{echoed K/N}. The exit status is 0 only when a pair was selected and, with
C{--send}, at least one datagram came back.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import IO, Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.protocols.basic import LineOnlyReceiver

from p2pnet.codecs.ice_candidate import CandidateDecodeError
from p2pnet.commands import reactMain
from p2pnet.commands.stun import STUN_PORT, STUNS_PORT, splitHostPort
from p2pnet.ice import Agent, IceFailed, NotConnected, TurnServer

__all__ = ["Signalling", "iceMain", "register", "run"]


def register(subparsers: Any) -> None:
    """Add C{ice}."""
    parser = subparsers.add_parser(
        "ice", help="test connectivity to another p2pnet ice through STUN/TURN (RFC 8445)")
    parser.add_argument("--role", choices=("controlling", "controlled"), required=True,
                        help="the ICE role to start in (conflicts are resolved)")
    parser.add_argument("--stun", action="append", default=[], metavar="HOST[:PORT]",
                        help="STUN server for server-reflexive candidates (repeatable)")
    parser.add_argument("--turn", metavar="HOST[:PORT]", help="TURN server for a relayed one")
    parser.add_argument("--turn-user", help="TURN long-term (or REST) user name")
    parser.add_argument("--turn-password", help="its password")
    parser.add_argument("--turn-transport", choices=("udp", "tcp", "tls"), default="udp",
                        help="to the TURN server (default udp)")
    parser.add_argument("--turn-ca", metavar="FILE",
                        help="PEM certificate to trust for --turn-transport tls "
                             "(default: the system's trust store)")
    parser.add_argument("--relay-only", action="store_true",
                        help="gather and use relayed candidates only")
    parser.add_argument("--host", action="append", default=None, metavar="ADDR",
                        help="gather host candidates on ADDR only (repeatable; default: "
                             "the default-route addresses)")
    parser.add_argument("--lite", action="store_true", help="be an ICE-lite agent")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--echo", action="store_true", help="echo every datagram received")
    mode.add_argument("--send", metavar="TEXT", help="send TEXT and count the echoes")
    parser.add_argument("--count", type=int, default=5, help="datagrams to --send (default 5)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for a pair, and for echoes (default 30)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> NoReturn:
    """Run the command on the global reactor; exits the process with its status."""
    reactMain(iceMain, args)


def _resolve(text: str, default: int) -> tuple[str, int]:
    host, port = splitHostPort(text)
    info = socket.getaddrinfo(host, port or default, 0, socket.SOCK_DGRAM)[0][4]
    return str(info[0]), int(info[1])


class Signalling(LineOnlyReceiver):
    """Reads the remote description and trickled candidates, one JSON line each."""

    delimiter = b"\n"

    def __init__(self, agent: Agent, err: IO[str]) -> None:
        self.agent = agent
        self.err = err
        self.described = False
        self.ended: Deferred[None] = Deferred()

    def lineReceived(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return  # not signalling: the other side's "selected ..." line and so on
        if not isinstance(message, dict):
            return
        try:
            if not self.described and "ufrag" in message:
                self.described = True
                self.agent.setRemote(str(message["ufrag"]), str(message["pwd"]),
                                     bool(message.get("lite", False)))
                for candidate in message.get("candidates", []):
                    self._candidate(candidate)
            elif "candidate" in message:
                self._candidate(message["candidate"])
            elif message.get("end-of-candidates"):
                self.agent.endOfRemoteCandidates()
        except (KeyError, TypeError) as e:
            self.err.write(f"p2pnet: bad signalling line: {e}\n")

    def _candidate(self, line: Any) -> None:
        try:
            self.agent.addRemoteCandidate(str(line))
        except CandidateDecodeError as e:
            self.err.write(f"p2pnet: ignoring a bad candidate: {e}\n")

    def connectionLost(self, reason: Any = None) -> None:
        self.agent.endOfRemoteCandidates()
        if not self.ended.called:
            self.ended.callback(None)


def _turnServer(args: argparse.Namespace, reactor: Any) -> TurnServer:
    default = STUNS_PORT if args.turn_transport == "tls" else STUN_PORT
    host, port = _resolve(args.turn, default)
    tls = None
    if args.turn_transport == "tls":
        name = splitHostPort(args.turn)[0]
        if args.turn_ca:
            with open(args.turn_ca, "rb") as f:
                tls = optionsForClientTLS(name, trustRoot=Certificate.loadPEM(f.read()))
        else:
            tls = optionsForClientTLS(name)
    return TurnServer(host, port, args.turn_user, args.turn_password, args.turn_transport, tls)


async def iceMain(reactor: Any, args: argparse.Namespace, out: IO[str] | None = None,
                  err: IO[str] | None = None, stdin: Any = None) -> int:
    """The command's work on C{reactor}; returns the exit status.

    @param stdin: a function making the stdin transport for a protocol (default
        C{twisted.internet.stdio.StandardIO}).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if args.turn and not (args.turn_user and args.turn_password):
        err.write("p2pnet: --turn needs --turn-user and --turn-password\n")
        return 2
    if args.relay_only and not args.turn:
        err.write("p2pnet: --relay-only needs --turn\n")
        return 2
    try:
        stun = [_resolve(s, STUN_PORT) for s in args.stun]
        turn = [_turnServer(args, reactor)] if args.turn else []
    except (OSError, ValueError) as e:
        err.write(f"p2pnet: {e}\n")
        return 2
    agent = Agent(reactor, controlling=args.role == "controlling", lite=args.lite,
                  hosts=args.host, stunServers=stun, turnServers=turn,
                  relayOnly=args.relay_only)
    try:
        return await _session(reactor, agent, args, out, err, stdin)
    finally:
        await agent.close()


def _print(out: IO[str], line: str) -> None:
    out.write(line + "\n")
    out.flush()


async def _session(reactor: Any, agent: Agent, args: argparse.Namespace, out: IO[str],
                   err: IO[str], stdin: Any) -> int:
    candidates = await agent.gather()
    if not candidates:
        err.write("p2pnet: no candidates were gathered\n")
        return 1
    _print(out, json.dumps(agent.localDescription()))
    _print(out, json.dumps({"end-of-candidates": True}))
    signalling = Signalling(agent, err)
    if stdin is None:
        from twisted.internet.stdio import StandardIO

        stdin = StandardIO
    stdin(signalling)
    held: list[bytes] = []
    if args.echo:
        # Echo from the start: the peer may select (and send) before this side has.
        agent.onData = lambda data: _echoOne(agent, data, held)
    connecting = agent.connect()
    timer = reactor.callLater(args.timeout, connecting.cancel)
    try:
        pair = await connecting
    except IceFailed as e:
        err.write(f"p2pnet: no path: {e}\n")
        return 1
    except Exception:
        err.write(f"p2pnet: no path within {args.timeout:g} s\n")
        return 1
    finally:
        if timer.active():
            timer.cancel()
    _print(out, f"selected {(pair.validLocal or pair.local).type} {pair.remote.type}")
    if args.echo:
        for data in held:
            _echoOne(agent, data, held)
        held.clear()
        await signalling.ended
        return 0
    if args.send is not None:
        return await _send(reactor, agent, args, out)
    return 0


def _echoOne(agent: Agent, data: bytes, held: list[bytes]) -> None:
    """Send C{data} back, or hold it (a few) until a pair is selected."""
    try:
        agent.send(data)
    except NotConnected:
        if len(held) < 64 and agent.selectedPair is None:
            held.append(data)


async def _send(reactor: Any, agent: Agent, args: argparse.Namespace, out: IO[str]) -> int:
    payloads = {f"{args.send} {i}".encode() for i in range(args.count)}
    echoed: set[bytes] = set()
    agent.onData = lambda data: echoed.add(data) if data in payloads else None
    for payload in sorted(payloads):
        try:
            agent.send(payload)
        except NotConnected:
            break
        await deferLater(reactor, 0.02)
    waited = 0.0
    while len(echoed) < args.count and waited < args.timeout:
        await deferLater(reactor, 0.05)
        waited += 0.05
    _print(out, f"echoed {len(echoed)}/{args.count}")
    return 0 if echoed else 1
