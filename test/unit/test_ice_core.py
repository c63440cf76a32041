"""Tests for L{p2pnet.ice.core}: two sans-IO agents on an in-memory network with explicit
time: pacing, nomination, role conflicts, peer-reflexive candidates, consent, restarts,
lite against full, trickle and failure."""

from __future__ import annotations

import ast
import os
import random

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.ice_candidate import parseCandidate
from p2pnet.codecs.stun import Attr, Message, Method, StunClass, decode, decodeErrorCode
from p2pnet.ice.checklist import PairState
from p2pnet.ice.core import IceCore, IceState, Restarted, StateChanged
from p2pnet.ice.roles import Conflict, resolveConflict
from p2pnet.ice.stunchecks import buildCheck, readRequest
from test.unit.ice_helpers import Network, exchange, pair
from test.unit.test_codecs_stun import SAMPLE_REQUEST, SHORT_TERM_PASSWORD


def _messages(net: Network, sender: str) -> list[Message]:
    return [decode(t.data) for name, t in net.sent if name == sender]


def _checks(net: Network, sender: str) -> list[Message]:
    return [m for m in _messages(net, sender)
            if m.cls == StunClass.REQUEST and m.method == Method.BINDING]


class ConnectTests(SynchronousTestCase):
    """Two full agents find the pair and agree on it."""

    def test_hostToHost(self) -> None:
        """Controlling and controlled select the same pair; events say so."""
        a, b = pair()
        net = Network(("a", a), ("b", b))
        exchange(a, b)
        net.run(5.0, stop=lambda: a.selected is not None and b.selected is not None)
        self.assertEqual(a.selected.key, (("192.0.2.1", 5000), ("192.0.2.2", 6000)))
        self.assertEqual(b.selected.key, (("192.0.2.2", 6000), ("192.0.2.1", 5000)))
        self.assertEqual((a.state, b.state), (IceState.CONNECTED, IceState.CONNECTED))
        self.assertEqual(len(net.selected("a")), 1)
        self.assertIn(StateChanged(IceState.CONNECTED), net.events["b"])
        self.assertLess(net.now, 0.5)

    def test_checkAttributes(self) -> None:
        """RFC 8445 §7.2.2: USERNAME remote:local, PRIORITY of a peer-reflexive
        candidate, the role with the tie-breaker, MESSAGE-INTEGRITY with the remote
        password, FINGERPRINT; USE-CANDIDATE only on the nominating check."""
        a, b = pair()
        net = Network(("a", a), ("b", b))
        exchange(a, b)
        net.run(5.0, stop=lambda: b.selected is not None)
        checks = _checks(net, "a")
        first = checks[0]
        self.assertEqual(first.get(Attr.USERNAME), f"{b.ufrag}:{a.ufrag}".encode())
        self.assertEqual(first.get(Attr.PRIORITY), (1862270975).to_bytes(4, "big"))
        self.assertEqual(first.get(Attr.ICE_CONTROLLING), a.tieBreaker.to_bytes(8, "big"))
        self.assertIsNone(first.get(Attr.ICE_CONTROLLED))
        self.assertTrue(first.checkIntegrity(b.pwd.encode()))
        self.assertEqual(first.attributes[-1][0], Attr.FINGERPRINT)
        nominating = [m for m in checks if m.get(Attr.USE_CANDIDATE) is not None]
        self.assertEqual(len(nominating), 1)
        self.assertIsNone(first.get(Attr.USE_CANDIDATE))
        controlled = _checks(net, "b")[0]
        self.assertEqual(controlled.get(Attr.ICE_CONTROLLED), b.tieBreaker.to_bytes(8, "big"))

    def test_pacing(self) -> None:
        """New checks start no faster than one per Ta (50 ms)."""
        a = IceCore(controlling=True, rng=random.Random(1))
        a.addLocalCandidate("host", ("192.0.2.1", 5000), ("192.0.2.1", 5000))
        a.setRemoteCredentials("ruf1", "r" * 22)
        for i in range(1, 6):  # unreachable remote candidates
            a.addRemoteCandidate(parseCandidate(
                f"candidate:{i} 1 udp {2000 - i} 198.51.100.{i} 7000 typ host"))
        times = []
        now = 0.0
        for _ in range(200):
            deadline = a.nextDeadline()
            if deadline is None or deadline > 0.5:
                break
            now = deadline
            a.tick(now)
            for t in a.takeTransmits():
                if decode(t.data).get(Attr.USERNAME) and t.remote[0].endswith(str(len(times) + 1)):
                    times.append(now)
        self.assertEqual(len(times), 5)
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        self.assertTrue(all(g >= 0.05 - 1e-9 for g in gaps), gaps)
        # Highest priority first: 198.51.100.1 has priority 1999.
        self.assertEqual(times[0], 0.0)

    def test_bestPairNominated(self) -> None:
        """With a host pair and a relayed pair both working, the host pair (higher
        priority) is nominated and selected, whichever answered first."""
        a, b = pair()
        a.addLocalCandidate("relay", ("198.51.100.1", 4000), ("198.51.100.1", 4000),
                            server="198.51.100.1", related=("192.0.2.1", 5000))
        net = Network(("a", a), ("b", b))
        exchange(a, b)
        net.run(5.0, stop=lambda: a.selected is not None and b.selected is not None)
        self.assertEqual(a.selected.local.type, "host")
        self.assertEqual(b.selected.remote.type, "host")


