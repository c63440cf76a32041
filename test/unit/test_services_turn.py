# -*- test-case-name: test.unit.test_services_turn -*-
"""Tests for L{p2pnet.services.turn} and its rooms (allocate, permissions, data path,
RFC 6062 relays): every request, error path and timer, in memory. The relayed sockets
are L{MemoryRelaySockets}: nothing is bound for them."""

from __future__ import annotations

import json
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs import stun
from p2pnet.codecs.stun import (
    FAMILY_IPV4,
    FAMILY_IPV6,
    PROTOCOL_TCP,
    PROTOCOL_UDP,
    Attr,
    Message,
    Method,
    StunClass,
    decode,
    encodeAddressFamily,
    encodeChannelData,
    encodeChannelNumber,
    encodeEvenPort,
    encodeRequestedTransport,
    encodeUInt32,
    longTermKey,
    splitChannelData,
)
from p2pnet.services import turn_tcp
from p2pnet.services.auth import StaticUsers
from p2pnet.services.stun import StunService
from p2pnet.services.turn import TurnService
from p2pnet.services.turn_policy import PeerPolicy
from p2pnet.testing import MemoryRelaySockets, UDPMemoryReactor
from test.unit.test_services_stun import MemorySockets

CLIENT = ("127.0.0.1", 40000)
PEER = ("127.0.0.1", 50000)
REALM = "example.org"
USERS = {"alice": "secret", "bob": "hunter2"}


def portRange(size: int = 40) -> tuple[int, int]:
    """A relay port range (relayed sockets are in memory: nothing is bound)."""
    return 50000, 50000 + size - 1


def errorCode(message: Message) -> int:
    return stun.decodeErrorCode(message.get(Attr.ERROR_CODE))[0]


class TurnMixin:
    """A STUN service with a TURN service on a L{UDPMemoryReactor}, and a signing client."""

    user = "alice"

    def startTurn(self, stunArgs: dict | None = None, **kwargs: object) -> TurnService:
        self.reactor = UDPMemoryReactor()
        self.reactor.advance(1000)
        stunArgs = dict(stunArgs or {})
        stunArgs.setdefault("listen", ("127.0.0.1",))
        stunArgs.setdefault("sockets", MemorySockets(self.reactor))
        self.stun = StunService(self.reactor, port=0, realm=REALM, **stunArgs)  # type: ignore[arg-type]
        kwargs.setdefault("credentials", StaticUsers(USERS))
        kwargs.setdefault("policy", PeerPolicy(allowLoopback=True))
        kwargs.setdefault("relayPorts", portRange())
        self.relaySockets = MemoryRelaySockets(self.reactor)
        kwargs.setdefault("relaySockets", self.relaySockets)
        # The automatic quotas of a 40-port range are 5 per user and 2 per address.
        kwargs.setdefault("userQuota", 64)
        kwargs.setdefault("ipQuota", 64)
        self.turn = TurnService(self.reactor, self.stun, **kwargs)  # type: ignore[arg-type]
        self.stun.startService()
        self.turn.startService()
        self.addCleanup(self.stun.stopService)  # type: ignore[attr-defined]
        self.addCleanup(self.turn.stopService)  # type: ignore[attr-defined]
        self.nonce = b""
        return self.turn

    @property
    def udp(self):  # noqa: ANN201
        return self.stun.matrix[4][(0, 0)]

    def replies(self) -> list[tuple[bytes, tuple]]:
        written = self.udp.transport.written
        out = list(written)
        written.clear()
        return out

    def onlyReply(self) -> Message:
        out = self.replies()
        self.assertEqual(len(out), 1, out)  # type: ignore[attr-defined]
        return decode(out[0][0])

    def sign(self, request: Message, user: str | None = None, password: str | None = None,
             sha256: bool = False) -> bytes:
        user = user or self.user
        password = password if password is not None else USERS.get(user, "x")
        request.add(Attr.USERNAME, user.encode())
        request.add(Attr.REALM, REALM.encode())
        request.add(Attr.NONCE, self.nonce)
        return request.encode(longTermKey(user, REALM, password), sha256=sha256)

    def request(self, method: int, *attributes: tuple[int, bytes], source=CLIENT,  # noqa: ANN001
                **signArgs: object) -> Message:
        """Send a signed request (fetching a nonce first if needed); the one reply."""
        if not self.nonce:
            self.udp.datagramReceived(Message(Method.ALLOCATE, StunClass.REQUEST).encode(),
                                      source)
            challenge = self.onlyReply()
            self.assertEqual(errorCode(challenge), 401)  # type: ignore[attr-defined]
            self.nonce = challenge.get(Attr.NONCE)
        message = Message(method, StunClass.REQUEST, attributes=list(attributes))
        self.udp.datagramReceived(self.sign(message, **signArgs), source)  # type: ignore[arg-type]
        reply = self.onlyReply()
        self.assertEqual(reply.transactionId, message.transactionId)  # type: ignore[attr-defined]
        return reply

    def allocate(self, *attributes: tuple[int, bytes], source=CLIENT, **signArgs: object  # noqa: ANN001
                 ) -> Message:
        transport = (Attr.REQUESTED_TRANSPORT, encodeRequestedTransport(PROTOCOL_UDP))
        return self.request(Method.ALLOCATE, transport, *attributes, source=source,
                            **signArgs)

    def relayed(self, reply: Message) -> tuple[str, int]:
        return stun.decodeXorAddress(reply.get(Attr.XOR_RELAYED_ADDRESS), reply.transactionId)

    def peerAttr(self, peer: tuple[str, int], tid: bytes = b"") -> tuple[int, bytes]:
        return (Attr.XOR_PEER_ADDRESS, stun.encodeXorAddress(peer[0], peer[1], tid))

    def relaySocket(self, relayed: tuple[str, int]):  # noqa: ANN201
        return self.reactor.udpPorts[relayed]


