"""Embed p2pnet's STUN server in your own Twisted program, then ask it for your address.

Run it: python docs/examples/embed_stun.py
"""

import tempfile

from twisted.application.service import MultiService
from twisted.internet import defer, task
from twisted.internet.protocol import DatagramProtocol

from p2pnet import Config, buildService
from p2pnet.codecs.stun import Attr, Message, Method, StunClass, decode, decodeXorAddress


class AskOnce(DatagramProtocol):
    """Sends one Binding request and fires C{answer} with the mapped address."""

    def __init__(self) -> None:
        self.answer: defer.Deferred = defer.Deferred()

    def datagramReceived(self, data: bytes, addr: tuple) -> None:
        reply = decode(data)
        mapped = reply.get(Attr.XOR_MAPPED_ADDRESS)
        self.answer.callback(decodeXorAddress(mapped, reply.transactionId))


async def main(reactor) -> None:
    application = MultiService()  # your program's own services live here too
    config = Config(
        services=("stun",),
        listen=("127.0.0.1",),
        stun_port=0,  # 0: any free port
        tls_port=0,
        data_dir=tempfile.mkdtemp(),  # the TLS certificate is made here on first start
    )
    p2pnet = buildService(config, reactor)
    p2pnet.setServiceParent(application)
    application.startService()

    stun = p2pnet.getServiceNamed("stun")
    port = stun.boundPorts["udp"]
    print(f"STUN server on 127.0.0.1:{port}")

    client = AskOnce()
    reactor.listenUDP(0, client, interface="127.0.0.1")
    client.transport.write(Message(Method.BINDING, StunClass.REQUEST).encode(),
                           ("127.0.0.1", port))
    host, mapped = await client.answer.addTimeout(5, reactor)
    print(f"mapped address: {host}:{mapped}")
    print("counters:", stun.stats.snapshot())
    await application.stopService()


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
