# -*- test-case-name: test.unit.test_commands_stun -*-
"""C{p2pnet stun HOST[:PORT]}: this host's mapped address, and its NAT's behaviour.

Over UDP (the default) the command sends a Binding request; when the server answers
with OTHER-ADDRESS (RFC 5780) it goes on to the NAT mapping and filtering tests. Over
C{--tcp} or C{--tls} it prints the addresses only.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from collections.abc import Callable
from typing import IO, Any, NoReturn

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.defer import CancelledError, maybeDeferred
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.internet.threads import deferToThreadPool

from p2pnet.addresses import routeSource
from p2pnet.codecs.stun import Attr, StunDecodeError, decodeAddress
from p2pnet.commands import reactMain, step
from p2pnet.config import parseSeconds
from p2pnet.protocols.nat_discovery import (
    NatBehaviour,
    NatDiscoveryError,
    bindingRequest,
    discover,
)
from p2pnet.protocols.stun_client import (
    LongTermCredentials,
    StunClientProtocol,
    StunErrorResponse,
    StunTimeout,
    addressAttribute,
    connectStream,
    mappedAddress,
)
from p2pnet.protocols.stun_transactions import DEFAULT_RC, DEFAULT_RM, DEFAULT_TI

__all__ = ["formatAddress", "formatResult", "register", "run", "splitHostPort", "stunMain"]

#: Default ports (RFC 8489 §18.1 / IANA): STUN over UDP/TCP, and over TLS.
STUN_PORT = 3478
STUNS_PORT = 5349

#: UDP waits C{RTO * (2**(Rc-1) - 1 + Rm)} in all: 79 RTOs with the RFC's values.
_RTOS_PER_TRANSACTION = 2 ** (DEFAULT_RC - 1) - 1 + DEFAULT_RM


def splitHostPort(text: str) -> tuple[str, int | None]:
    """C{HOST}, C{HOST:PORT}, C{[V6]:PORT}, C{[V6]} or a bare IPv6 address.

    @return: the host (brackets removed) and the port, or C{None} when not given.
    @raise ValueError: for an empty host or a bad port.
    """
    text = text.strip()
    port: str | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad address {text!r}")
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text
    if not host:
        raise ValueError(f"no host in {text!r}")
    if port is None:
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port {port!r}")
    return host, int(port)


def formatAddress(addr: tuple[str, int]) -> str:
    """C{1.2.3.4:3478}, or C{[2001:db8::1]:3478} for IPv6."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def formatResult(result: NatBehaviour) -> list[str]:
    """The lines the command prints for a result, one fact per line."""
    lines = [f"mapped address:  {formatAddress(result.mappedAddress)}"]
    if result.responseOrigin is not None:
        lines.append(f"response origin: {formatAddress(result.responseOrigin)}")
    if result.otherAddress is not None:
        lines.append(f"other address:   {formatAddress(result.otherAddress)}")
    if result.natPresent is not None:
        lines.append(
            "NAT:             "
            + ("present" if result.natPresent else "none (mapped address is the local address)")
        )
    if result.mapping is not None:
        lines.append(f"NAT mapping:     {result.mapping}")
    if result.filtering is not None:
        lines.append(f"NAT filtering:   {result.filtering}")
    return lines