class AllocateTests(TurnMixin, SynchronousTestCase):
    """RFC 8656 §7.2."""

    def test_unauthenticated(self) -> None:
        """An Allocate without credentials gets 401 with REALM and NONCE, and is counted."""
        self.startTurn()
        self.udp.datagramReceived(Message(Method.ALLOCATE, StunClass.REQUEST).encode(), CLIENT)
        reply = self.onlyReply()
        self.assertEqual(errorCode(reply), 401)
        self.assertEqual(reply.get(Attr.REALM), REALM.encode())
        self.assertIsNotNone(reply.get(Attr.NONCE))
        self.assertEqual(self.turn.stats.counters["turn.errors.401"], 1)
        self.assertEqual(self.turn.allocations, {})

    def test_wrongPassword(self) -> None:
        """A bad MESSAGE-INTEGRITY is refused with 401 and no allocation."""
        self.startTurn()
        reply = self.allocate(password="wrong")
        self.assertEqual(errorCode(reply), 401)
        self.assertEqual(self.turn.allocations, {})

    def test_success(self) -> None:
        """The success response has XOR-RELAYED-ADDRESS from the range, LIFETIME 600,
        XOR-MAPPED-ADDRESS, and is signed; the relayed socket is bound."""
        self.startTurn()
        reply = self.allocate()
        self.assertEqual(reply.cls, StunClass.SUCCESS)
        host, port = self.relayed(reply)
        low, high = self.turn.relayPorts
        self.assertEqual(host, "127.0.0.1")
        self.assertTrue(low <= port <= high)
        self.assertEqual(stun.decodeUInt32(reply.get(Attr.LIFETIME)), 600)
        self.assertEqual(stun.decodeXorAddress(reply.get(Attr.XOR_MAPPED_ADDRESS),
                                               reply.transactionId), CLIENT)
        self.assertTrue(reply.checkIntegrity(longTermKey("alice", REALM, "secret")))
        self.assertIn((host, port), self.reactor.udpPorts)
        self.assertEqual(self.turn.stats.counters["turn.allocations.created"], 1)
        self.assertEqual(self.turn.stats.snapshot()["turn.allocations"], 1)

    def test_sha256(self) -> None:
        """A request signed with MESSAGE-INTEGRITY-SHA256 gets a response signed so."""
        self.startTurn()
        reply = self.allocate(sha256=True)
        self.assertEqual(reply.cls, StunClass.SUCCESS)
        self.assertIsNotNone(reply.get(Attr.MESSAGE_INTEGRITY_SHA256))

    def test_lifetime(self) -> None:
        """LIFETIME is clamped to the maximum and never below the default."""
        self.startTurn(maxLifetime=1200)
        reply = self.allocate((Attr.LIFETIME, encodeUInt32(5000)))
        self.assertEqual(stun.decodeUInt32(reply.get(Attr.LIFETIME)), 1200)
        reply = self.allocate((Attr.LIFETIME, encodeUInt32(30)), source=("127.0.0.1", 1))
        self.assertEqual(stun.decodeUInt32(reply.get(Attr.LIFETIME)), 600)

    def test_expiry(self) -> None:
        """The allocation ends when its lifetime passes on the reactor's clock."""
        self.startTurn()
        relayed = self.relayed(self.allocate())
        self.reactor.advance(599)
        self.assertEqual(len(self.turn.allocations), 1)
        self.reactor.advance(1)
        self.assertEqual(self.turn.allocations, {})
        self.assertEqual(self.turn.stats.counters["turn.allocations.expired"], 1)
        self.assertTrue(self.relaySocket(relayed).transport.stopped)

    def test_mismatch(self) -> None:
        """A second Allocate on the same 5-tuple gets 437; a retransmission of the first
        gets the same success response again."""
        self.startTurn()
        transport = (Attr.REQUESTED_TRANSPORT, encodeRequestedTransport(PROTOCOL_UDP))
        self.allocate()
        message = Message(Method.ALLOCATE, StunClass.REQUEST, attributes=[transport])
        data = self.sign(message)
        self.udp.datagramReceived(data, ("127.0.0.1", 1))
        first = self.replies()
        self.udp.datagramReceived(data, ("127.0.0.1", 1))
        self.assertEqual(self.replies(), first)
        self.assertEqual(errorCode(self.allocate()), 437)

    def test_noTransport(self) -> None:
        """Without REQUESTED-TRANSPORT (or with a malformed one): 400."""
        self.startTurn()
        self.assertEqual(errorCode(self.request(Method.ALLOCATE)), 400)
        self.assertEqual(errorCode(self.request(
            Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, b"\x11"))), 400)

    def test_unsupportedTransport(self) -> None:
        """Protocols other than UDP and TCP: 442; TCP over a UDP control connection: 400
        (RFC 6062 5.1)."""
        self.startTurn()
        reply = self.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT,
                                               encodeRequestedTransport(132)))
        self.assertEqual(errorCode(reply), 442)
        self.assertEqual(self.turn.stats.counters["turn.errors.442"], 1)
        reply = self.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT,
                                               encodeRequestedTransport(PROTOCOL_TCP)))
        self.assertEqual(errorCode(reply), 400)

    def test_unknownAttribute(self) -> None:
        """Unknown comprehension-required attributes: 420."""
        self.startTurn()
        reply = self.allocate((0x0031, b"x"))
        self.assertEqual(errorCode(reply), 420)
        self.assertEqual(stun.decodeUnknownAttributes(reply.get(Attr.UNKNOWN_ATTRIBUTES)),
                         [0x31])

    def test_dontFragment(self) -> None:
        """DONT-FRAGMENT is honoured by setting DF on the relayed socket."""
        self.startTurn()
        reply = self.allocate((Attr.DONT_FRAGMENT, b""))
        self.assertEqual(reply.cls, StunClass.SUCCESS)
        self.assertTrue(next(iter(self.turn.allocations.values())).dontFragment)

    def test_familyIPv6Unavailable(self) -> None:
        """REQUESTED-ADDRESS-FAMILY IPv6 on an IPv4-only server: 440; unknown family 440."""
        self.startTurn()
        for family in (FAMILY_IPV6, 7):
            reply = self.allocate((Attr.REQUESTED_ADDRESS_FAMILY, encodeAddressFamily(family)))
            self.assertEqual(errorCode(reply), 440)

    def test_bothFamilyAttributes(self) -> None:
        """REQUESTED- and ADDITIONAL-ADDRESS-FAMILY together: 400; ADDITIONAL IPv4: 400."""
        self.startTurn()
        reply = self.allocate((Attr.REQUESTED_ADDRESS_FAMILY, encodeAddressFamily(FAMILY_IPV4)),
                              (Attr.ADDITIONAL_ADDRESS_FAMILY, encodeAddressFamily(FAMILY_IPV6)))
        self.assertEqual(errorCode(reply), 400)
        reply = self.allocate((Attr.ADDITIONAL_ADDRESS_FAMILY, encodeAddressFamily(FAMILY_IPV4)))
        self.assertEqual(errorCode(reply), 400)

    def test_additionalFamilyPartial(self) -> None:
        """ADDITIONAL-ADDRESS-FAMILY IPv6 without IPv6: IPv4 only, ADDRESS-ERROR-CODE 440."""
        self.startTurn()
        reply = self.allocate((Attr.ADDITIONAL_ADDRESS_FAMILY, encodeAddressFamily(FAMILY_IPV6)))
        self.assertEqual(reply.cls, StunClass.SUCCESS)
        self.assertEqual(stun.decodeAddressErrorCode(reply.get(Attr.ADDRESS_ERROR_CODE))[:2],
                         (FAMILY_IPV6, 440))

    def test_dualStack(self) -> None:
        """With an IPv6 relay address, ADDITIONAL-ADDRESS-FAMILY gives two relayed
        addresses; REQUESTED-ADDRESS-FAMILY IPv6 gives an IPv6 one."""
        self.startTurn(relayAddresses={6: "::1"})
        reply = self.allocate((Attr.ADDITIONAL_ADDRESS_FAMILY, encodeAddressFamily(FAMILY_IPV6)))
        relayed = [stun.decodeXorAddress(v, reply.transactionId)
                   for t, v in reply.attributes if t == Attr.XOR_RELAYED_ADDRESS]
        self.assertEqual([h for h, _ in relayed], ["127.0.0.1", "::1"])
        reply = self.allocate((Attr.REQUESTED_ADDRESS_FAMILY, encodeAddressFamily(FAMILY_IPV6)),
                              source=("127.0.0.1", 2))
        self.assertEqual(self.relayed(reply)[0], "::1")

    def test_evenPortReservation(self) -> None:
        """EVEN-PORT with R: an even port and a token; the token allocates port + 1 once;
        an unknown or expired token gets 508; a token with EVEN-PORT gets 400."""
        self.startTurn()
        reply = self.allocate((Attr.EVEN_PORT, encodeEvenPort(True)))
        host, port = self.relayed(reply)
        self.assertEqual(port % 2, 0)
        token = reply.get(Attr.RESERVATION_TOKEN)
        self.assertEqual(len(token), 8)
        other = ("127.0.0.1", 2)
        reply = self.allocate((Attr.RESERVATION_TOKEN, token), (Attr.EVEN_PORT,
                                                                 encodeEvenPort(False)),
                              source=other)
        self.assertEqual(errorCode(reply), 400)
        reply = self.allocate((Attr.RESERVATION_TOKEN, token), source=other)
        self.assertEqual(self.relayed(reply), (host, port + 1))
        reply = self.allocate((Attr.RESERVATION_TOKEN, token), source=("127.0.0.1", 3))
        self.assertEqual(errorCode(reply), 508)

    def test_reservationExpires(self) -> None:
        """A reserved port is released after 30 seconds."""
        self.startTurn()
        reply = self.allocate((Attr.EVEN_PORT, encodeEvenPort(True)))
        token = reply.get(Attr.RESERVATION_TOKEN)
        self.reactor.advance(30)
        self.assertEqual(self.turn.table.reservations, {})
        reply = self.allocate((Attr.RESERVATION_TOKEN, token), source=("127.0.0.1", 2))
        self.assertEqual(errorCode(reply), 508)

    def test_reservationsBounded(self) -> None:
        """Reservations outlive their allocations, so they are bounded like them."""
        self.startTurn(maxAllocations=2)
        self.allocate((Attr.EVEN_PORT, encodeEvenPort(True)))
        self.request(Method.REFRESH, (Attr.LIFETIME, encodeUInt32(0)))
        self.allocate((Attr.EVEN_PORT, encodeEvenPort(True)), source=("127.0.0.1", 2))
        reply = self.allocate((Attr.EVEN_PORT, encodeEvenPort(True)), source=("127.0.0.1", 3))
        self.assertEqual(errorCode(reply), 508)
        self.assertEqual(len(self.turn.table.reservations), 2)

    def test_evenPortWithoutReservation(self) -> None:
        """EVEN-PORT without R: an even port, no token."""
        self.startTurn()
        reply = self.allocate((Attr.EVEN_PORT, encodeEvenPort(False)))
        self.assertEqual(self.relayed(reply)[1] % 2, 0)
        self.assertIsNone(reply.get(Attr.RESERVATION_TOKEN))

    def test_userQuota(self) -> None:
        """More allocations than the user quota: 486; another user is unaffected."""
        self.startTurn(userQuota=1)
        self.allocate()
        self.assertEqual(errorCode(self.allocate(source=("127.0.0.1", 2))), 486)
        reply = self.allocate(source=("127.0.0.1", 3), user="bob")
        self.assertEqual(reply.cls, StunClass.SUCCESS)

    def test_userQuotaAcrossNodes(self) -> None:
        """In a cluster the user's ports at the other nodes count too."""
        self.startTurn(userQuota=2)
        self.turn.table.elsewhere = lambda user: 1 if user == "alice" else 0
        self.allocate()
        self.assertEqual(errorCode(self.allocate(source=("127.0.0.1", 2))), 486)
        self.assertEqual(self.turn.table.perUser(), {"alice": 1})

    def test_ipQuota(self) -> None:
        """More allocations from one address than the IP quota: 486."""
        self.startTurn(ipQuota=2)
        self.allocate()
        self.allocate(source=("127.0.0.1", 2))
        self.assertEqual(errorCode(self.allocate(source=("127.0.0.1", 3))), 486)

    def test_draining(self) -> None:
        """Draining: a new allocation gets 508, the existing one is still refreshed, a
        retransmitted Allocate of it still gets its success; remaining() counts it."""
        self.startTurn()
        first = self.allocate()
        self.turn.startDrain()
        self.assertEqual(self.turn.remaining(), 1)
        self.assertEqual(errorCode(self.allocate(source=("127.0.0.1", 2))), 508)
        self.assertEqual(self.request(Method.REFRESH).cls, StunClass.SUCCESS)
        self.assertEqual(first.cls, StunClass.SUCCESS)
        self.request(Method.REFRESH, (Attr.LIFETIME, encodeUInt32(0)))
        self.assertEqual(self.turn.remaining(), 0)

    def test_redirectAbove(self) -> None:
        """From redirectAbove allocations on, 300 Try Alternate names the cluster's least
        loaded node (of the request's family); with none, the allocation is made."""
        self.startTurn()
        asked: list[tuple[int, int]] = []
        handler = self.turn.allocate
        handler.redirectAbove = 1
        handler.redirect = lambda fam, count: asked.append((fam, count)) or (
            ("192.0.2.9", 3478) if len(asked) == 1 else None)
        self.assertEqual(self.allocate().cls, StunClass.SUCCESS)
        reply = self.allocate(source=("127.0.0.1", 2))
        self.assertEqual(errorCode(reply), 300)
        self.assertEqual(stun.decodeAddress(reply.get(Attr.ALTERNATE_SERVER)),
                         ("192.0.2.9", 3478))
        self.assertEqual(asked, [(4, 1)])
        self.assertEqual(self.allocate(source=("127.0.0.1", 3)).cls, StunClass.SUCCESS)

    def test_capacity(self) -> None:
        """More allocations than the total: 508; freeing one makes room."""
        self.startTurn(maxAllocations=1)
        self.allocate()
        self.assertEqual(errorCode(self.allocate(source=("127.0.0.1", 2))), 508)
        self.request(Method.REFRESH, (Attr.LIFETIME, encodeUInt32(0)))
        self.assertEqual(self.allocate(source=("127.0.0.1", 2)).cls, StunClass.SUCCESS)

    def test_autoQuotas(self) -> None:
        """Quotas of 0 are automatic: an eighth of the port range per user, a sixteenth
        per address, never above max-allocations."""
        from p2pnet.services.turn import autoQuotas
        self.assertEqual(autoQuotas((49152, 65535), 10000, 0, 0), (2048, 1024))
        self.assertEqual(autoQuotas((50000, 50099), 10000, 0, 0), (12, 6))
        self.assertEqual(autoQuotas((50000, 50003), 10000, 0, 0), (1, 1))
        self.assertEqual(autoQuotas((49152, 65535), 100, 0, 0), (100, 100))
        self.assertEqual(autoQuotas((49152, 65535), 10000, 7, 9), (7, 9))

    def test_oneUserManyAddresses(self) -> None:
        """Issue 14 item 18: with the default quotas one user from many addresses gets at
        most an eighth of the range's allocations (a quarter of its ports)."""
        self.startTurn(relayPorts=portRange(64), userQuota=0, ipQuota=0)
        self.assertEqual((self.turn.userQuota, self.turn.ipQuota), (8, 4))
        codes = []
        for n in range(16):
            self.nonce = b""  # nonces are bound to the client address
            reply = self.allocate(source=(f"127.0.0.{n + 1}", 5000))
            codes.append(reply.cls == StunClass.SUCCESS or errorCode(reply))
        self.assertEqual(codes.count(True), 8)
        self.assertEqual(codes[8:], [486] * 8)
        self.assertEqual(len(self.turn.relays.usedPorts), 8)

    def test_reservationCountsAgainstQuota(self) -> None:
        """An EVEN-PORT reservation holds a port, so it counts as one of the user's: a
        user at quota - 1 cannot reserve; the count comes back when it expires."""
        self.startTurn(userQuota=2)
        reply = self.allocate((Attr.EVEN_PORT, encodeEvenPort(True)))
        self.assertEqual(reply.cls, StunClass.SUCCESS)
        self.assertEqual(errorCode(self.allocate(source=("127.0.0.1", 2))), 486)
        self.reactor.advance(30)
        self.assertEqual(self.allocate(source=("127.0.0.1", 2)).cls, StunClass.SUCCESS)

    def test_noTcpRelay(self) -> None:
        """With no-tcp-relay, REQUESTED-TRANSPORT TCP gets 442 (coturn's answer)."""
        self.startTurn(tcpRelays=False)
        reply = self.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT,
                                               encodeRequestedTransport(PROTOCOL_TCP)))
        self.assertEqual(errorCode(reply), 442)

    def test_externalIp(self) -> None:
        """external-ip PUBLIC/PRIVATE: the socket is bound to PRIVATE, the client is
        told PUBLIC (issue 14 item 4, coturn's external-ip)."""
        from p2pnet.addresses import ExternalAddresses
        self.startTurn(external=ExternalAddresses(["203.0.113.5/127.0.0.1"]))
        host, port = self.relayed(self.allocate())
        self.assertEqual(host, "203.0.113.5")
        self.assertIn(("127.0.0.1", port), self.relaySockets.bound)
        [session] = self.turn.table.sessions()
        self.assertEqual(session.relayed, (("203.0.113.5", port),))

    def test_externalIpBindsPrivate(self) -> None:
        """Without relay-ip, relayed sockets bind the PRIVATE address even when the
        client reached another one."""
        from p2pnet.addresses import ExternalAddresses
        self.startTurn(external=ExternalAddresses(["198.51.100.1/127.0.0.2"]))
        host, port = self.relayed(self.allocate())
        self.assertEqual(host, "198.51.100.1")
        self.assertIn(("127.0.0.2", port), self.relaySockets.bound)

    def test_portsExhausted(self) -> None:
        """A one-port range that is taken: 508."""
        low, _ = portRange(2)
        self.startTurn(relayPorts=(low, low))
        self.allocate()
        self.assertEqual(errorCode(self.allocate(source=("127.0.0.1", 2))), 508)


