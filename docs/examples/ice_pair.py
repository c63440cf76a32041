"""Two ICE agents in one Twisted program find each other over loopback and exchange a
datagram. In real use the descriptions travel over your signalling channel.

Run it: python docs/examples/ice_pair.py
"""

from twisted.internet import defer, task

from p2pnet.ice import Agent


async def main(reactor) -> None:
    alice = Agent(reactor, controlling=True, hosts=["127.0.0.1"])
    bob = Agent(reactor, controlling=False, hosts=["127.0.0.1"])
    await defer.gatherResults([defer.Deferred.fromCoroutine(alice.gather()),
                               defer.Deferred.fromCoroutine(bob.gather())])

    # Signalling: each side's description to the other (JSON-friendly dicts).
    for me, peer in ((alice, bob), (bob, alice)):
        description = me.localDescription()
        peer.setRemote(description["ufrag"], description["pwd"], description["lite"])
        for line in description["candidates"]:
            peer.addRemoteCandidate(line)
        peer.endOfRemoteCandidates()

    pair = await alice.connect()
    await bob.connect()
    print("selected:", pair.local.type, pair.local.base, "->", pair.remote.type,
          pair.remote.address)

    received: defer.Deferred = defer.Deferred()
    bob.onData = lambda data: bob.send(data.upper())
    alice.onData = received.callback
    alice.send(b"hello over ice")
    print("echoed:", (await received).decode())
    await alice.close()
    await bob.close()


if __name__ == "__main__":
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))
