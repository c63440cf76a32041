"""Tests for L{p2pnet.services.auth}: long-term credentials, failed-authentication log
and slow-down (issue 14 items 6 and 16)."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.stun import Attr, Message, Method, StunClass, decodeErrorCode, longTermKey
from p2pnet.services.auth import FailureLimits, LongTermAuth, StaticUsers

REALM = "example.org"
USERS = {"alice": "secret", "carol": "carols-pass", "dave": "daves-pass"}


class FailureTests(SynchronousTestCase):
    """Failed authentications are logged without secrets and slowed per source, per user
    and per (source, user) pair, without locking out a trusted pair."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.auth = LongTermAuth(REALM, StaticUsers(USERS), self.clock,
                                 limits=FailureLimits(perSource=(1.0, 5.0),
                                                      perUser=(1.0, 5.0),
                                                      perPair=(1.0, 3.0)))

    def attempt(self, user: str, password: str, client: str = "198.51.100.7",
                realm: str = REALM) -> int:
        """Send one signed Binding request; 0 when accepted, else the error code."""
        request = Message(Method.BINDING, StunClass.REQUEST, attributes=[
            (Attr.USERNAME, user.encode()), (Attr.REALM, realm.encode()),
            (Attr.NONCE, self.auth.makeNonce(client))])
        from p2pnet.codecs.stun import decode

        signed = decode(request.encode(longTermKey(user, realm, password)))
        result = self.auth.check(signed, client)
        if result.error is None:
            self.assertEqual(result.username, user)
            return 0
        return decodeErrorCode(result.error.get(Attr.ERROR_CODE))[0]

    def test_failureLogged(self) -> None:
        """A wrong password, an unknown user and a wrong realm each log one line with
        user, realm, reason and source, and never the password."""
        with capturedLogs() as events:
            self.assertEqual(self.attempt("alice", "guess-1"), 401)
            self.assertEqual(self.attempt("mallory", "guess-2"), 401)
            self.assertEqual(self.attempt("alice", "secret", realm="other"), 401)
        lines = [e["log_format"].format(**e) for e in events
                 if e.get("category") == "auth-failed"]
        self.assertEqual(len(lines), 3)
        self.assertIn("user='alice' realm='example.org' reason=wrong password "
                      "source=198.51.100.7", lines[0])
        self.assertIn("user='mallory'", lines[1])
        self.assertIn("reason=unknown user", lines[1])
        self.assertIn("realm='other' reason=wrong realm", lines[2])
        text = " ".join(lines)
        for secret in ("guess-1", "guess-2", "secret"):
            self.assertNotIn(f"={secret}", text)
            self.assertNotIn(f"'{secret}'", text)
        self.assertEqual(self.auth.failures, 3)

    def test_logBounded(self) -> None:
        """A flood of failures writes a bounded number of lines."""
        with capturedLogs() as events:
            for i in range(500):
                self.attempt("alice", f"guess-{i}", client=f"10.0.{i // 250}.{i % 250}")
        self.assertLessEqual(len([e for e in events if e.get("category") == "auth-failed"]),
                             20)

    def test_guessingFromOneSourceSlowed(self) -> None:
        """Past the per-source burst, even the right password gets 401 unchecked, until
        the budget refills."""
        for i in range(5):
            self.assertEqual(self.attempt("dave", f"guess-{i}"), 401)
        self.assertEqual(self.attempt("dave", "daves-pass"), 401)
        self.assertEqual(self.attempt("alice", "secret"), 401)  # same source: slowed too
        self.assertGreaterEqual(self.auth.throttled, 2)
        self.assertEqual(self.attempt("alice", "secret", client="198.51.100.8"), 0)
        self.clock.advance(1.5)
        self.assertEqual(self.attempt("dave", "daves-pass"), 0)

    def test_guessingOneUserFromManySources(self) -> None:
        """Rotating source addresses does not lift the per-user budget."""
        for i in range(5):
            self.assertEqual(self.attempt("dave", "guess", client=f"203.0.113.{i}"), 401)
        self.assertEqual(self.attempt("dave", "daves-pass", client="203.0.113.99"), 401)
        self.assertEqual(self.attempt("alice", "secret", client="203.0.113.99"), 0)

    def test_ipv6SourcesBySlash64(self) -> None:
        """Addresses of one IPv6 /64 share a budget."""
        for i in range(5):
            self.attempt(f"nobody{i}", "guess", client=f"2001:db8::{i + 1}")
        self.assertEqual(self.attempt("alice", "secret", client="2001:db8::ff"), 401)
        self.assertEqual(self.attempt("alice", "secret", client="2001:db8:1::1"), 0)

    def test_honestCrowdBehindOneNat(self) -> None:
        """Users who authenticated from a NAT's address keep working while a guesser
        behind the same address spends its failure budgets."""
        nat = "192.0.2.33"
        self.assertEqual(self.attempt("carol", "carols-pass", client=nat), 0)
        self.assertEqual(self.attempt("alice", "secret", client=nat), 0)
        for i in range(20):
            self.attempt("dave", f"guess-{i}", client=nat)
            self.attempt(f"user{i}", "guess", client=nat)
        self.assertEqual(self.attempt("carol", "carols-pass", client=nat), 0)
        self.assertEqual(self.attempt("alice", "secret", client=nat), 0)
        self.assertEqual(self.attempt("dave", "daves-pass", client=nat), 401)

    def test_trustedPairHasItsOwnBudget(self) -> None:
        """A guesser behind a trusted pair's address guessing that same user is slowed
        by the pair budget."""
        self.assertEqual(self.attempt("alice", "secret"), 0)
        for i in range(3):
            self.assertEqual(self.attempt("alice", f"guess-{i}"), 401)
        self.assertEqual(self.attempt("alice", "secret"), 401)
        self.clock.advance(1.5)
        self.assertEqual(self.attempt("alice", "secret"), 0)

    def test_trustExpires(self) -> None:
        """A pair is trusted for C{trusted} seconds after its last success."""
        self.assertEqual(self.attempt("alice", "secret"), 0)
        self.clock.advance(3601)
        for i in range(5):
            self.attempt("dave", f"guess-{i}")
        self.assertEqual(self.attempt("alice", "secret"), 401)

    def test_challengeIsSmall(self) -> None:
        """The 401 challenge carries ERROR-CODE, REALM, NONCE and PASSWORD-ALGORITHMS
        and nothing else (RFC 8489 §9.2.4): no SOFTWARE."""
        auth = LongTermAuth(REALM, StaticUsers(USERS), self.clock, software="p2pnet 1.0")
        reply = auth.challenge(Message(Method.ALLOCATE, StunClass.REQUEST), "192.0.2.1")
        self.assertEqual([t for t, _ in reply.attributes],
                         [Attr.ERROR_CODE, Attr.REALM, Attr.NONCE, Attr.PASSWORD_ALGORITHMS])


