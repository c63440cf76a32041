"""Tests for L{p2pnet.services.rendezvous_registry}: bounds, pruning, key checks, the
operator listing (issue 14 item 18, rustdesk.md §4.3)."""

from __future__ import annotations

from twisted.logger import globalLogPublisher

from p2pnet.codecs.proto.rendezvous_pb2 import PunchHoleRequest, PunchHoleResponse
from p2pnet.services.rendezvous_registry import (
    MAX_ID_LENGTH,
    PRUNE_AFTER,
    PeerInfo,
    isPublicKey,
)
from test.unit.test_rendezvous_service import PK, PK2, PUBLIC, FakeLink, R, ServiceTestCase, msg

F = PunchHoleResponse


def key(i: int) -> bytes:
    from nacl.signing import SigningKey

    return bytes(SigningKey(i.to_bytes(32, "big")).verify_key)


class KeyCheckTests(ServiceTestCase):
    def test_isPublicKey(self) -> None:
        self.assertTrue(isPublicKey(PK))
        self.assertFalse(isPublicKey(PK[:31]))
        self.assertFalse(isPublicKey(PK + b"\x00"))
        self.assertFalse(isPublicKey(bytes(32)))  # small order, no one's key

    def test_notAKeyIsNotKept(self) -> None:
        """A 60 KB "public key", a short one or a bogus point: ignored, nothing stored."""
        for pk in (b"k" * 60_000, PK[:16], bytes(32)):
            self.assertIsNone(self.registerPk(pk=pk))
        self.assertEqual((self.service.peers, self.store.records), ({}, {}))
        self.assertEqual(self.service.stats.counters["register_pk_bad_key"], 3)

    def test_overlongIdAndUuid(self) -> None:
        self.assertEqual(self.registerPk("9" * (MAX_ID_LENGTH + 1)), R.INVALID_ID_FORMAT)
        self.assertIsNone(self.registerPk(uuid=b"u" * 1000))
        self.assertEqual(self.service.peers, {})


class BoundsTests(ServiceTestCase):
    def test_countBound(self) -> None:
        service = self.service = self.make(maxPeers=3)
        service.registerUDP(4, self.udp)
        for i in range(3):
            self.assertEqual(self.registerPk(f"peer{i:05d}", pk=key(i + 1)), R.OK)
        self.assertEqual(self.registerPk("peer99999", pk=key(9)), R.SERVER_ERROR)
        self.assertEqual(service.stats.counters["peers_table_full"], 1)
        # Online peers are never pruned; once out of contact they make room.
        self.clock.advance(REG := 30)
        self.assertEqual(self.registerPk("peer99999", pk=key(9)), R.SERVER_ERROR)
        self.clock.advance(PRUNE_AFTER - REG)
        self.assertEqual(self.registerPk("peer99999", pk=key(9)), R.OK)
        self.assertEqual(len(service.peers), 1)
        self.assertIn("peer00000", self.store.records)  # pruned from memory only

    def test_byteBound(self) -> None:
        registry = self.service.registry
        registry.maxBytes = 3 * 500
        for i in range(3):
            self.assertEqual(self.registerPk(f"peer{i:05d}", pk=key(i + 1)), R.OK)
        self.assertEqual(self.registerPk("peer99999", pk=key(9)), R.SERVER_ERROR)
        self.assertLessEqual(registry.bytes, registry.maxBytes)
        self.assertEqual(registry.bytes, sum(p.size() for p in registry.peers.values()))

    def test_bytesFollowKeyChanges(self) -> None:
        registry = self.service.registry
        self.registerPk(uuid=b"u")
        self.clock.advance(7)
        self.registerPk(uuid=b"u", pk=PK2)
        self.assertEqual(registry.bytes, sum(p.size() for p in registry.peers.values()))

    def test_lookupsFillNoFullTable(self) -> None:
        """Stored peers looked up by punch requests are not kept when the table is full."""
        service = self.service = self.make(maxPeers=2)
        service.registerUDP(4, self.udp)
        from p2pnet.store.peers import PeerRecord

        for i in range(10):
            self.store.records[f"stored{i:03d}"] = PeerRecord(f"stored{i:03d}", b"u", PK, "x")
        link = FakeLink()
        for i in range(10):
            service.streamMessage(msg(punch_hole_request=PunchHoleRequest(
                id=f"stored{i:03d}", licence_key=PUBLIC)), link)
        self.assertEqual([m.punch_hole_response.failure for m in link.sent], [F.OFFLINE] * 10)
        self.assertEqual(len(service.peers), 2)