class RefreshTests(TurnMixin, SynchronousTestCase):
    """RFC 8656 §7.3."""

    def test_refresh(self) -> None:
        """A Refresh restarts the lifetime with the desired value."""
        self.startTurn()
        self.allocate()
        self.reactor.advance(500)
        reply = self.request(Method.REFRESH, (Attr.LIFETIME, encodeUInt32(900)))
        self.assertEqual(stun.decodeUInt32(reply.get(Attr.LIFETIME)), 900)
        self.reactor.advance(899)
        self.assertEqual(len(self.turn.allocations), 1)
        self.reactor.advance(1)
        self.assertEqual(self.turn.allocations, {})
        self.assertEqual(self.turn.stats.counters["turn.allocations.refreshed"], 1)

    def test_delete(self) -> None:
        """LIFETIME 0 deletes the allocation; a later Refresh gets 437."""
        self.startTurn()
        relayed = self.relayed(self.allocate())
        reply = self.request(Method.REFRESH, (Attr.LIFETIME, encodeUInt32(0)))
        self.assertEqual(stun.decodeUInt32(reply.get(Attr.LIFETIME)), 0)
        self.assertEqual(self.turn.allocations, {})
        self.assertTrue(self.relaySocket(relayed).transport.stopped)
        self.assertEqual(self.turn.stats.counters["turn.allocations.deleted"], 1)
        self.assertEqual(errorCode(self.request(Method.REFRESH)), 437)

    def test_noAllocation(self) -> None:
        """Refresh, CreatePermission and ChannelBind without an allocation: 437."""
        self.startTurn()
        for method in (Method.REFRESH, Method.CREATE_PERMISSION, Method.CHANNEL_BIND):
            self.assertEqual(errorCode(self.request(method)), 437)

    def test_wrongUser(self) -> None:
        """A request from another user on the allocation's 5-tuple: 441."""
        self.startTurn()
        self.allocate()
        self.assertEqual(errorCode(self.request(Method.REFRESH, user="bob")), 441)

    def test_familyMismatch(self) -> None:
        """REQUESTED-ADDRESS-FAMILY other than the allocation's: 443."""
        self.startTurn()
        self.allocate()
        reply = self.request(Method.REFRESH, (Attr.REQUESTED_ADDRESS_FAMILY,
                                              encodeAddressFamily(FAMILY_IPV6)))
        self.assertEqual(errorCode(reply), 443)

    def test_staleNonce(self) -> None:
        """After the nonce lifetime, requests get 438 with a fresh nonce."""
        self.startTurn(stunArgs={"nonceLifetime": 60.0})
        self.allocate()
        self.reactor.advance(61)
        reply = self.request(Method.REFRESH)
        self.assertEqual(errorCode(reply), 438)
        self.nonce = reply.get(Attr.NONCE)
        self.assertEqual(self.request(Method.REFRESH).cls, StunClass.SUCCESS)

    def test_responsesDropped(self) -> None:
        """TURN responses and unknown indications sent to the server are dropped."""
        self.startTurn()
        self.udp.datagramReceived(Message(Method.REFRESH, StunClass.SUCCESS).encode(), CLIENT)
        self.udp.datagramReceived(Message(Method.ALLOCATE, StunClass.INDICATION).encode(),
                                  CLIENT)
        self.assertEqual(self.replies(), [])
        self.assertEqual(self.turn.stats.counters["turn.dropped.not_request"], 2)