def register(subparsers: Any) -> None:
    """Add C{p2pnet stun} to the C{p2pnet} command."""
    parser = subparsers.add_parser(
        "stun",
        help="show this host's mapped address and NAT behaviour",
        description="Send a STUN Binding request and print the mapped address. Over UDP, "
        "against a server with RFC 5780 (it answers with OTHER-ADDRESS), also run the NAT "
        "mapping and filtering behaviour tests.",
    )
    parser.add_argument(
        "server",
        metavar="HOST[:PORT]",
        type=splitHostPort,
        help="the STUN server; an IPv6 address with a port as [::1]:3478 "
        f"(default port {STUN_PORT}, {STUNS_PORT} with --tls)",
    )
    transport = parser.add_mutually_exclusive_group()
    transport.add_argument("--tcp", action="store_true", help="use TCP instead of UDP")
    transport.add_argument("--tls", action="store_true", help="use TLS over TCP")
    parser.add_argument(
        "--timeout",
        type=parseSeconds,
        default=DEFAULT_TI,
        metavar="SECONDS",
        help="give up on a request after this long (default %(default)s, as RFC 8489); "
        "over UDP the first retransmission comes after 1/79 of it",
    )
    parser.add_argument("--user", help="long-term credential user name")
    parser.add_argument("--password", help="long-term credential password")
    parser.add_argument(
        "--ca-cert", metavar="PEM", help="with --tls: trust this certificate (authority)"
    )
    parser.add_argument(
        "--insecure", action="store_true", help="with --tls: do not verify the certificate"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> NoReturn:
    """Run the command on the global reactor; exits the process with its status.

    Over TCP and TLS, C{--timeout} bounds the whole command (connecting, the TLS
    handshake and the answer); over UDP each transaction is bounded by it.
    """
    reactMain(stunMain, args, deadline=args.timeout if args.tcp or args.tls else None)


async def stunMain(
    reactor: Any, args: argparse.Namespace, out: IO[str] | None = None,
    err: IO[str] | None = None,
    sourceAddress: Callable[[tuple[str, int]], str | None] = routeSource,
) -> int:
    """The command's work on C{reactor}; returns the exit status.

    @param out: where results go (default standard output).
    @param err: where the one-line error goes (default standard error).
    @param sourceAddress: the local address the route to a server starts from (the UDP
        socket is bound to it, so the result can tell whether a NAT changed it).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if (args.user is None) != (args.password is None):
        print("p2pnet stun: give --user and --password together", file=err)
        return 2
    credentials = (
        LongTermCredentials(args.user, args.password) if args.user is not None else None
    )
    host, port = args.server
    if port is None:
        port = STUNS_PORT if args.tls else STUN_PORT
    try:
        if args.tcp or args.tls:
            result = await _stream(reactor, args, host, port, credentials)
        else:
            result = await _udp(reactor, args, host, port, credentials, sourceAddress)
    except CancelledError:
        raise  # the deadline or Ctrl-C (p2pnet.commands.reactMain says which)
    except Exception as e:
        print(f"p2pnet stun: {_describe(e, host, port, args.tls)}", file=err)
        return 1
    for line in formatResult(result):
        print(line, file=out)
    return 0


def _describe(error: Exception, host: str, port: int, tls: bool = False) -> str:
    """One line for a person about why the command failed, and what to try."""
    server = formatAddress((host, port))
    if isinstance(error, ConnectionLost | ConnectionDone):
        if tls:
            return (f"{server} closed the connection during the TLS handshake: is it a "
                    f"STUN-over-TLS port (default {STUNS_PORT})? Without --tls for a plain "
                    "TCP port")
        return f"{server} closed the connection before answering: is it a STUN port?"
    if isinstance(error, StunTimeout):
        return f"no response from {server} ({error})"
    if isinstance(error, StunErrorResponse):
        text = f"{server} answered with error {error}"
        alternate = error.response.get(Attr.ALTERNATE_SERVER)
        if error.code == 300 and alternate is not None:
            try:
                text += f" (alternate server {formatAddress(decodeAddress(alternate))})"
            except StunDecodeError:
                pass
        return text
    if isinstance(error, NatDiscoveryError | StunDecodeError):
        return f"{server}: {error}"
    if isinstance(error, SSL.Error):
        return f"TLS with {server} failed: {_sslReason(error)}"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve {host}: {error.strerror}"
    if isinstance(error, ConnectError | OSError):
        return f"cannot reach {server}: {error}"
    return f"{type(error).__name__}: {error}"


def _sslReason(error: SSL.Error) -> str:
    """The reason strings of an OpenSSL error, with a hint when verification failed."""
    reasons = [str(entry[-1]) for entry in error.args[0] if isinstance(entry, tuple)] if (
        error.args and isinstance(error.args[0], list)
    ) else []
    text = "; ".join(reasons) or str(error)
    if "certificate verify failed" in text:
        text += " (trust it with --ca-cert PEM, or skip the check with --insecure)"
    return text


async def _resolve(reactor: Any, host: str, port: int) -> tuple[str, int]:
    """The first IP address of C{host}, looked up in a thread unless it is already one."""
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        pass
    infos = await deferToThreadPool(
        reactor, reactor.getThreadPool(), socket.getaddrinfo, host, port, 0, socket.SOCK_DGRAM
    )
    return str(infos[0][4][0]), port


async def _udp(
    reactor: Any,
    args: argparse.Namespace,
    host: str,
    port: int,
    credentials: LongTermCredentials | None,
    sourceAddress: Callable[[tuple[str, int]], str | None],
) -> NatBehaviour:
    server = await _resolve(reactor, host, port)
    source = sourceAddress(server)
    if source is None:
        raise OSError(f"no route to {formatAddress(server)}")
    client = StunClientProtocol(
        reactor=reactor, rto=args.timeout / _RTOS_PER_TRANSACTION, rc=DEFAULT_RC, rm=DEFAULT_RM
    )
    # Bound to the address the route to the server uses, the socket knows its own
    # address, so the tests can tell whether a NAT changed it.
    listening = reactor.listenUDP(0, client, interface=source)
    try:
        return await discover(client, server, credentials=credentials)
    finally:
        await maybeDeferred(listening.stopListening)


async def _stream(
    reactor: Any,
    args: argparse.Namespace,
    host: str,
    port: int,
    credentials: LongTermCredentials | None,
) -> NatBehaviour:
    tlsOptions: Any = None
    if args.tls:
        if args.insecure:
            tlsOptions = ssl.CertificateOptions(verify=False)
        elif args.ca_cert:
            with open(args.ca_cert, "rb") as f:
                trust = ssl.Certificate.loadPEM(f.read())
            tlsOptions = ssl.optionsForClientTLS(host, trustRoot=trust)
        else:
            tlsOptions = ssl.optionsForClientTLS(host)
    step(args, f"{'TLS' if args.tls else 'TCP'} connection to {formatAddress((host, port))}")
    protocol = await connectStream(
        host,
        port,
        reactor=reactor,
        tlsOptions=tlsOptions,
        ti=args.timeout,
        connectTimeout=args.timeout,
    )
    step(args, f"the Binding response from {formatAddress((host, port))}")
    try:
        response = await protocol.request(bindingRequest(), credentials=credentials)
    except BaseException:
        # A TLS close waits for the handshake to end, which a silent server never lets
        # happen: drop the connection instead.
        protocol.transport.abortConnection()  # type: ignore[union-attr]
        raise
    await protocol.close()
    mapped = mappedAddress(response)
    if mapped is None:
        raise NatDiscoveryError("the Binding response carries no mapped address")
    return NatBehaviour(
        mapped,
        addressAttribute(response, Attr.RESPONSE_ORIGIN),
        addressAttribute(response, Attr.OTHER_ADDRESS),
    )
