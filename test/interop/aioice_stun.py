"""One STUN Binding transaction made by aioice's own code, for the interop tests.

Usage::

    python test/interop/aioice_stun.py HOST PORT udp|tcp|tls [--cafile PEM]

UDP goes through the ICE agent's server-reflexive query
(C{aioice.ice.server_reflexive_candidate} on an C{aioice.ice.StunProtocol}); TCP and TLS
through aioice's TURN-over-stream client (C{aioice.turn.TurnClientTcpProtocol.request}),
the way C{aioice.turn.create_turn_endpoint} connects. Either way aioice builds the
request, retransmits, matches the transaction and parses the answer.

Prints two lines and exits 0::

    LOCAL <host> <port>      the client socket's own address
    MAPPED <host> <port>     XOR-MAPPED-ADDRESS from the server's answer

and, when the answer carries them, C{SOFTWARE <text>} and C{ATTRIBUTES <names>}.
Any failure is printed to stderr with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from typing import Any

from aioice import ice, stun, turn
from aioice.candidate import Candidate


class _NoReceiver:
    """The C{Connection} side of C{StunProtocol}; a lone Binding query never calls it."""

    def data_received(self, data: bytes, component: int) -> None:
        raise AssertionError(f"unexpected non-STUN datagram {data!r}")

    def request_received(self, message: Any, addr: Any, protocol: Any) -> None:
        raise AssertionError(f"unexpected STUN request {message}")

    def protocol_lost(self, protocol: Any) -> None:
        pass


async def queryUdp(host: str, port: int) -> tuple[tuple[str, int], tuple[str, int], Any]:
    """Binding over UDP through aioice's ICE server-reflexive candidate query."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: ice.StunProtocol(_NoReceiver()),  # type: ignore[arg-type]
        local_addr=(host, 0),
    )
    try:
        local = transport.get_extra_info("sockname")[:2]
        protocol.local_candidate = Candidate(
            foundation="1", component=1, transport="udp", priority=1,
            host=local[0], port=local[1], type="host",
        )
        # Keep the response too: the candidate only carries the mapped address.
        responses: list[Any] = []
        request = protocol.request

        async def recordingRequest(*args: Any, **kwargs: Any) -> Any:
            response = await request(*args, **kwargs)
            responses.append(response[0])
            return response

        protocol.request = recordingRequest  # type: ignore[method-assign]
        candidate, _ = await ice.server_reflexive_candidate(protocol, (host, port))
        return (local[0], local[1]), (candidate.host, candidate.port), responses[0]
    finally:
        transport.close()


async def queryStream(
    host: str, port: int, context: ssl.SSLContext | None
) -> tuple[tuple[str, int], tuple[str, int], Any]:
    """Binding over TCP (or TLS with C{context}) through aioice's TURN stream client."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        lambda: turn.TurnClientTcpProtocol(
            (host, port), username=None, password=None, lifetime=600,
            channel_refresh_time=500,
        ),
        host=host,
        port=port,
        ssl=context,
        server_hostname=host if context is not None else None,
    )
    try:
        local = transport.get_extra_info("sockname")[:2]
        request = stun.Message(
            message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST
        )
        response, _ = await protocol.request(request)
        mapped = response.attributes["XOR-MAPPED-ADDRESS"]
        return (local[0], local[1]), (mapped[0], mapped[1]), response
    finally:
        transport.close()


async def main(argv: list[str]) -> int:
    """Run one query as the command line says; print the addresses."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("transport", choices=("udp", "tcp", "tls"))
    parser.add_argument("--cafile", help="PEM certificate to trust for tls")
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args(argv)
    if args.transport == "udp":
        query = queryUdp(args.host, args.port)
    else:
        context = None
        if args.transport == "tls":
            context = ssl.create_default_context(cafile=args.cafile)
        query = queryStream(args.host, args.port, context)
    local, mapped, response = await asyncio.wait_for(query, args.timeout)
    print("LOCAL", *local)
    print("MAPPED", *mapped)
    if "SOFTWARE" in response.attributes:
        print("SOFTWARE", response.attributes["SOFTWARE"])
    print("ATTRIBUTES", " ".join(response.attributes))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