class PermissionTests(TurnMixin, SynchronousTestCase):
    """CreatePermission (10.2), Send and Data indications (11)."""

    def permit(self, *peers: tuple[str, int]) -> Message:
        message = Message(Method.CREATE_PERMISSION, StunClass.REQUEST)
        for peer in peers:
            message.add(*self.peerAttr(peer, message.transactionId))
        self.udp.datagramReceived(self.sign(message), CLIENT)
        return self.onlyReply()

    def send(self, peer: tuple[str, int], data: bytes) -> None:
        message = Message(Method.SEND, StunClass.INDICATION)
        message.add(*self.peerAttr(peer, message.transactionId))
        message.add(Attr.DATA, data)
        self.udp.datagramReceived(message.encode(), CLIENT)

    def test_sendAndData(self) -> None:
        """With a permission, Send goes out from the relayed address and a datagram from
        the peer comes back as a Data indication."""
        self.startTurn()
        relayed = self.relayed(self.allocate())
        self.assertEqual(self.permit(PEER).cls, StunClass.SUCCESS)
        self.send(PEER, b"hello")
        relay = self.relaySocket(relayed)
        self.assertEqual(relay.transport.written, [(b"hello", PEER)])
        relay.datagramReceived(b"world", ("127.0.0.1", 50001))  # any port of the peer IP
        [(data, destination)] = self.replies()
        self.assertEqual(destination, CLIENT)
        indication = decode(data)
        self.assertEqual((indication.method, indication.cls), (Method.DATA,
                                                               StunClass.INDICATION))
        self.assertEqual(indication.get(Attr.DATA), b"world")
        self.assertEqual(stun.decodeXorAddress(indication.get(Attr.XOR_PEER_ADDRESS),
                                               indication.transactionId),
                         ("127.0.0.1", 50001))
        counters = self.turn.stats.counters
        self.assertEqual((counters["turn.packets.to_peer"], counters["turn.bytes.to_peer"],
                          counters["turn.packets.from_peer"], counters["turn.bytes.from_peer"]),
                         (1, 5, 1, 5))
        self.assertEqual(self.turn.stats.snapshot()["turn.permissions"], 1)

    def test_noPermission(self) -> None:
        """Without a permission, both directions are dropped and counted."""
        self.startTurn()
        relayed = self.relayed(self.allocate())
        self.send(PEER, b"hello")
        relay = self.relaySocket(relayed)
        self.assertEqual(relay.transport.written, [])
        relay.datagramReceived(b"world", PEER)
        self.assertEqual(self.replies(), [])
        self.assertEqual(self.turn.stats.counters["turn.dropped.no_permission"], 2)

    def test_badSend(self) -> None:
        """Send without DATA or peer, or with no allocation, is dropped."""
        self.startTurn()
        self.send(PEER, b"x")
        self.assertEqual(self.turn.stats.counters["turn.dropped.no_allocation"], 1)
        self.allocate()
        self.udp.datagramReceived(Message(Method.SEND, StunClass.INDICATION).encode(), CLIENT)
        self.assertEqual(self.turn.stats.counters["turn.dropped.bad_send"], 1)

    def test_permissionExpires(self) -> None:
        """A permission lasts 300 s; a CreatePermission refreshes it; Send does not."""
        self.startTurn()
        relayed = self.relayed(self.allocate())
        self.permit(PEER)
        self.reactor.advance(200)
        self.send(PEER, b"a")
        self.reactor.advance(99)
        self.relaySocket(relayed).datagramReceived(b"in", PEER)
        self.assertEqual(len(self.replies()), 1)
        self.reactor.advance(1)
        self.relaySocket(relayed).datagramReceived(b"late", PEER)
        self.assertEqual(self.replies(), [])
        self.permit(PEER)
        self.reactor.advance(299)
        self.relaySocket(relayed).datagramReceived(b"again", PEER)
        self.assertEqual(len(self.replies()), 1)

    def test_invalid(self) -> None:
        """No XOR-PEER-ADDRESS, or a broken one: 400."""
        self.startTurn()
        self.allocate()
        self.assertEqual(errorCode(self.permit()), 400)
        self.assertEqual(errorCode(self.request(Method.CREATE_PERMISSION,
                                                (Attr.XOR_PEER_ADDRESS, b"\x00\x01"))), 400)

    def test_forbiddenPeer(self) -> None:
        """A peer the policy refuses: 403, and no permission is installed for any peer."""
        self.startTurn(policy=PeerPolicy())
        self.allocate()
        reply = self.permit(("8.8.8.8", 1), PEER)
        self.assertEqual(errorCode(reply), 403)
        self.assertEqual(next(iter(self.turn.allocations.values())).permissions, {})
        self.assertEqual(self.permit(("8.8.8.8", 1)).cls, StunClass.SUCCESS)

    def test_familyMismatch(self) -> None:
        """An IPv6 peer on an IPv4 allocation: 443."""
        self.startTurn()
        self.allocate()
        self.assertEqual(errorCode(self.permit(("2001:db8::1", 1))), 443)

    def test_totalLimit(self) -> None:
        """Permissions of all allocations together are bounded: 508 beyond; expired
        ones are swept from every allocation and make room again."""
        self.startTurn(maxPermissionsTotal=1)
        self.allocate((Attr.LIFETIME, encodeUInt32(3600)))
        self.assertEqual(self.permit(PEER).cls, StunClass.SUCCESS)
        other = ("127.0.0.1", 2)
        self.allocate((Attr.LIFETIME, encodeUInt32(3600)), source=other)
        message = Message(Method.CREATE_PERMISSION, StunClass.REQUEST)
        message.add(*self.peerAttr(PEER, message.transactionId))
        self.udp.datagramReceived(self.sign(message), other)
        self.assertEqual(errorCode(self.onlyReply()), 508)
        self.reactor.advance(360)  # expired, then swept
        self.assertEqual(self.turn.budget.permissions, 0)
        message = Message(Method.CREATE_PERMISSION, StunClass.REQUEST)
        message.add(*self.peerAttr(PEER, message.transactionId))
        self.udp.datagramReceived(self.sign(message), other)
        self.assertEqual(self.onlyReply().cls, StunClass.SUCCESS)

    def test_limit(self) -> None:
        """More permissions than the limit: 508, all or none; expired ones make room."""
        self.startTurn(maxPermissions=2, policy=PeerPolicy(allow=["10.0.0.0/8"],
                                                           allowLoopback=True))
        self.allocate()
        self.assertEqual(self.permit(("10.0.0.1", 1), ("10.0.0.2", 1)).cls, StunClass.SUCCESS)
        self.assertEqual(errorCode(self.permit(("10.0.0.3", 1))), 508)
        self.assertEqual(self.permit(("10.0.0.1", 9)).cls, StunClass.SUCCESS)  # a refresh
        self.reactor.advance(300)
        self.assertEqual(self.permit(("10.0.0.3", 1)).cls, StunClass.SUCCESS)

    def test_bandwidth(self) -> None:
        """Beyond max-bps bytes in a second, datagrams are dropped and counted."""
        self.startTurn(maxBps=1000)
        relayed = self.relayed(self.allocate())
        self.permit(PEER)
        for _ in range(3):
            self.send(PEER, b"x" * 400)
        self.assertEqual(len(self.relaySocket(relayed).transport.written), 2)
        self.reactor.advance(1)
        self.send(PEER, b"x" * 400)
        self.assertEqual(len(self.relaySocket(relayed).transport.written), 3)
        self.assertEqual(self.turn.stats.counters["turn.dropped.bandwidth"], 1)

    def test_totalBandwidth(self) -> None:
        """The total limit applies across allocations."""
        self.startTurn(bpsCapacity=500)
        relayed = self.relayed(self.allocate())
        self.permit(PEER)
        self.send(PEER, b"x" * 400)
        self.send(PEER, b"x" * 400)
        self.assertEqual(len(self.relaySocket(relayed).transport.written), 1)