class NominationTests(SynchronousTestCase):
    """Regular nomination by us, aggressive nomination accepted from RFC 5245 peers."""

    def _request(self, core: IceCore, source: tuple[str, int], base: tuple[str, int],
                 priority: int, useCandidate: bool, remoteUfrag: str = "peer") -> Message:
        message, data = buildCheck(remoteUfrag, core.ufrag, core.pwd, priority, True,
                                   2**63, useCandidate)
        core.receive(data, base, source, 0.0)
        return message

    def test_aggressive(self) -> None:
        """An older controlling peer puts USE-CANDIDATE on every check: the controlled
        agent selects a nominated pair once its own check of it succeeds, then moves to
        a higher-priority one nominated later."""
        b = IceCore(controlling=False, rng=random.Random(5))
        b.addLocalCandidate("host", ("192.0.2.2", 6000), ("192.0.2.2", 6000))
        b.setRemoteCredentials("peer", "p" * 22)
        low = ("198.51.100.9", 9000)
        high = ("192.0.2.9", 9000)
        b.addRemoteCandidate(parseCandidate(f"candidate:1 1 udp 100 {low[0]} {low[1]} typ relay"))
        b.addRemoteCandidate(parseCandidate(
            f"candidate:2 1 udp 2130706431 {high[0]} {high[1]} typ host"))
        base = ("192.0.2.2", 6000)
        self._request(b, low, base, 100, useCandidate=True)
        self.assertIsNone(b.selected)  # its own check has not succeeded yet
        lowPair = b.checklist.get((base, low))
        self.assertTrue(lowPair.nominateOnSuccess)
        # Answer b's check of the low pair.
        self._answerChecks(b, low)
        self.assertIs(b.selected, lowPair)
        highPair = b.checklist.get((base, high))
        self._answerChecks(b, high)
        self.assertIs(b.selected, lowPair)  # valid but not nominated
        self._request(b, high, base, 2130706431, useCandidate=True)
        self.assertIs(b.selected, highPair)

    def _answerChecks(self, core: IceCore, peer: tuple[str, int]) -> None:
        for _ in range(20):
            deadline = core.nextDeadline() or 0.0
            core.tick(deadline)
            for t in core.takeTransmits():
                m = decode(t.data)
                if t.remote == peer and m.cls == StunClass.REQUEST:
                    response = m.reply()
                    response.add(Attr.XOR_MAPPED_ADDRESS, m.xorMapped(*t.local))
                    core.receive(response.encode(b"p" * 22, fingerprint=True), t.local, peer,
                                 deadline)
                    return
        raise AssertionError("no check was sent")

    def test_waitsForBetterPairs(self) -> None:
        """The controlling agent does not nominate a valid pair while a higher-priority
        pair is still being checked, until the nomination delay runs out."""
        a, b = pair()
        b.addLocalCandidate("host", ("192.0.2.3", 6001), ("192.0.2.3", 6001),
                            localPreference=65534)
        net = Network(("a", a), ("b", b))
        net.drop = lambda t: t.remote == ("192.0.2.2", 6000) or t.local == ("192.0.2.2", 6000)
        exchange(a, b)
        net.run(0.9)
        self.assertIsNone(a.selected)
        self.assertEqual(len(a.checklist.valid()), 1)
        net.run(5.0, stop=lambda: a.selected is not None)
        self.assertEqual(a.selected.remote.port, 6001)
        self.assertGreaterEqual(net.now, 1.0)


