"""The registration rules of rustdesk.md §6.1 (L{p2pnet.codecs.rustdesk_register})."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from p2pnet.codecs import addrmangle
from p2pnet.codecs.proto.rendezvous_pb2 import (
    ConfigUpdate,
    FetchLocalAddr,
    PunchHole,
    RegisterPeerResponse,
    RegisterPkResponse,
    RendezvousMessage,
    RequestRelay,
)
from p2pnet.codecs.rustdesk_register import (
    NOT_DEPLOYED_BACKOFF,
    DuplicateFilter,
    RegistrationState,
    newRandomId,
)

Result = RegisterPkResponse.Result


def pkReply(result: int = Result.OK, keepAlive: int = 0) -> RendezvousMessage:
    return RendezvousMessage(register_pk_response=RegisterPkResponse(
        result=result, keep_alive=keepAlive))


def peerReply(requestPk: bool = False) -> RendezvousMessage:
    return RendezvousMessage(register_peer_response=RegisterPeerResponse(
        request_pk=requestPk))


def kind(message: RendezvousMessage | None) -> str | None:
    return None if message is None else message.WhichOneof("union")


class RegistrationStateTests(TestCase):
    def setUp(self) -> None:
        self.state = RegistrationState("123456789", b"u" * 16, b"k" * 32,
                                       newId=lambda: "1000000001")

    def test_firstRegistrationIsRegisterPk(self) -> None:
        message = self.state.due(0)
        self.assertEqual(kind(message), "register_pk")
        assert message is not None
        self.assertEqual(message.register_pk.id, "123456789")
        self.assertEqual(message.register_pk.uuid, b"u" * 16)
        self.assertEqual(message.register_pk.pk, b"k" * 32)

    def test_steadyRegisterPeerEvery15Seconds(self) -> None:
        """After OK, RegisterPeer once the last reply is 15 s old, nothing before."""
        self.state.due(0)
        outcome = self.state.received(pkReply(), 0.1)
        self.assertTrue(outcome.confirmed)
        for t in range(1, 15):
            self.assertIsNone(self.state.due(t + 0.05), t)
        message = self.state.due(15.1)
        self.assertEqual(kind(message), "register_peer")
        self.state.received(peerReply(), 15.2)
        self.assertIsNone(self.state.due(16.1))
        self.assertTrue(self.state.registered)

    def test_timeoutResendsAfter3Seconds(self) -> None:
        self.state.due(0)
        self.assertIsNone(self.state.due(1))
        self.assertIsNone(self.state.due(2))
        self.assertEqual(kind(self.state.due(3)), "register_pk")
        self.assertEqual(self.state.timeouts, 1)

    def test_rebindAfterFourTimeoutsAtMostOncePerMinute(self) -> None:
        t = 0.0
        self.state.due(t)
        for _ in range(4):
            t += 3
            self.state.due(t)
        self.assertEqual(self.state.timeouts, 4)
        self.assertTrue(self.state.shouldRebind(t))
        self.assertFalse(self.state.shouldRebind(t + 59))
        self.assertTrue(self.state.shouldRebind(t + 60))

    def test_replyResetsTimeouts(self) -> None:
        self.state.due(0)
        self.state.due(3)
        self.state.received(pkReply(), 3.5)
        self.assertEqual(self.state.timeouts, 0)
        self.assertFalse(self.state.shouldRebind(4))

    def test_requestPkSendsRegisterPkAtOnce(self) -> None:
        self.state.due(0)
        self.state.received(pkReply(), 0.1)
        self.state.due(15)
        outcome = self.state.received(peerReply(requestPk=True), 15.1)
        self.assertEqual([kind(m) for m in outcome.send], ["register_pk"])
        self.assertFalse(self.state.keyConfirmed)

    def test_uuidMismatchTakesNewId(self) -> None:
        """rustdesk.md §6.1 step 4: a new id and RegisterPk with it (not One-KVM's loop)."""
        self.state.due(0)
        outcome = self.state.received(pkReply(Result.UUID_MISMATCH), 0.1)
        self.assertEqual(outcome.newId, "1000000001")
        self.assertEqual(self.state.peerId, "1000000001")
        self.assertEqual([m.register_pk.id for m in outcome.send], ["1000000001"])

    def test_notDeployedBacksOff30Seconds(self) -> None:
        self.state.due(0)
        outcome = self.state.received(pkReply(Result.NOT_DEPLOYED), 0.1)
        self.assertEqual(outcome.failure, "NOT_DEPLOYED")
        self.assertIsNone(self.state.due(NOT_DEPLOYED_BACKOFF))
        self.assertEqual(kind(self.state.due(NOT_DEPLOYED_BACKOFF + 0.1)), "register_pk")

    def test_otherFailuresReported(self) -> None:
        self.state.due(0)
        self.assertEqual(self.state.received(pkReply(Result.TOO_FREQUENT), 1).failure,
                         "TOO_FREQUENT")

    def test_keepAlive(self) -> None:
        self.assertEqual(self.state.received(pkReply(keepAlive=20), 0).keepAlive, 20)

    def test_configUpdate(self) -> None:
        """The serial is kept and sent with RegisterPeer; a changed list is reported."""
        update = RendezvousMessage(configure_update=ConfigUpdate(
            serial=3, rendezvous_servers=["a:21116", "b:21116"]))
        self.assertEqual(self.state.received(update, 0).servers, ("a:21116", "b:21116"))
        self.assertIsNone(self.state.received(update, 1).servers)
        self.state.keyConfirmed = True
        message = self.state.due(2)
        assert message is not None
        self.assertEqual(message.register_peer.serial, 3)

    def test_requestsPassedOn(self) -> None:
        for message in (RendezvousMessage(punch_hole=PunchHole()),
                        RendezvousMessage(fetch_local_addr=FetchLocalAddr()),
                        RendezvousMessage(request_relay=RequestRelay())):
            self.assertIs(self.state.received(message, 0).request, message)

    def test_reset(self) -> None:
        self.state.due(0)
        self.state.received(pkReply(), 0.1)
        self.state.reset()
        self.assertEqual(kind(self.state.due(1)), "register_pk")

    def test_newRandomIdIsTenDigits(self) -> None:
        for _ in range(20):
            value = newRandomId()
            self.assertEqual(len(value), 10)
            self.assertTrue(1_000_000_000 <= int(value) <= 1_999_999_999)


class DuplicateFilterTests(TestCase):
    def punch(self, port: int) -> RendezvousMessage:
        return RendezvousMessage(punch_hole=PunchHole(
            socket_addr=addrmangle.encode("198.51.100.1", port, 7)))

    def test_sameAddressWithin100msDropped(self) -> None:
        f = DuplicateFilter()
        self.assertTrue(f.fresh(self.punch(1000), 10.0))
        self.assertFalse(f.fresh(self.punch(1000), 10.05))
        self.assertTrue(f.fresh(self.punch(1000), 10.2))
        self.assertTrue(f.fresh(self.punch(1001), 10.21))

    def test_relayHasItsOwnRecord(self) -> None:
        f = DuplicateFilter()
        addr = addrmangle.encode("198.51.100.1", 5, 7)
        self.assertTrue(f.fresh(self.punch(5), 1.0))
        self.assertTrue(f.fresh(RendezvousMessage(request_relay=RequestRelay(
            socket_addr=addr)), 1.01))
        self.assertFalse(f.fresh(RendezvousMessage(fetch_local_addr=FetchLocalAddr(
            socket_addr=addr)), 1.02))