class PruneTests(ServiceTestCase):
    def test_pruneKeepsOnlineAndLinked(self) -> None:
        registry = self.service.registry
        self.registerPk("udppeer01", pk=key(1))
        link = FakeLink()
        self.service.streamMessage(msg(register_pk=self.pkMessage("tcppeer01", key(2))), link)
        self.registerPk("gonepeer1", pk=key(3))
        self.clock.advance(PRUNE_AFTER)
        self.registerPeer("udppeer01")
        self.assertEqual(registry.prune(), 1)
        self.assertEqual(sorted(self.service.peers), ["tcppeer01", "udppeer01"])
        self.assertEqual(self.service.stats.snapshot()["peers_in_memory"], 2)

    def test_prunedPeerComesBack(self) -> None:
        self.registerPk()
        self.clock.advance(PRUNE_AFTER)
        self.service.registry.prune()
        self.assertEqual(self.service.peers, {})
        [reply] = self.registerPeer()
        self.assertTrue(reply.register_peer_response.request_pk)
        self.assertEqual(self.registerPk(), R.OK)  # same uuid and key, from the store
        [reply] = self.registerPeer()
        self.assertFalse(reply.register_peer_response.request_pk)

    def test_sweepRunsWhileStarted(self) -> None:
        self.registerPk()
        self.patch(self.service, "listen", lambda: None)  # no sockets here
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.clock.advance(PRUNE_AFTER + 60)
        self.assertEqual(self.service.peers, {})

    def pkMessage(self, peerId: str, pk: bytes):  # type: ignore[no-untyped-def]
        from p2pnet.codecs.proto.rendezvous_pb2 import RegisterPk

        return RegisterPk(id=peerId, uuid=b"uuid-" + peerId.encode(), pk=pk)


class ListingTests(ServiceTestCase):
    def test_onlinePeers(self) -> None:
        self.registerPk("bbbbbb", pk=key(1), addr=("192.0.2.2", 2))
        self.registerPk("aaaaaa", pk=key(2), addr=("192.0.2.1", 1))
        link = FakeLink("198.51.100.7", 7000, ws=True)
        from p2pnet.codecs.proto.rendezvous_pb2 import RegisterPk

        self.service.streamMessage(msg(register_pk=RegisterPk(id="cccccc", uuid=b"u",
                                                              pk=key(3))), link)
        self.registerPk("dddddd", pk=key(4))
        self.clock.advance(10)
        self.registerPeer("dddddd", addr=("203.0.113.5", 5001))
        self.clock.advance(25)
        self.assertEqual(self.service.onlinePeers(), [
            PeerInfo("cccccc", ("198.51.100.7", 7000), 0.0, "ws"),
            PeerInfo("dddddd", ("203.0.113.5", 5001), 25.0, "udp"),
        ])
        self.assertEqual([p.id for p in self.service.onlinePeers(1, 5)], ["dddddd"])
        self.assertEqual(self.service.onlinePeers(0, 0), [])


class LogTests(ServiceTestCase):
    def test_registrationLinesAggregated(self) -> None:
        """10,000 registrations from rotating addresses write a bounded number of lines."""
        lines: list[dict[str, object]] = []
        globalLogPublisher.addObserver(lines.append)
        self.addCleanup(globalLogPublisher.removeObserver, lines.append)
        for i in range(2000):
            self.registerPk(f"{1_000_000_000 + i}", uuid=b"u%d" % i,
                            addr=(f"10.{i // 250}.{i % 250}.1", 1))
        self.assertEqual(len(self.store.records), 2000)
        self.assertLessEqual(len(lines), 25)