class ChannelTests(TurnMixin, SynchronousTestCase):
    """ChannelBind (12.2) and ChannelData (12.4-12.7)."""

    def bind(self, channel: int, peer: tuple[str, int], source=CLIENT) -> Message:  # noqa: ANN001
        message = Message(Method.CHANNEL_BIND, StunClass.REQUEST)
        message.add(Attr.CHANNEL_NUMBER, encodeChannelNumber(channel))
        message.add(*self.peerAttr(peer, message.transactionId))
        self.udp.datagramReceived(self.sign(message), source)
        return self.onlyReply()

    def test_channelData(self) -> None:
        """ChannelData goes to the bound peer; the peer's datagrams come back as
        ChannelData; the binding installed the permission."""
        self.startTurn()
        relayed = self.relayed(self.allocate())
        self.assertEqual(self.bind(0x4000, PEER).cls, StunClass.SUCCESS)
        self.udp.datagramReceived(encodeChannelData(0x4000, b"ping"), CLIENT)
        relay = self.relaySocket(relayed)
        self.assertEqual(relay.transport.written, [(b"ping", PEER)])
        relay.datagramReceived(b"pong!", PEER)
        [(data, destination)] = self.replies()
        self.assertEqual((splitChannelData(data), destination), ((0x4000, b"pong!"), CLIENT))
        self.assertEqual(len(data), 9)  # no padding over UDP
        relay.datagramReceived(b"other", ("127.0.0.1", 1))  # same IP, other port: Data
        self.assertEqual(decode(self.replies()[0][0]).method, Method.DATA)
        self.assertEqual(self.turn.stats.snapshot()["turn.channels"], 1)

    def test_aroundTheFirstBind(self) -> None:
        """Issue 14 item 2 / RFC 8656 §12: the ChannelBind success response leaves
        before anything is sent on the channel; until the client shows it has that
        response (ChannelData from it, or the same ChannelBind again) or a moment has
        passed, the peer's datagrams still come as Data indications (understood by
        every client), then as ChannelData; Data indications never follow ChannelData
        for a peer while its channel lives."""
        from p2pnet.services.turn_allocation import CHANNEL_CONFIRM_DELAY
        self.startTurn()
        relayed = self.relayed(self.allocate())
        relay = self.relaySocket(relayed)
        self.request(Method.CREATE_PERMISSION, self.peerAttr(PEER))
        relay.datagramReceived(b"before", PEER)
        self.assertEqual(decode(self.replies()[0][0]).method, Method.DATA)
        message = Message(Method.CHANNEL_BIND, StunClass.REQUEST)
        message.add(Attr.CHANNEL_NUMBER, encodeChannelNumber(0x4000))
        message.add(*self.peerAttr(PEER, message.transactionId))
        self.udp.datagramReceived(self.sign(message), CLIENT)
        relay.datagramReceived(b"racing", PEER)  # the bind is accepted; the client
        out = self.replies()                     # may not have the answer yet
        self.assertEqual([decode(d).cls for d, _ in out], [StunClass.SUCCESS,
                                                            StunClass.INDICATION])
        self.assertEqual(decode(out[1][0]).get(Attr.DATA), b"racing")
        self.reactor.advance(CHANNEL_CONFIRM_DELAY)
        relay.datagramReceived(b"after", PEER)
        [(data, _)] = self.replies()
        self.assertEqual(splitChannelData(data), (0x4000, b"after"))
        # A second binding is confirmed at once by the client's first ChannelData.
        other = ("127.0.0.1", 50001)
        self.assertEqual(self.bind(0x4001, other).cls, StunClass.SUCCESS)
        self.udp.datagramReceived(encodeChannelData(0x4001, b"hi"), CLIENT)
        relay.datagramReceived(b"back", other)
        [(data, _)] = self.replies()
        self.assertEqual(splitChannelData(data), (0x4001, b"back"))
        # A retransmitted ChannelBind (the client lost the answer) confirms it too.
        third = ("127.0.0.1", 50002)
        self.bind(0x4002, third)
        self.bind(0x4002, third)
        relay.datagramReceived(b"third", third)
        [(data, _)] = self.replies()
        self.assertEqual(splitChannelData(data), (0x4002, b"third"))

    def test_badChannelData(self) -> None:
        """Unbound channels, short frames and unknown 5-tuples are dropped and counted."""
        self.startTurn()
        self.udp.datagramReceived(encodeChannelData(0x4000, b"x"), CLIENT)
        relayed = self.relayed(self.allocate())
        self.udp.datagramReceived(encodeChannelData(0x4001, b"x"), CLIENT)
        self.udp.datagramReceived(encodeChannelData(0x4000, b"xyz")[:5], CLIENT)
        self.assertEqual(self.relaySocket(relayed).transport.written, [])
        counters = self.turn.stats.counters
        self.assertEqual((counters["turn.dropped.no_allocation"],
                          counters["turn.dropped.no_channel"],
                          counters["turn.dropped.bad_channeldata"]), (1, 1, 1))

    def test_invalid(self) -> None:
        """Missing attributes or a number out of range: 400; a refused peer: 403."""
        self.startTurn()
        self.allocate()
        self.assertEqual(errorCode(self.request(Method.CHANNEL_BIND)), 400)
        self.assertEqual(errorCode(self.bind(0x3FFF, PEER)), 400)
        self.assertEqual(errorCode(self.bind(0x7FFF, PEER)), 400)
        self.assertEqual(errorCode(self.bind(0x4000, ("10.0.0.1", 1))), 403)

    def test_rebinding(self) -> None:
        """A number bound to another peer, or a peer bound to another number: 400; the
        same pair refreshes."""
        self.startTurn()
        self.allocate()
        self.bind(0x4000, PEER)
        self.assertEqual(errorCode(self.bind(0x4000, ("127.0.0.1", 1))), 400)
        self.assertEqual(errorCode(self.bind(0x4001, PEER)), 400)
        self.assertEqual(self.bind(0x4000, PEER).cls, StunClass.SUCCESS)

    def test_expiry(self) -> None:
        """A binding lasts 600 s, its number stays reserved 300 s more, then it is free."""
        self.startTurn(maxLifetime=3600)
        relayed = self.relayed(self.allocate((Attr.LIFETIME, encodeUInt32(3600))))
        self.bind(0x4000, PEER)
        self.reactor.advance(299)
        self.request(Method.CREATE_PERMISSION, self.peerAttr(PEER))  # keep the permission
        self.reactor.advance(301)
        self.udp.datagramReceived(encodeChannelData(0x4000, b"late"), CLIENT)
        self.assertEqual(self.relaySocket(relayed).transport.written, [])
        self.assertEqual(errorCode(self.bind(0x4000, ("127.0.0.1", 1))), 400)
        self.reactor.advance(300)
        self.assertEqual(self.bind(0x4000, ("127.0.0.1", 1)).cls, StunClass.SUCCESS)

    def test_totalLimit(self) -> None:
        """Channels of all allocations together are bounded too: 508 beyond; a deleted
        allocation gives its bindings back."""
        self.startTurn(maxChannelsTotal=1)
        self.allocate()
        self.bind(0x4000, PEER)
        self.allocate(source=("127.0.0.1", 2))
        self.assertEqual(errorCode(self.bind(0x4000, PEER, source=("127.0.0.1", 2))), 508)
        self.request(Method.REFRESH, (Attr.LIFETIME, encodeUInt32(0)))
        self.assertEqual(self.turn.budget.channels, 0)
        self.assertEqual(self.bind(0x4000, PEER, source=("127.0.0.1", 2)).cls,
                         StunClass.SUCCESS)

    def test_limit(self) -> None:
        """More channels than the limit: 508."""
        self.startTurn(maxChannels=1)
        self.allocate()
        self.bind(0x4000, PEER)
        self.assertEqual(errorCode(self.bind(0x4001, ("127.0.0.1", 1))), 508)


