"""Tests for L{p2pnet.codecs.proto}: rustdesk.md §9.2 wire vectors and generated-code drift."""

import os
import tempfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from p2pnet.codecs.proto import generate, message_pb2, rendezvous_pb2
from p2pnet.codecs.proto.rendezvous_pb2 import (
    OnlineRequest,
    OnlineResponse,
    PunchHoleResponse,
    RegisterPeer,
    RegisterPeerResponse,
    RegisterPk,
    RegisterPkResponse,
    RendezvousMessage,
    RequestRelay,
    TestNatRequest,
    TestNatResponse,
)

M = RendezvousMessage
F = PunchHoleResponse


class VectorTests(SynchronousTestCase):
    """Every encoding of rustdesk.md §9.2."""

    def test_vectors(self) -> None:
        vectors = [
            (M(register_peer=RegisterPeer(id="123456789")), "320b0a09313233343536373839"),
            (M(register_peer=RegisterPeer(id="123456789", serial=1)),
             "320d0a093132333435363738391001"),
            (M(register_peer_response=RegisterPeerResponse(request_pk=True)), "3a021001"),
            (M(register_pk_response=RegisterPkResponse()), "820100"),
            (M(register_pk_response=RegisterPkResponse(
                result=RegisterPkResponse.UUID_MISMATCH)), "8201020802"),
            (M(register_pk_response=RegisterPkResponse(
                result=RegisterPkResponse.TOO_FREQUENT)), "8201020804"),
            (M(punch_hole_response=F(failure=F.ID_NOT_EXIST)), "5a00"),
            (M(punch_hole_response=F(failure=F.OFFLINE)), "5a021802"),
            (M(punch_hole_response=F(failure=F.LICENSE_MISMATCH)), "5a021803"),
            (M(test_nat_request=TestNatRequest()), "a20100"),
            (M(test_nat_response=TestNatResponse(port=54321)), "aa010408b1a803"),
            (M(online_request=OnlineRequest(id="123456789",
                                            peers=["111111111", "222222222"])),
             "ba01210a0931323334353637383912093131313131313131311209323232323232323232"),
            (M(online_response=OnlineResponse(states=b"\x80")), "c201030a0180"),
            (M(request_relay=RequestRelay(uuid="u", licence_key="k")), "92010612017532016b"),
            (M(register_pk=RegisterPk(id="123456789", uuid=bytes(range(16)), pk=bytes(32))),
             "7a3f0a09313233343536373839" "1210" + bytes(range(16)).hex() + "1a20" + "00" * 32),
        ]
        for message, hexed in vectors:
            self.assertEqual(message.SerializeToString().hex(), hexed, message)
            self.assertEqual(M.FromString(bytes.fromhex(hexed)), message)

    def test_unknownFieldsIgnored(self) -> None:
        """An unknown oneof number (field 99) parses to an empty envelope."""
        message = M.FromString(bytes.fromhex("9a0600") + bytes.fromhex("320b0a09313233343536373839"))
        self.assertEqual(message.register_peer.id, "123456789")

    def test_newerFields(self) -> None:
        """Fields newer than One-KVM's revision are present (rustdesk.md §1.5)."""
        self.assertEqual(RendezvousMessage.DESCRIPTOR.fields_by_name["http_proxy_response"]
                         .number, 28)
        self.assertEqual(rendezvous_pb2.PunchHole.DESCRIPTOR.fields_by_name[
            "controlled_context"].number, 9)
        self.assertEqual(RegisterPkResponse.NOT_DEPLOYED, 8)
        self.assertEqual(message_pb2.IdPk.DESCRIPTOR.full_name, "hbb.IdPk")


class DriftTests(SynchronousTestCase):
    """The committed C{*_pb2.py} describe exactly the committed C{.proto} files."""

    def test_noDrift(self) -> None:
        """Regenerate into a temporary directory; the embedded descriptors must match.

        Only the serialized descriptor is compared, so a different protoc release (which
        changes the version header) is not drift, but any change to a message is.
        """
        try:
            import grpc_tools  # type: ignore[import-untyped]  # noqa: F401
        except ImportError:
            raise SkipTest("grpcio-tools (the protoc generator) is not installed") from None

        def descriptorLine(path: str) -> str:
            with open(path) as f:
                lines = [line for line in f if "AddSerializedFile(" in line]
            self.assertEqual(len(lines), 1, path)
            return lines[0]

        with tempfile.TemporaryDirectory() as tmp:
            generate.generate(tmp)
            for name in generate.PROTOS:
                module = name.replace(".proto", "_pb2.py")
                self.assertEqual(
                    descriptorLine(os.path.join(tmp, module)),
                    descriptorLine(os.path.join(generate.HERE, module)),
                    f"{name} changed: run python -m p2pnet.codecs.proto.generate",
                )

    def test_generateWritesModules(self) -> None:
        try:
            import grpc_tools  # type: ignore[import-untyped]  # noqa: F401
        except ImportError:
            raise SkipTest("grpcio-tools (the protoc generator) is not installed") from None
        with tempfile.TemporaryDirectory() as tmp:
            generate.generate(tmp)
            self.assertEqual(sorted(os.listdir(tmp)), ["message_pb2.py", "rendezvous_pb2.py"])