class RoleConflictTests(SynchronousTestCase):
    """RFC 8445 §7.3.1.1 and §7.2.5.1, both ways."""

    def test_decision(self) -> None:
        """The pure decision table."""
        self.assertEqual(resolveConflict(True, 5, True, 4), Conflict.REJECT)
        self.assertEqual(resolveConflict(True, 5, True, 5), Conflict.REJECT)
        self.assertEqual(resolveConflict(True, 4, True, 5), Conflict.SWITCH)
        self.assertEqual(resolveConflict(False, 5, False, 4), Conflict.SWITCH)
        self.assertEqual(resolveConflict(False, 4, False, 5), Conflict.REJECT)
        self.assertEqual(resolveConflict(False, 9, False, 4, canControl=False), Conflict.REJECT)
        self.assertEqual(resolveConflict(True, 1, False, 9), Conflict.NONE)
        self.assertEqual(resolveConflict(True, 1, None, 0), Conflict.NONE)

    def _conflict(self, controlling: bool) -> tuple[IceCore, IceCore, Network]:
        a, b = pair()
        a.controlling = a.checklist.controlling = controlling
        b.controlling = b.checklist.controlling = controlling
        a.tieBreaker, b.tieBreaker = 10, 20
        net = Network(("a", a), ("b", b))
        exchange(a, b)
        net.run(10.0, stop=lambda: a.selected is not None and b.selected is not None)
        return a, b, net

    def test_bothControlling(self) -> None:
        """Both claim controlling: b (larger tie-breaker) stays controlling, a switches,
        either on b's request or on b's 487 answer, and they connect."""
        a, b, net = self._conflict(True)
        self.assertEqual((a.controlling, b.controlling), (False, True))
        self.assertEqual(a.selected.key[::-1], b.selected.key)
        errors = [decodeErrorCode(m.get(Attr.ERROR_CODE))[0] for m in _messages(net, "b")
                  if m.cls == StunClass.ERROR]
        self.assertIn(487, errors)

    def test_bothControlled(self) -> None:
        """Both claim controlled: b (larger tie-breaker) becomes controlling."""
        a, b, net = self._conflict(False)
        self.assertEqual((a.controlling, b.controlling), (False, True))
        self.assertEqual(a.selected.key[::-1], b.selected.key)

    def test_487SwitchesTheSender(self) -> None:
        """A 487 answer to our check switches our role and checks the pair again."""
        a, b = pair()
        b.controlling = b.checklist.controlling = True
        a.tieBreaker, b.tieBreaker = 1, 2**64 - 1
        net = Network(("a", a), ("b", b))
        net.drop = lambda t: t.local == ("192.0.2.2", 6000) and decode(t.data).cls == \
            StunClass.REQUEST
        exchange(a, b)
        net.run(1.0, stop=lambda: not a.controlling)
        self.assertFalse(a.controlling)
        answers = [m for m in _messages(net, "b") if m.cls == StunClass.ERROR]
        self.assertEqual(decodeErrorCode(answers[0].get(Attr.ERROR_CODE))[0], 487)
        self.assertTrue(answers[0].checkIntegrity(b.pwd.encode()))


