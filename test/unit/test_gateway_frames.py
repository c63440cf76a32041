"""Tests for L{p2pnet.codecs.gateway_frames}."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.gateway_frames import (
    Cancel,
    Event,
    FrameError,
    Request,
    Response,
    decodeFrame,
    encodeFrame,
    errorShape,
    negotiateProtocol,
    parseConnectParams,
    truncateReason,
)


def connectParams(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "minProtocol": 3,
        "maxProtocol": 4,
        "client": {"id": "cli", "version": "1.0", "platform": "linux", "mode": "cli"},
    }
    params.update(overrides)
    return params


class DecodeFrameTests(SynchronousTestCase):
    def test_roundTrips(self) -> None:
        for frame in [
            Request("1", "health"),
            Request("2", "node.invoke", {"a": [1, 2]}),
            Response("1", True, {"x": 1}),
            Response("1", False, None, errorShape("INVALID_REQUEST", "no", {"code": "X"})),
            Event("tick", {"ts": 5}, 3, {"presence": 1, "health": 2}),
            Event("connect.challenge", {"nonce": "n", "ts": 1}),
            Cancel("9"),
        ]:
            self.assertEqual(decodeFrame(encodeFrame(frame)), frame)

    def test_optionalFieldsLeftOut(self) -> None:
        self.assertEqual(json.loads(encodeFrame(Request("1", "health"))), {
            "type": "req", "id": "1", "method": "health"})

    def test_badJson(self) -> None:
        e = self.assertRaises(FrameError, decodeFrame, "{nope")
        self.assertTrue(e.badJson)

    def test_notAnObject(self) -> None:
        e = self.assertRaises(FrameError, decodeFrame, "[1]")
        self.assertFalse(e.badJson)

    def test_unknownProperty(self) -> None:
        e = self.assertRaises(
            FrameError, decodeFrame, '{"type":"req","id":"7","method":"m","x":1}'
        )
        self.assertIn("unexpected property", str(e))
        self.assertEqual(e.frameId, "7")

    def test_emptyMethod(self) -> None:
        self.assertRaises(FrameError, decodeFrame, '{"type":"req","id":"1","method":""}')

    def test_unknownType(self) -> None:
        self.assertRaises(FrameError, decodeFrame, '{"type":"hello","id":"1"}')

    def test_badSeq(self) -> None:
        self.assertRaises(FrameError, decodeFrame, '{"type":"event","event":"e","seq":-1}')
        self.assertRaises(FrameError, decodeFrame, '{"type":"event","event":"e","seq":true}')

    def test_badErrorShape(self) -> None:
        self.assertRaises(
            FrameError, decodeFrame, '{"type":"res","id":"1","ok":false,"error":{"code":""}}'
        )

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200))
    def test_garbageRaisesFrameError(self, data: bytes) -> None:
        try:
            decodeFrame(data)
        except FrameError:
            pass

    @settings(max_examples=200, deadline=None)
    @given(st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["type", "id", "method", "ok", "event", "seq",
                                           "error", "payload", "stateVersion", "x"]),
                          inner, max_size=5),
        max_leaves=10,
    ))
    def test_randomJsonRaisesFrameErrorOnly(self, value: Any) -> None:
        try:
            decodeFrame(json.dumps(value))
        except FrameError:
            pass


class ConnectParamsTests(SynchronousTestCase):
    def test_minimal(self) -> None:
        p = parseConnectParams(connectParams())
        self.assertEqual((p.minProtocol, p.maxProtocol, p.client.id), (3, 4, "cli"))
        self.assertIsNone(p.scopes)
        self.assertIsNone(p.device)
        self.assertEqual(p.auth, {})

    def test_full(self) -> None:
        p = parseConnectParams(connectParams(
            role="node", scopes=["a"], caps=["system"], commands=["system.run"],
            permissions={"x": True}, auth={"token": "t"},
            device={"id": "d", "publicKey": "k", "signature": "s", "signedAt": 1,
                    "nonce": "n"},
        ))
        self.assertEqual(p.scopes, ("a",))
        self.assertEqual(p.device.nonce, "n")
        self.assertEqual(p.auth, {"token": "t"})

    def test_requiredFields(self) -> None:
        e = self.assertRaises(FrameError, parseConnectParams, {"client": {}})
        self.assertIn("must have required property 'minProtocol'", str(e))
        self.assertIn("at /client: must have required property 'version'", str(e))

    def test_clientIdEnum(self) -> None:
        params = connectParams()
        params["client"]["id"] = "ios-node"
        e = self.assertRaises(FrameError, parseConnectParams, params)
        self.assertIn("/client/id", str(e))

    def test_modeEnum(self) -> None:
        params = connectParams()
        params["client"]["mode"] = "operator"
        self.assertRaises(FrameError, parseConnectParams, params)

    def test_emptyVersion(self) -> None:
        params = connectParams()
        params["client"]["version"] = ""
        self.assertRaises(FrameError, parseConnectParams, params)

    def test_passwordAtRoot(self) -> None:
        e = self.assertRaises(FrameError, parseConnectParams, connectParams(password="x"))
        self.assertIn("unexpected property 'password'", str(e))

    def test_deviceWithoutNonce(self) -> None:
        e = self.assertRaises(FrameError, parseConnectParams, connectParams(
            device={"id": "d", "publicKey": "k", "signature": "s", "signedAt": 1}))
        self.assertIn("'nonce'", str(e))

    def test_negativeSignedAt(self) -> None:
        self.assertRaises(FrameError, parseConnectParams, connectParams(
            device={"id": "d", "publicKey": "k", "signature": "s", "signedAt": -1,
                    "nonce": "n"}))

    def test_protocolNotInteger(self) -> None:
        self.assertRaises(FrameError, parseConnectParams, connectParams(minProtocol="3"))
        self.assertRaises(FrameError, parseConnectParams, connectParams(maxProtocol=0))

    def test_notObject(self) -> None:
        self.assertRaises(FrameError, parseConnectParams, None)

    def test_scopesStrings(self) -> None:
        self.assertRaises(FrameError, parseConnectParams, connectParams(scopes=[1]))


class NegotiateTests(SynchronousTestCase):
    def test_ranges(self) -> None:
        self.assertEqual(negotiateProtocol(3, 3), 3)
        self.assertEqual(negotiateProtocol(4, 4), 4)
        self.assertEqual(negotiateProtocol(3, 4), 4)
        self.assertEqual(negotiateProtocol(1, 9), 4)
        self.assertIsNone(negotiateProtocol(5, 6))
        self.assertIsNone(negotiateProtocol(1, 2))


class TruncateTests(SynchronousTestCase):
    def test_truncate(self) -> None:
        self.assertEqual(truncateReason("abc"), "abc")
        self.assertEqual(len(truncateReason("x" * 200).encode()), 120)
        cut = truncateReason("é" * 100)
        self.assertEqual(cut, "é" * 60)