class VerifyTests(SynchronousTestCase):
    """L{LongTermAuth.verify}: a side-effect-free check (used to trust a connection)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.auth = LongTermAuth(REALM, StaticUsers(USERS), self.clock)

    def signed(self, user: str, password: str, client: str = "192.0.2.1") -> Message:
        from p2pnet.codecs.stun import decode

        request = Message(Method.ALLOCATE, StunClass.REQUEST, attributes=[
            (Attr.USERNAME, user.encode()), (Attr.REALM, REALM.encode()),
            (Attr.NONCE, self.auth.makeNonce(client))])
        return decode(request.encode(longTermKey(user, REALM, password)))

    def test_verify(self) -> None:
        """True for valid credentials; false for a wrong password, an unknown user, a
        nonce made for another address; nothing counted or logged."""
        with capturedLogs() as events:
            self.assertTrue(self.auth.verify(self.signed("alice", "secret"), "192.0.2.1"))
            self.assertFalse(self.auth.verify(self.signed("alice", "guess"), "192.0.2.1"))
            self.assertFalse(self.auth.verify(self.signed("zed", "secret"), "192.0.2.1"))
            self.assertFalse(self.auth.verify(self.signed("alice", "secret"), "192.0.2.2"))
        self.assertEqual(self.auth.failures, 0)
        self.assertEqual([e for e in events if e.get("category") == "auth-failed"], [])