class PeerReflexiveTests(SynchronousTestCase):
    """RFC 8445 §7.2.5.3.1 and §7.3.1.3."""

    def test_natBothWays(self) -> None:
        """a is behind a NAT it has no server-reflexive candidate for: b learns a
        peer-reflexive remote candidate from a's check, a learns a peer-reflexive local
        one from the answer; they connect on it."""
        a, b = pair()
        net = Network(("a", a), ("b", b))
        net.nat[("192.0.2.1", 5000)] = ("203.0.113.50", 40000)
        exchange(a, b)
        net.run(10.0, stop=lambda: a.selected is not None and b.selected is not None)
        self.assertEqual(b.selected.remote.type, "prflx")
        self.assertEqual(b.selected.remote.address, ("203.0.113.50", 40000))
        self.assertEqual(b.selected.remote.priority, 1862270975)
        self.assertEqual(a.selected.validLocal.type, "prflx")
        self.assertEqual(a.selected.validLocal.address, ("203.0.113.50", 40000))

    def test_earlyCheck(self) -> None:
        """A check that comes before the remote description is answered at once and
        its triggered check is sent once the credentials arrive."""
        a, b = pair()
        net = Network(("a", a), ("b", b))
        b.setRemoteCredentials(a.ufrag, a.pwd)
        b.addRemoteCandidate(a.locals[0].candidate)
        net.run(0.2)  # b checks a; a does not know b yet
        answers = [m for m in _messages(net, "a") if m.cls == StunClass.SUCCESS]
        self.assertTrue(answers)
        self.assertFalse(_checks(net, "a"))
        a.setRemoteCredentials(b.ufrag, b.pwd)
        net.run(5.0, stop=lambda: a.selected is not None and b.selected is not None)
        self.assertEqual(a.selected.remote.type, "prflx")
        # The candidate signalled late replaces the peer-reflexive one (RFC 8838).
        a.addRemoteCandidate(b.locals[0].candidate)
        self.assertEqual(a.selected.remote.type, "host")
        self.assertEqual(len(a.remotes), 1)


class ConsentTests(SynchronousTestCase):
    """RFC 7675 and RFC 8445 §11."""

    def _connected(self, lite: bool = False) -> tuple[IceCore, IceCore, Network]:
        a, b = pair(lite=lite)
        net = Network(("a", a), ("b", b))
        exchange(a, b)
        net.run(5.0, stop=lambda: a.selected is not None and b.selected is not None)
        return a, b, net

    def test_checksKeepConsent(self) -> None:
        """Consent checks go out every 2.5 to 7.5 s; answered, the pair stays for a
        minute and more."""
        a, b, net = self._connected()
        start = len(net.sent)
        net.run(net.now + 60.0)
        self.assertEqual(a.state, IceState.CONNECTED)
        times = [i for i, (name, t) in enumerate(net.sent[start:]) if name == "a"
                 and decode(t.data).cls == StunClass.REQUEST]
        self.assertGreaterEqual(len(times), 8)
        self.assertLessEqual(len(times), 24)

    def test_expiry(self) -> None:
        """No answers for 30 s: consent is lost and the agent fails; not before."""
        a, b, net = self._connected()
        lostFrom = net.now
        net.drop = lambda t: True
        net.run(lostFrom + 29.0)
        self.assertEqual(a.state, IceState.CONNECTED)
        net.run(lostFrom + 31.0)
        self.assertEqual(a.state, IceState.FAILED)
        sent = len(net.sent)
        net.run(lostFrom + 60.0)
        self.assertEqual([n for n, _ in net.sent[sent:] if n == "a"], [])

    def test_keepalive(self) -> None:
        """A lite agent sends no checks, only a Binding indication after 15 s quiet."""
        a, b, net = self._connected(lite=True)
        start = net.now
        net.drop = lambda t: t.local == ("192.0.2.1", 5000)  # b has nothing to answer
        net.run(start + 16.0)
        mine = [decode(t.data) for n, t in net.sent if n == "b"]
        self.assertFalse([m for m in mine if m.cls == StunClass.REQUEST])
        self.assertEqual(len([m for m in mine if m.cls == StunClass.INDICATION]), 1)


