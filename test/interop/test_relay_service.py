"""Tests for L{p2pnet.services.relay} with real sockets."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from p2pnet.protocols.relay import SPLICE_BUFFER
from p2pnet.protocols.rustdesk_client import RelayLegClient
from p2pnet.services.relay import RelayService


class SlowReaderTests(TestCase):
    """A slow reader does not make the relay buffer without bound (real sockets)."""

    timeout = 20

    @defer.inlineCallbacks
    def test_slowReader(self) -> Any:
        service = RelayService(reactor, listen=("127.0.0.1",), port=0)
        service.startService()
        self.addCleanup(service.stopService)
        port = service.boundPorts["tcp"]
        writer = RelayLegClient("slow")
        reader = RelayLegClient("slow")
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), writer)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), reader)
        reader.transport.pauseProducing()
        yield deferLater(reactor, 0.2, lambda: None)
        chunk = b"z" * 65536
        for _ in range(400):  # 25 MiB, far more than socket buffers hold
            writer.transport.write(chunk)
        yield deferLater(reactor, 1.0, lambda: None)
        [pair] = service.activePairs
        for leg in (pair.a, pair.b):
            held = sum(len(x) for x in leg.transport._tempDataBuffer) + \
                len(leg.transport.dataBuffer)
            # At most one read beyond the buffer size that pauses the reader.
            self.assertLessEqual(held, 2 * SPLICE_BUFFER)
        self.assertLess(pair.bytes, 25 * 1024 * 1024)
        reader.transport.resumeProducing()
        received = yield reader.waitFor(400 * 65536)
        self.assertEqual(received, chunk * 400)
        writer.transport.loseConnection()
        reader.transport.loseConnection()
        yield defer.DeferredList([writer.closed, reader.closed])