class StreamTests(TurnMixin, SynchronousTestCase):
    """TURN over a TCP control connection."""

    def connect(self):  # noqa: ANN201
        factory = next(iter(self.reactor.streamPorts.values()))
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001))
        transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 3478),
                                    peerAddress=IPv4Address("TCP", "127.0.0.1", 40001))
        protocol.makeConnection(transport)
        return protocol, transport

    def exchange(self, protocol, transport, message: Message) -> Message:  # noqa: ANN001
        protocol.dataReceived(self.sign(message))
        data = transport.value()
        transport.clear()
        return decode(data)

    def test_streamAllocation(self) -> None:
        """Allocate over TCP; peer data comes back as padded ChannelData; closing the
        connection deletes the allocation."""
        self.startTurn()
        protocol, transport = self.connect()
        protocol.dataReceived(Message(Method.ALLOCATE, StunClass.REQUEST).encode())
        self.nonce = decode(transport.value()).get(Attr.NONCE)
        transport.clear()
        allocate = Message(Method.ALLOCATE, StunClass.REQUEST)
        allocate.add(Attr.REQUESTED_TRANSPORT, encodeRequestedTransport(PROTOCOL_UDP))
        reply = self.exchange(protocol, transport, allocate)
        relayed = self.relayed(reply)
        self.assertEqual(str(next(iter(self.turn.allocations.values())).fiveTuple),
                         "tcp 127.0.0.1:40001->127.0.0.1:3478")
        bind = Message(Method.CHANNEL_BIND, StunClass.REQUEST)
        bind.add(Attr.CHANNEL_NUMBER, encodeChannelNumber(0x4000))
        bind.add(*self.peerAttr(PEER, bind.transactionId))
        self.assertEqual(self.exchange(protocol, transport, bind).cls, StunClass.SUCCESS)
        protocol.dataReceived(encodeChannelData(0x4000, b"abcde", pad=True))
        self.assertEqual(self.relaySocket(relayed).transport.written, [(b"abcde", PEER)])
        self.relaySocket(relayed).datagramReceived(b"xyz", PEER)
        self.assertEqual(transport.value(), struct.pack("!HH", 0x4000, 3) + b"xyz\0")
        protocol.connectionLost(None)
        self.assertEqual(self.turn.allocations, {})
        self.assertEqual(self.turn.stats.counters["turn.allocations.deleted"], 1)


class StopTests(TurnMixin, SynchronousTestCase):
    """Stopping the service."""

    def test_stop(self) -> None:
        """Stopping deletes every allocation, cancels timers and unhooks from STUN."""
        self.startTurn()
        relayed = self.relayed(self.allocate())
        self.turn.stopService()
        self.assertEqual(self.turn.allocations, {})
        self.assertTrue(self.relaySocket(relayed).transport.stopped)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertNotIn(Method.ALLOCATE, self.stun.methods)
        self.assertIsNone(self.stun.channelDataHandler)


