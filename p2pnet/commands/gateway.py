# -*- test-case-name: test.unit.test_gateway_command,test.interop.test_gateway_command -*-
"""C{p2pnet gateway call METHOD [JSON]} and C{p2pnet gateway token}: the gateway from a shell.

C{call} connects as an operator (client C{cli}, mode C{cli}), sends one request and prints
the payload as JSON. Without C{--identity} it connects without a device, which keeps its
scopes only over loopback; with C{--identity FILE} it signs with that device key (made
on first use), which must be paired for remote use. The token comes from C{--token},
C{P2PNET_GATEWAY_TOKEN}, or the one generated in C{--data-dir}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from OpenSSL import crypto
from twisted.internet.defer import CancelledError, Deferred, TimeoutError

from p2pnet.commands import addDataDir, fail, reactMain, runOnStore, step
from p2pnet.config import parseSeconds

__all__ = ["call", "register"]

DEFAULT_URL = "ws://127.0.0.1:18789/"


def register(subparsers: Any) -> None:
    """Add C{p2pnet gateway ...} to the C{p2pnet} command."""
    parser = subparsers.add_parser(
        "gateway", help="talk to the control gateway",
        description="Call the control gateway as an operator, or print the token it generated.",
    )
    commands = parser.add_subparsers(dest="gatewayCommand", required=True, metavar="ACTION")
    callParser = commands.add_parser(
        "call", help="call one gateway method and print its result as JSON"
    )
    callParser.add_argument("method", help="method name, e.g. status or node.list")
    callParser.add_argument(
        "params", nargs="?", default=None, help="parameters as a JSON object (default: none)"
    )
    addConnectionOptions(callParser)
    callParser.set_defaults(run=runCall)
    tokenParser = commands.add_parser(
        "token", help="print the gateway token generated in a data directory, or shared "
                      "by the gateways of a store"
    )
    tokenParser.add_argument(
        "--store", default="", metavar="URL",
        help="the gateways' shared store, redis://... or redis-sentinel://... (default: the "
             "data directory's gateway.sqlite)")
    tokenParser.set_defaults(run=runToken)
    # Before or after the action; call reads the generated token there when given none.
    addDataDir(parser, callParser, tokenParser)


def addConnectionOptions(parser: argparse.ArgumentParser) -> None:
    """The options of a command that calls the gateway as an operator (C{gateway call},
    the session commands): where, which secret, which device, how long."""
    parser.add_argument("--url", default=DEFAULT_URL, help="gateway URL (default %(default)s)")
    parser.add_argument("--token", help="gateway token (default: $P2PNET_GATEWAY_TOKEN, "
                                        "else the one generated in --data-dir)")
    parser.add_argument(
        "--password", help="gateway password (default: $P2PNET_GATEWAY_PASSWORD)"
    )
    parser.add_argument(
        "--identity", metavar="FILE", help="sign with the device key in FILE (made if missing)"
    )
    parser.add_argument(
        "--scope",
        action="append",
        help="scope to ask for; repeat (default: operator.admin, read, write, pairing)",
    )
    parser.add_argument(
        "--timeout", type=parseSeconds, default=30.0, metavar="SECONDS", help="default 30"
    )
    parser.add_argument(
        "--ca-cert", metavar="PEM", help="wss://: trust this certificate (authority)"
    )
    parser.add_argument(
        "--insecure", action="store_true", help="wss://: do not verify the certificate"
    )


def connectionFrom(args: argparse.Namespace) -> tuple[Any, Any]:
    """C{(ClientOptions, TrustPolicy or None)} from L{addConnectionOptions}' options.

    @raise ValueError: the C{--ca-cert} file cannot be used (the message says why).
    """
    from p2pnet.protocols.gateway_client import (
        OPERATOR_SCOPES,
        ClientOptions,
        DeviceIdentity,
        TrustPolicy,
    )

    token = args.token or os.environ.get("P2PNET_GATEWAY_TOKEN")
    if not token and getattr(args, "data_dir", None):
        token = storedToken(args.data_dir)
    options = ClientOptions(
        role="operator",
        scopes=tuple(args.scope or OPERATOR_SCOPES),
        token=token,
        password=args.password or os.environ.get("P2PNET_GATEWAY_PASSWORD"),
        clientId="cli",
        clientMode="cli",
        identity=DeviceIdentity.load(args.identity) if args.identity else None,
    )
    tlsPolicy = None
    if args.insecure:
        tlsPolicy = TrustPolicy(verify=False)
    elif args.ca_cert:
        try:
            with open(args.ca_cert, "rb") as f:
                tlsPolicy = TrustPolicy(f.read())
        except (OSError, ValueError, crypto.Error) as e:
            raise ValueError(f"cannot use --ca-cert {args.ca_cert}: {e}") from None
    return options, tlsPolicy


async def callReporting(reactor: Any, args: argparse.Namespace, method: str, params: Any,
                        options: Any, tlsPolicy: Any) -> tuple[int, Any]:
    """L{call} for a command: C{(0, payload)}, or C{(1, None)} after one line on
    standard error saying what went wrong (the gateway's error, or why it is
    unreachable). The deadline and Ctrl-C propagate."""
    from p2pnet.protocols.gateway_client import GatewayError

    step(args, f"the gateway at {args.url}")
    try:
        payload = await call(reactor, args.url, method, params, options, args.timeout,
                             tlsPolicy)
    except (CancelledError, TimeoutError):
        raise  # the deadline or Ctrl-C: p2pnet.commands.reactMain says which
    except GatewayError as e:
        detail = f" [{e.detailCode}]" if e.detailCode else ""
        hint = ""
        if not options.token and not options.password and options.identity is None:
            hint = (" (no token given: pass --token, set P2PNET_GATEWAY_TOKEN, or give "
                    "the server's --data-dir; 'p2pnet gateway token' prints it)")
        sys.stderr.write(f"p2pnet: {e.code}: {e.message}{detail}{hint}\n")
        return 1, None
    except Exception as e:  # connection refused, timeout, TLS: one line, status 1
        sys.stderr.write(f"p2pnet: cannot reach {args.url}: {e}\n")
        return 1, None
    return 0, payload


def storedToken(dataDir: str) -> str | None:
    """The gateway token generated into C{dataDir}, if there is one."""
    from p2pnet.store.gateway import GatewayStore

    path = os.path.join(dataDir, "gateway.sqlite")
    if not os.path.exists(path):
        return None
    store = GatewayStore(path)
    try:
        return store.secret("gateway-token")
    finally:
        store.close()


def runToken(args: argparse.Namespace) -> int:
    """Print the generated token; status 1 if there is none."""
    if args.store:
        return runOnStore(_sharedToken, args, 30.0)
    token = storedToken(args.data_dir)
    if token is None:
        sys.stderr.write(f"p2pnet: no generated gateway token in {args.data_dir}\n")
        return 1
    sys.stdout.write(token + "\n")
    return 0


async def _sharedToken(reactor: Any, args: argparse.Namespace) -> int:
    """Print the token the gateways of C{--store} share; status 1 if there is none."""
    from p2pnet.store.gateway_redis import sharedSecret

    step(args, "the store at --store")
    try:
        token = await sharedSecret(args.store, "gateway-token")
    except CancelledError:
        raise
    except Exception as e:
        return fail(args, f"cannot use the store: {e}")
    if not token:
        return fail(args, "no gateway token in the store: a gateway in token mode writes "
                          "one when it starts")
    sys.stdout.write(token + "\n")
    return 0


async def call(
    reactor: Any,
    url: str,
    method: str,
    params: Any,
    options: Any,
    timeout: float,
    tlsPolicy: Any = None,
) -> Any:
    """Connect, send one request, return its payload (raises L{GatewayError})."""
    from p2pnet.protocols.gateway_client import GatewayClientProtocol, connectWebSocket

    protocol = await connectWebSocket(
        reactor, url, lambda: GatewayClientProtocol(reactor, options), tlsPolicy
    )
    connected = protocol.connected
    connected.addTimeout(timeout, reactor)
    await connected
    try:
        answer: Deferred[Any] = protocol.request(method, params)
        answer.addTimeout(timeout, reactor)
        return await answer
    finally:
        protocol.close()


def runCall(args: argparse.Namespace) -> int:
    """Run C{p2pnet gateway call}; print the payload, or the error and status 1.

    Returns 2 for bad arguments; otherwise runs on the global reactor and exits the
    process with the call's status (L{p2pnet.commands.reactMain}).
    """
    try:
        params = None if args.params is None else json.loads(args.params)
    except ValueError as e:
        sys.stderr.write(f"p2pnet: params are not JSON: {e}\n")
        return 2
    try:
        options, tlsPolicy = connectionFrom(args)
    except ValueError as e:
        sys.stderr.write(f"p2pnet: {e}\n")
        return 2

    async def main(reactor: Any, args: argparse.Namespace) -> int:
        status, payload = await callReporting(reactor, args, args.method, params, options,
                                              tlsPolicy)
        if status == 0:
            sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        return status

    reactMain(main, args, deadline=args.timeout)