class LiteTests(SynchronousTestCase):
    """A full agent against an ICE-lite one (RFC 8445 §2.5)."""

    def test_liteAgainstFull(self) -> None:
        """The full agent takes control even when created controlled; the lite agent
        only answers and selects what is nominated."""
        a = IceCore(controlling=False, rng=random.Random(1))
        b = IceCore(controlling=True, lite=True, rng=random.Random(2))
        self.assertFalse(b.controlling)
        a.addLocalCandidate("host", ("192.0.2.1", 5000), ("192.0.2.1", 5000))
        b.addLocalCandidate("host", ("192.0.2.2", 6000), ("192.0.2.2", 6000))
        net = Network(("a", a), ("b", b))
        exchange(a, b)
        self.assertTrue(a.controlling)
        net.run(5.0, stop=lambda: a.selected is not None and b.selected is not None)
        self.assertEqual(b.selected.key, (("192.0.2.2", 6000), ("192.0.2.1", 5000)))
        self.assertFalse(_checks(net, "b"))


class RestartTests(SynchronousTestCase):
    """RFC 8445 §9."""

    def test_restart(self) -> None:
        """a restarts: new credentials; b restarts in turn when it sees them; both
        select again with the new credentials, the old pair carrying data meanwhile."""
        a, b = pair()
        net = Network(("a", a), ("b", b))
        exchange(a, b)
        net.run(5.0, stop=lambda: a.selected is not None and b.selected is not None)
        oldA, oldB = a.ufrag, b.ufrag
        ufrag, pwd = a.restart(net.now)
        self.assertNotEqual(ufrag, oldA)
        self.assertIsNotNone(a.selected)  # still usable
        self.assertEqual(a.state, IceState.CHECKING)
        b.setRemoteCredentials(ufrag, pwd, now=net.now)
        restarted = [e for e in b.takeEvents() if isinstance(e, Restarted)]
        self.assertEqual(len(restarted), 1)
        self.assertNotEqual(restarted[0].ufrag, oldB)
        a.setRemoteCredentials(b.ufrag, b.pwd, now=net.now)
        self.assertFalse([e for e in a.takeEvents() if isinstance(e, Restarted)])
        for x, y in ((a, b), (b, a)):
            y.addRemoteCandidate(x.locals[0].candidate)
        before = len(net.sent)
        net.events = {"a": [], "b": []}
        net.run(net.now + 5.0, stop=lambda: bool(net.selected("a")) and bool(net.selected("b")))
        self.assertEqual(a.state, IceState.CONNECTED)
        checks = [decode(t.data) for n, t in net.sent[before:] if n == "a"
                  and decode(t.data).cls == StunClass.REQUEST]
        self.assertEqual(checks[0].get(Attr.USERNAME), f"{b.ufrag}:{ufrag}".encode())


class TrickleAndFailureTests(SynchronousTestCase):
    """RFC 8838: candidates added late; failure only after end-of-candidates."""

    def test_trickledLate(self) -> None:
        """Checks start with no remote candidate; one trickled later connects."""
        a, b = pair()
        net = Network(("a", a), ("b", b))
        a.setRemoteCredentials(b.ufrag, b.pwd)
        b.setRemoteCredentials(a.ufrag, a.pwd)
        net.run(2.0)
        self.assertEqual(a.state, IceState.CHECKING)
        a.addRemoteCandidate(b.locals[0].candidate)
        net.run(5.0, stop=lambda: a.selected is not None and b.selected is not None)
        self.assertIsNotNone(b.selected)

    def test_failsOnlyAfterEndOfCandidates(self) -> None:
        """Every pair failing is not failure while the remote may trickle more; after
        end-of-candidates it is."""
        a = IceCore(controlling=True, rng=random.Random(1))
        a.addLocalCandidate("host", ("192.0.2.1", 5000), ("192.0.2.1", 5000))
        a.endOfLocalCandidates()
        a.setRemoteCredentials("ruf1", "r" * 22)
        a.addRemoteCandidate(parseCandidate("candidate:1 1 udp 5 198.51.100.1 7000 typ host"))
        net = Network(("a", a))
        net.run(30.0)
        self.assertEqual(a.checklist.ordered()[0].state, PairState.FAILED)
        self.assertEqual(a.state, IceState.CHECKING)
        a.endOfRemoteCandidates()
        net.run(31.0)
        self.assertEqual(a.state, IceState.FAILED)


