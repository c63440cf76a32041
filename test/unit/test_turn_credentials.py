"""Tests for L{p2pnet.services.turn_credentials}: REST credentials and chaining."""

from __future__ import annotations

import base64
import hashlib
import hmac

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.stun import Attr, Message, Method, StunClass, decode, longTermKey, userhash
from p2pnet.services.auth import LongTermAuth, StaticUsers
from p2pnet.services.turn_credentials import ChainedCredentials, RestCredentials, restPassword


class RestCredentialsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.rest = RestCredentials("north", self.clock)

    def test_password(self) -> None:
        """base64(HMAC-SHA1(secret, username)), the coturn/WebRTC convention, is the
        password the keys are made from."""
        name = "1700000100:alice"
        expected = base64.b64encode(hmac.new(b"north", name.encode(), hashlib.sha1).digest())
        self.assertEqual(restPassword("north", name), expected.decode())
        for algorithm in (1, 2):
            self.assertEqual(self.rest.key(name, "r", algorithm),
                             longTermKey(name, "r", expected.decode(), algorithm))
        self.assertEqual(self.rest.key("1700000100", "r", 1),
                         longTermKey("1700000100", "r", restPassword("north", "1700000100")))

    def test_expired(self) -> None:
        """A username whose time has come, or with no time, has no key."""
        self.assertIsNone(self.rest.key("1700000000:alice", "r", 1))
        self.assertIsNone(self.rest.key("alice", "r", 1))
        self.assertIsNone(self.rest.key(":alice", "r", 1))
        self.assertIsNone(self.rest.userFromHash(userhash("1700000100", "r"), "r"))

    def test_throughAuth(self) -> None:
        """A request signed with the REST password authenticates; after expiry it gets
        401."""
        auth = LongTermAuth("realm", ChainedCredentials([self.rest]), self.clock)
        name = "1700000100:alice"

        def signed() -> Message:
            request = Message(Method.ALLOCATE, StunClass.REQUEST)
            request.add(Attr.USERNAME, name.encode())
            request.add(Attr.REALM, b"realm")
            request.add(Attr.NONCE, auth.makeNonce("192.0.2.1"))
            return decode(request.encode(longTermKey(name, "realm",
                                                     restPassword("north", name))))

        self.assertEqual(auth.check(signed(), "192.0.2.1").username, name)
        self.clock.advance(100)
        self.assertEqual(auth.check(signed(), "192.0.2.1").error.get(Attr.ERROR_CODE)[3], 1)


class ChainedCredentialsTests(SynchronousTestCase):
    def test_order(self) -> None:
        """The first source that knows a user answers."""
        chain = ChainedCredentials([StaticUsers({"a": "1"}), StaticUsers({"a": "2", "b": "3"})])
        self.assertEqual([chain.key(name, "r", 1) for name in "abc"],
                         [longTermKey("a", "r", "1"), longTermKey("b", "r", "3"), None])
        self.assertEqual(chain.userFromHash(userhash("b", "r"), "r"), "b")
        self.assertIsNone(chain.userFromHash(userhash("c", "r"), "r"))
