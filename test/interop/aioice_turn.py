"""aioice's TURN client (C{aioice.turn.create_turn_endpoint}) against a TURN server.

Usage::

    python test/interop/aioice_turn.py HOST PORT udp|tcp USER PASSWORD PEERHOST PEERPORT

Allocates (aioice answers the 401 itself), sends datagrams to the UDP echo peer through
the relay (aioice binds a channel on the first send and uses ChannelData), waits for
every echo, refreshes the allocation with aioice's own Refresh transaction, and closes
(aioice deletes the allocation). Prints, exiting 0::

    RELAYED <host> <port>
    MAPPED <host> <port>
    CHANNEL <number>
    ECHOED <count>
    REFRESHED <lifetime>

Any failure is printed to stderr with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from aioice import stun, turn

COUNT = 20


class Receiver(asyncio.DatagramProtocol):
    """Collects the datagrams relayed back from the peer."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.done = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        if len(self.received) == COUNT and not self.done.done():
            self.done.set_result(None)


async def main(args: argparse.Namespace) -> None:
    transport, receiver = await turn.create_turn_endpoint(
        Receiver, (args.host, args.port), args.user, args.password, transport=args.transport)
    try:
        relayed = transport.get_extra_info("sockname")
        mapped = transport.get_extra_info("related_address")
        print("RELAYED", *relayed)
        print("MAPPED", *mapped)
        peer = (args.peerhost, args.peerport)
        sent = [b"datagram %d " % i + bytes(100) for i in range(COUNT)]
        for data in sent:
            transport.sendto(data, peer)
            await asyncio.sleep(0.01)
        await asyncio.wait_for(receiver.done, 10)
        if sorted(receiver.received) != sorted(sent):
            raise AssertionError("the echoes differ from what was sent")
        inner = transport._TurnTransport__inner_protocol  # type: ignore[attr-defined]
        print("CHANNEL", inner.peer_to_channel[peer])
        print("ECHOED", len(receiver.received))
        request = stun.Message(message_method=stun.Method.REFRESH,
                               message_class=stun.Class.REQUEST)
        request.attributes["LIFETIME"] = 900
        response, _ = await inner.request_with_retry(request)
        print("REFRESHED", response.attributes["LIFETIME"])
    finally:
        transport.close()
        await asyncio.sleep(0.2)  # let aioice send its deleting Refresh


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("transport", choices=("udp", "tcp"))
    parser.add_argument("user")
    parser.add_argument("password")
    parser.add_argument("peerhost")
    parser.add_argument("peerport", type=int)
    try:
        asyncio.run(main(parser.parse_args()))
    except Exception as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