class TcpRelayTests(TurnMixin, SynchronousTestCase):
    """RFC 6062: TCP allocations, Connect, ConnectionAttempt, ConnectionBind."""

    clientPort = 41000

    def connect(self):  # noqa: ANN201
        """A new TCP connection to the STUN port: (protocol, transport)."""
        self.clientPort += 1
        factory = next(iter(self.reactor.streamPorts.values()))
        address = IPv4Address("TCP", "127.0.0.1", self.clientPort)
        protocol = factory.buildProtocol(address)
        transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 3478),
                                    peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport

    def exchange(self, link, message: Message, signed: bool = True) -> Message:  # noqa: ANN001
        protocol, transport = link
        protocol.dataReceived(self.sign(message) if signed else message.encode())
        data = transport.value()
        transport.clear()
        return decode(data)

    def control(self, *extra: tuple[int, bytes]):  # noqa: ANN201
        """A control connection with a TCP allocation; its relayed address."""
        link = self.connect()
        self.nonce = self.exchange(link, Message(Method.ALLOCATE, StunClass.REQUEST),
                                   signed=False).get(Attr.NONCE)
        allocate = Message(Method.ALLOCATE, StunClass.REQUEST)
        allocate.add(Attr.REQUESTED_TRANSPORT, encodeRequestedTransport(PROTOCOL_TCP))
        for attribute in extra:
            allocate.add(*attribute)
        reply = self.exchange(link, allocate)
        return link, reply

    def permit(self, link, peer: tuple[str, int]) -> None:  # noqa: ANN001
        message = Message(Method.CREATE_PERMISSION, StunClass.REQUEST)
        message.add(*self.peerAttr(peer, message.transactionId))
        self.assertEqual(self.exchange(link, message).cls, StunClass.SUCCESS)

    def connectRequest(self, link, peer: tuple[str, int] | None = PEER) -> Message:  # noqa: ANN001
        message = Message(Method.CONNECT, StunClass.REQUEST)
        if peer is not None:
            message.add(*self.peerAttr(peer, message.transactionId))
        return message

    def peerUp(self, factory, peer: tuple[str, int] = PEER):  # noqa: ANN001, ANN201
        """Complete a connection made through C{factory}: (protocol, transport)."""
        protocol = factory.buildProtocol(IPv4Address("TCP", *peer))
        transport = StringTransport(peerAddress=IPv4Address("TCP", *peer))
        protocol.makeConnection(transport)
        return protocol, transport

    def bind(self, connectionId: bytes):  # noqa: ANN201
        link = self.connect()
        message = Message(Method.CONNECTION_BIND, StunClass.REQUEST)
        message.add(Attr.CONNECTION_ID, connectionId)
        return link, self.exchange(link, message)

    def test_allocate(self) -> None:
        """A TCP allocation listens on its relayed address; EVEN-PORT is refused."""
        self.startTurn()
        _, reply = self.control()
        host, port = self.relayed(reply)
        self.assertIn((port, host), [(p[0], p[3]) for p in self.reactor.tcpServers])
        _, reply = self.control((Attr.EVEN_PORT, encodeEvenPort(False)))
        self.assertEqual(errorCode(reply), 400)

    def test_connectAndBind(self) -> None:
        """Connect opens a connection from the relayed address; its CONNECTION-ID binds a new
        client connection; then bytes flow both ways, buffered ones first."""
        self.startTurn()
        control, reply = self.control()
        relayed = self.relayed(reply)
        control[0].dataReceived(self.sign(self.connectRequest(control)))
        host, port, factory, timeout, bindAddress = self.reactor.tcpClients[-1]
        self.assertEqual(((host, port), timeout, bindAddress), (PEER, 30, relayed))
        peer, peerTransport = self.peerUp(factory)
        reply = decode(control[1].value())
        control[1].clear()
        self.assertEqual(reply.cls, StunClass.SUCCESS)
        connectionId = reply.get(Attr.CONNECTION_ID)
        peer.dataReceived(b"early")
        self.assertEqual(errorCode(self.exchange(control, self.connectRequest(control))), 446)
        (data, dataTransport), reply = self.bind(b"\0\0\0\0")
        self.assertEqual(errorCode(reply), 400)
        data, dataTransport = self.connect()
        message = Message(Method.CONNECTION_BIND, StunClass.REQUEST)
        message.add(Attr.CONNECTION_ID, connectionId)
        data.dataReceived(self.sign(message))
        out = dataTransport.value()
        size = 20 + struct.unpack("!H", out[2:4])[0]
        self.assertEqual(decode(out[:size]).cls, StunClass.SUCCESS)
        self.assertEqual(out[size:], b"early")  # after the response, as-is
        dataTransport.clear()
        dataTransport.write(b"early")
        data.dataReceived(b"\xff raw bytes, not STUN")
        self.assertEqual(peerTransport.value(), b"\xff raw bytes, not STUN")
        peer.dataReceived(b"back")
        self.assertEqual(dataTransport.value(), b"earlyback")
        self.assertIs(dataTransport.producer, peerTransport)
        self.assertIs(peerTransport.producer, dataTransport)
        # RFC 6062 5.5: closing the client data connection closes the peer's.
        data.connectionLost(None)
        self.assertTrue(peerTransport.disconnecting)
        peer.connectionLost(None)
        self.assertEqual(next(iter(self.turn.allocations.values())).connections, {})

    def test_counters(self) -> None:
        """Issue 14 item 5: bytes through an RFC 6062 pair are counted per allocation
        and in the service's counters, and the deletion log line says so."""
        self.startTurn()
        control, _ = self.control()
        control[0].dataReceived(self.sign(self.connectRequest(control)))
        peer, peerTransport = self.peerUp(self.reactor.tcpClients[-1][2])
        connectionId = decode(control[1].value()).get(Attr.CONNECTION_ID)
        control[1].clear()
        peer.dataReceived(b"early")
        data, dataTransport = self.connect()
        message = Message(Method.CONNECTION_BIND, StunClass.REQUEST)
        message.add(Attr.CONNECTION_ID, connectionId)
        data.dataReceived(self.sign(message))
        data.dataReceived(b"0123456789")
        peer.dataReceived(b"abc")
        allocation = next(iter(self.turn.allocations.values()))
        self.assertEqual((allocation.bytesOut, allocation.packetsOut,
                          allocation.bytesIn, allocation.packetsIn), (10, 1, 8, 2))
        counters = self.turn.stats.counters
        self.assertEqual((counters["turn.bytes.to_peer"], counters["turn.bytes.from_peer"]),
                         (10, 8))
        self.assertEqual(self.turn.tcp.connections, 1)
        events: list[dict] = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        control[0].connectionLost(None)
        deleted = [e for e in events if e.get("event") == "turn.allocation.deleted"]
        self.assertEqual((deleted[0]["bytesOut"], deleted[0]["bytesIn"]), (10, 8))
        peer.connectionLost(None)
        self.assertEqual((self.turn.tcp.connections, self.turn.tcp.pendingBytes), (0, 0))

    def test_connectionsBoundedInTotal(self) -> None:
        """RFC 6062 connections of all allocations together are bounded: a Connect past
        the total gets 508; a failed attempt gives its place back."""
        self.patch(turn_tcp, "MAX_TCP_CONNECTIONS_TOTAL", 1)
        self.startTurn()
        control, _ = self.control()
        control[0].dataReceived(self.sign(self.connectRequest(control)))
        factory = self.reactor.tcpClients[-1][2]
        self.assertEqual(self.turn.tcp.connections, 1)
        other = self.connectRequest(control, ("127.0.0.1", 50001))
        self.assertEqual(errorCode(self.exchange(control, other)), 508)
        factory.clientConnectionFailed(None, None)
        self.assertEqual(errorCode(decode(control[1].value())), 447)
        self.assertEqual(self.turn.tcp.connections, 0)

    def test_connectErrors(self) -> None:
        """No peer: 400; a refused peer: 403; a failed connection: 447; Connect on a UDP
        allocation: 400."""
        self.startTurn(policy=PeerPolicy())
        control, _ = self.control()
        self.assertEqual(errorCode(self.exchange(control, self.connectRequest(control, None))),
                         400)
        self.assertEqual(errorCode(self.exchange(control, self.connectRequest(control))), 403)
        self.turn.policy = PeerPolicy(allowLoopback=True)
        control[0].dataReceived(self.sign(self.connectRequest(control)))
        factory = self.reactor.tcpClients[-1][2]
        factory.clientConnectionFailed(None, None)
        self.assertEqual(errorCode(decode(control[1].value())), 447)
        control[1].clear()
        self.allocate()
        self.assertEqual(errorCode(self.request(Method.CONNECT, self.peerAttr(PEER))), 400)

    def test_incomingPeer(self) -> None:
        """A peer with a permission connecting in is announced with ConnectionAttempt; one
        without is refused; an unbound connection closes after 30 seconds."""
        self.startTurn()
        control, _ = self.control()
        factory = self.reactor.tcpServers[-1][1]
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", *PEER)))
        self.permit(control, PEER)
        peer, peerTransport = self.peerUp(factory, ("127.0.0.1", 50123))
        indication = decode(control[1].value())
        self.assertEqual((indication.method, indication.cls),
                         (Method.CONNECTION_ATTEMPT, StunClass.INDICATION))
        self.assertEqual(stun.decodeXorAddress(indication.get(Attr.XOR_PEER_ADDRESS),
                                               indication.transactionId),
                         ("127.0.0.1", 50123))
        self.assertEqual(len(indication.get(Attr.CONNECTION_ID)), 4)
        self.reactor.advance(30)
        self.assertTrue(peerTransport.disconnecting)

    def test_allocationEndClosesConnections(self) -> None:
        """Deleting the allocation closes its peer data connections."""
        self.startTurn()
        control, _ = self.control()
        self.permit(control, PEER)
        _, peerTransport = self.peerUp(self.reactor.tcpServers[-1][1])
        control[0].connectionLost(None)
        self.assertTrue(peerTransport.disconnecting)
        self.assertEqual(self.turn.allocations, {})


