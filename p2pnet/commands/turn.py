# -*- test-case-name: test.unit.test_turn_client,test.interop.test_turn_client -*-
"""C{p2pnet turn HOST --user U --password P}: allocate on a TURN server, relay datagrams
to an echo peer and back, print the relayed address and the round-trip time.

Without C{--peer}, the command runs its own UDP echo peer on this host and names it to
the server by the server-reflexive address the allocation reported (so behind a NAT
give C{--peer} an echo server the TURN server can reach, e.g. coturn's
C{turnutils_peer}). The server must allow relaying to that peer (for a server on this
host: C{--allow-loopback-peers}), and the command says so when it answers 403.

The relayed address is of the peer's address family (an IPv6 server or peer asks for an
IPv6 relayed address, RFC 6156), and every exchange with the server, the Allocate
included, ends within C{--timeout}.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import IO, Any, NoReturn

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, maybeDeferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater

from p2pnet.addresses import family as addressFamily
from p2pnet.addresses import isLoopback
from p2pnet.commands import reactMain
from p2pnet.protocols.stun_client import StunErrorResponse, StunTimeout
from p2pnet.protocols.turn_client import TurnClientProtocol

__all__ = ["register", "run", "turnMain"]


class _Echo(DatagramProtocol):
    """The local echo peer: every datagram goes back where it came from."""

    noisy = False

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.transport.write(data, addr)  # type: ignore[union-attr]


def _hostPort(text: str, default: int) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, default


def register(subparsers: Any) -> None:
    """Add C{turn HOST}."""
    parser = subparsers.add_parser(
        "turn", help="allocate on a TURN server and measure a relayed round trip",
        epilog="The running server's allocations: p2pnet turn sessions [--user U] and "
               "p2pnet turn kill --user U | --client ADDR (see their --help).")
    parser.add_argument("host", help="TURN server address, ADDR or ADDR:PORT")
    parser.add_argument("--port", type=int, default=3478, help="server port (default 3478)")
    parser.add_argument("--user", required=True, help="long-term or REST user name")
    parser.add_argument("--password", required=True, help="its password")
    parser.add_argument("--peer", help="echo peer ADDR:PORT (default: a local echo peer)")
    parser.add_argument("--count", type=int, default=3,
                        help="datagrams to relay (default 3)")
    parser.add_argument("--size", type=int, default=100, help="datagram size (default 100)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds to wait for each answer of the server (the Allocate "
                             "included) and for each echo (default 5); the whole command "
                             "ends within (count + 8) times it")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> NoReturn:
    """Run the command on the global reactor; exits the process with its status."""
    reactMain(turnMain, args, deadline=args.timeout * (args.count + 8))


async def turnMain(reactor: Any, args: argparse.Namespace, out: IO[str] | None = None,
                   err: IO[str] | None = None) -> int:
    """The command's work on C{reactor}; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    host, port = _hostPort(args.host, args.port)
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)
    except OSError as e:
        err.write(f"p2pnet: cannot resolve {host}: {e}\n")
        return 2
    server = (str(infos[0][4][0]), int(infos[0][4][1]))
    family = "::" if ":" in server[0] else "0.0.0.0"
    named = _hostPort(args.peer, 3480) if args.peer else None
    if named is not None:
        try:
            named = (str(socket.getaddrinfo(named[0], named[1])[0][4][0]), named[1])
        except OSError as e:
            err.write(f"p2pnet: cannot resolve {named[0]}: {e}\n")
            return 2
    # RFC 6156: the relayed address must be of the peer's family (else 443 at the bind).
    ipv6 = addressFamily(named[0] if named is not None else server[0]) == 6
    client = TurnClientProtocol(server, args.user, args.password, reactor=reactor)
    listening = reactor.listenUDP(0, client, interface=family)
    echo = None
    allocated = False

    def bounded(d: Deferred[Any]) -> Deferred[Any]:
        return d.addTimeout(args.timeout, reactor)

    try:
        try:
            allocation = await bounded(client.allocate(ipv6=ipv6))
        except TimeoutError:
            err.write(f"p2pnet: no answer from {server[0]}:{server[1]} within "
                      f"{args.timeout} s: is a TURN server there, and UDP open to it?\n")
            return 1
        except (StunErrorResponse, StunTimeout) as e:
            err.write(f"p2pnet: allocation failed: {e}\n")
            if isinstance(e, StunErrorResponse) and e.code == 440:
                err.write(f"p2pnet: the server has no IPv{6 if ipv6 else 4} relayed "
                          "addresses (relay-ip or listen of that family)\n")
            return 1
        allocated = True
        relayed = allocation.relayed[0]
        out.write(f"relayed address: {relayed[0]}:{relayed[1]}\n")
        if allocation.mapped is not None:
            out.write(f"mapped address:  {allocation.mapped[0]}:{allocation.mapped[1]}\n")
        out.write(f"lifetime:        {allocation.lifetime} s\n")
        if named is not None:
            peer = named
        else:
            echo = reactor.listenUDP(0, _Echo(), interface=family)
            base = allocation.mapped[0] if allocation.mapped else server[0]
            peer = (base, echo.getHost().port)
        try:
            await bounded(client.channelBind(peer))
        except TimeoutError:
            err.write(f"p2pnet: no answer to the channel bind within {args.timeout} s\n")
            return 1
        except (StunErrorResponse, StunTimeout) as e:
            err.write(f"p2pnet: channel bind to {peer[0]}:{peer[1]} failed: {e}\n")
            if isinstance(e, StunErrorResponse) and e.code == 403:
                hint = ("a server on this host relays to it only with "
                        "--allow-loopback-peers" if isLoopback(peer[0]) else
                        "allow its range on the server with --allow-peer CIDR")
                err.write(f"p2pnet: the server's peer policy refuses {peer[0]}: {hint}\n")
            return 1
        times = []
        for i in range(args.count):
            payload = i.to_bytes(4, "big") + bytes(max(0, args.size - 4))
            got: Deferred[None] = Deferred()

            def echoed(source: tuple[str, int], data: bytes, want: bytes = payload,
                       d: Deferred[None] = got) -> None:
                if data == want and not d.called:
                    d.callback(None)

            client.onData = echoed
            start = reactor.seconds()
            client.send(peer, payload)
            expired: list[bool] = []
            timer = reactor.callLater(
                args.timeout,
                lambda d=got, e=expired: e.append(True) or d.called or d.cancel())
            try:
                await got
            except CancelledError:
                if not expired:
                    raise  # Ctrl-C or the deadline: p2pnet.commands.reactMain says which
                err.write(f"p2pnet: no echo of datagram {i + 1} within {args.timeout} s\n")
                return 1
            if timer.active():
                timer.cancel()
            times.append((reactor.seconds() - start) * 1000)
            if i + 1 < args.count:
                await deferLater(reactor, 0.05)
        out.write(f"peer:            {peer[0]}:{peer[1]}\n")
        out.write(
            f"round-trip time: {sum(times) / len(times):.2f} ms average, "
            f"{min(times):.2f} min, {max(times):.2f} max over {len(times)} datagrams\n")
        return 0
    finally:
        try:
            if allocated:
                await bounded(client.close())
            else:
                await client.close()
        except Exception as e:  # the allocation ends anyway when its lifetime does
            err.write(f"p2pnet: deleting the allocation failed: {e}\n")
        await maybeDeferred(listening.stopListening)
        if echo is not None:
            await maybeDeferred(echo.stopListening)