class RequestTests(SynchronousTestCase):
    """Incoming checks that are not acceptable."""

    def test_rfc5769Sample(self) -> None:
        """The RFC 5769 §2.1 sample request is an ICE check: it reads as one."""
        request = readRequest(decode(SAMPLE_REQUEST), "evtj", SHORT_TERM_PASSWORD.decode())
        self.assertEqual((request.remoteUfrag, request.priority, request.controlling,
                          request.tieBreaker, request.useCandidate),
                         ("h6vY", 0x6E0001FF, False, 0x932FF9B151263B36, False))
        self.assertEqual(readRequest(decode(SAMPLE_REQUEST), "evtj", "wrong"), 401)
        self.assertEqual(readRequest(decode(SAMPLE_REQUEST), "other", "x"), 401)

    def test_answers(self) -> None:
        """Wrong password: 401; no USERNAME/integrity or no PRIORITY: 400; not a
        Binding request or not STUN: nothing, and not claimed as ICE."""
        a, _ = pair()
        base, source = ("192.0.2.1", 5000), ("192.0.2.9", 9)
        _, data = buildCheck("x", a.ufrag, "not-the-password-at-all", 1, True, 1)
        a.receive(data, base, source, 0.0)
        bare = Message(Method.BINDING, StunClass.REQUEST).encode(fingerprint=True)
        a.receive(bare, base, source, 0.0)
        noPriority = Message(Method.BINDING, StunClass.REQUEST)
        noPriority.add(Attr.USERNAME, f"{a.ufrag}:x".encode())
        a.receive(noPriority.encode(a.pwd.encode()), base, source, 0.0)
        codes = [decodeErrorCode(decode(t.data).get(Attr.ERROR_CODE))[0]
                 for t in a.takeTransmits()]
        self.assertEqual(codes, [401, 400, 400])
        self.assertFalse(a.receive(b"\x80" + bytes(40), base, source, 0.0))
        self.assertTrue(a.receive(Message(Method.ALLOCATE, StunClass.REQUEST).encode(),
                                  base, source, 0.0))
        self.assertEqual(a.takeTransmits(), [])


class GarbageTests(SynchronousTestCase):
    """Bad network input never raises out of the core."""

    @given(st.binary(max_size=120))
    def test_randomAfterHeader(self, tail: bytes) -> None:
        """Anything after a valid-looking Binding header is dropped or answered."""
        a, _ = pair()
        a.setRemoteCredentials("peer", "p" * 22)
        for cls in (0x0001, 0x0101, 0x0111):
            data = cls.to_bytes(2, "big") + len(tail).to_bytes(2, "big") + \
                b"\x21\x12\xa4\x42" + bytes(12) + tail
            a.receive(data, ("192.0.2.1", 5000), ("192.0.2.9", 9), 0.0)
        a.tick(1.0)


class LayerTests(SynchronousTestCase):
    """The core modules are sans-IO: no Twisted, no sockets, no clocks."""

    def test_imports(self) -> None:
        """Only codecs, other core modules and the sans-IO transaction table."""
        folder = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))), "p2pnet", "ice")
        for name in ("candidates", "checklist", "consent", "core", "roles", "stunchecks"):
            with open(os.path.join(folder, name + ".py")) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                for module in names:
                    self.assertFalse(module.startswith(("twisted", "socket", "time")),
                                     f"{name}.py imports {module}")
                    if module.startswith("p2pnet."):
                        self.assertTrue(module.startswith((
                            "p2pnet.codecs.", "p2pnet.ice.", "p2pnet.protocols.stun_transactions")),
                            f"{name}.py imports {module}")