class FuzzTests(TurnMixin, SynchronousTestCase):
    """Signed TURN requests and indications with random attributes, and random
    ChannelData: answered or dropped, never a handler error."""

    @settings(max_examples=300, deadline=None)
    @given(
        method=st.sampled_from([Method.ALLOCATE, Method.REFRESH, Method.CREATE_PERMISSION,
                                Method.CHANNEL_BIND, Method.CONNECT, Method.CONNECTION_BIND,
                                Method.SEND]),
        attributes=st.lists(st.tuples(
            st.sampled_from([Attr.REQUESTED_TRANSPORT, Attr.LIFETIME, Attr.XOR_PEER_ADDRESS,
                             Attr.CHANNEL_NUMBER, Attr.EVEN_PORT, Attr.RESERVATION_TOKEN,
                             Attr.REQUESTED_ADDRESS_FAMILY, Attr.ADDITIONAL_ADDRESS_FAMILY,
                             Attr.DONT_FRAGMENT, Attr.CONNECTION_ID, Attr.DATA]),
            st.binary(max_size=24)), max_size=5),
        channelData=st.binary(max_size=40),
        indication=st.booleans(),
    )
    def test_randomRequests(self, method: int, attributes: list, channelData: bytes,
                            indication: bool) -> None:
        if not hasattr(self, "turn"):
            self.startTurn()
            self.allocate()
            self.replies()
        message = Message(method, StunClass.INDICATION if indication else StunClass.REQUEST,
                          attributes=list(attributes))
        self.udp.datagramReceived(self.sign(message), CLIENT)
        self.udp.datagramReceived(b"\x40" + channelData, CLIENT)
        self.replies()
        self.assertEqual(self.stun.stats.counters["stun.internal_errors"], 0)
        self.assertEqual(self.turn.stats.counters["turn.internal_errors"], 0)


class FakeUserStore:
    """The durable user table in memory (what L{UserStore} offers the service)."""

    def __init__(self) -> None:
        self.users: dict[str, tuple[str, str]] = {}
        self.created: dict[str, int] = {}

    def all(self) -> Any:
        from p2pnet.store.users import StoredUser
        return succeed({name: StoredUser(realm, longTermKey(name, realm, pw),
                                         longTermKey(name, realm, pw, 2), b"h" * 32)
                        for name, (pw, realm) in self.users.items()})

    def list(self) -> Any:
        return succeed([(name, realm, self.created[name])
                        for name, (_, realm) in sorted(self.users.items())])

    def add(self, name: str, password: str, realm: str, now: float) -> Any:
        new = name not in self.users
        self.users[name] = (password, realm)
        self.created.setdefault(name, int(now))
        return succeed(new)

    def remove(self, name: str) -> Any:
        return succeed(self.users.pop(name, None) is not None)

    def close(self) -> None:
        pass


class OperatorTests(TurnMixin, SynchronousTestCase):
    """What the gateway's turn.allocations.list and turn.users.* call."""

    def test_allocationsListing(self) -> None:
        """listing("allocations") gives one JSON-ready row per allocation."""
        self.startTurn()
        host, port = self.relayed(self.allocate())
        self.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, encodeChannelNumber(0x4000)),
                     self.peerAttr(PEER))
        [row] = self.turn.listing("allocations")
        self.assertEqual((row["user"], row["client"], row["transport"], row["relayed"]),
                         ("alice", "127.0.0.1:40000", "udp", [f"{host}:{port}"]))
        self.assertEqual(row["channels"], [{"number": 0x4000, "peer": "127.0.0.1:50000"}])
        self.assertEqual(row["permissions"], ["127.0.0.1"])
        json.dumps(row)
        self.assertRaises(KeyError, self.turn.listing, "nonsense")

    def test_users(self) -> None:
        """users add/list/remove go to the durable table and are in force at once;
        removing a user ends its allocations; bad params are ValueError."""
        from p2pnet.services.turn_credentials import ChainedCredentials, StoredUsers
        store = FakeUserStore()
        table = StoredUsers(store, Clock())  # type: ignore[arg-type]
        self.startTurn(credentials=ChainedCredentials([table]), userTable=table)
        result = self.successResultOf(self.turn.manage("users", "add",
                                                       {"name": "carol", "password": "pw"}))
        self.assertEqual(result, {"name": "carol", "created": True})
        self.assertEqual(store.users["carol"], ("pw", REALM))
        rows = self.successResultOf(self.turn.listing("users"))
        self.assertEqual(rows, [{"name": "carol", "realm": REALM,
                                 "createdAt": int(self.reactor.seconds())}])
        self.assertEqual(self.allocate(user="carol", password="pw").cls, StunClass.SUCCESS)
        result = self.successResultOf(self.turn.manage("users", "remove", {"name": "carol"}))
        self.assertEqual(result, {"name": "carol", "removed": True, "allocationsEnded": 1})
        self.assertEqual(self.turn.allocations, {})
        self.assertRaises(ValueError, self.turn.manage, "users", "add", {"name": "x"})
        self.assertRaises(ValueError, self.turn.manage, "users", "remove", {"name": 3})
        self.assertRaises(KeyError, self.turn.manage, "users", "rename", {"name": "x"})
