# -*- test-case-name: test.unit.test_rustdesk_register -*-
"""The controlled peer's registration rules (rustdesk.md §6.1), sans-IO.

L{RegistrationState} decides what a RustDesk peer sends to its rendezvous server and
when; time is a parameter (seconds), so the Twisted loops that drive it
(L{p2pnet.node.registration}, the conformance client's C{UDPRegistration}) own the
timers and the sockets, and the rules are tested without either.

UDP mode (rustdesk.md §6.1): every L{TIMER} seconds call L{RegistrationState.due}; it returns the
message to send when nothing is outstanding and the last reply is L{REG_INTERVAL} old
(or there was none), or when an outstanding registration has waited L{REG_TIMEOUT}.
L{RegistrationState.received} takes each reply and returns what to send at once plus
what happened. L{DuplicateFilter} drops a repeated PunchHole/FetchLocalAddr or
RequestRelay for the same controller address within 100 ms (rustdesk.md §6.1 step 6).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from p2pnet.codecs import addrmangle
from p2pnet.codecs.proto.rendezvous_pb2 import (
    RegisterPeer,
    RegisterPk,
    RegisterPkResponse,
    RendezvousMessage,
)

__all__ = [
    "DUPLICATE_WINDOW",
    "DuplicateFilter",
    "NOT_DEPLOYED_BACKOFF",
    "REG_INTERVAL",
    "REG_TIMEOUT",
    "REBIND_AFTER",
    "REBIND_INTERVAL",
    "RegistrationState",
    "Outcome",
    "TIMER",
    "newRandomId",
]

#: Seconds between timer ticks (rustdesk.md §6.1 step 2, C{TIMER_OUT}).
TIMER = 1.0
#: Re-register when the last reply is this old (C{REG_INTERVAL}).
REG_INTERVAL = 15.0
#: An outstanding registration times out after this long (C{MIN_REG_TIMEOUT}).
REG_TIMEOUT = 3.0
#: Consecutive timeouts after which the socket is re-created (rebound, re-resolved).
REBIND_AFTER = 4
#: ... at most once per this many seconds.
REBIND_INTERVAL = 60.0
#: Pause after C{RegisterPkResponse{NOT_DEPLOYED}} (rustdesk.md §6.1 step 4).
NOT_DEPLOYED_BACKOFF = 30.0
#: A request naming the same controller address again within this window is dropped.
DUPLICATE_WINDOW = 0.1

Result = RegisterPkResponse.Result


def newRandomId() -> str:
    """A random ten-digit id, as RustDesk picks after C{UUID_MISMATCH} (rustdesk.md §4.3)."""
    return str(1_000_000_000 + secrets.randbelow(1_000_000_000))


@dataclass
class Outcome:
    """What one received message did.

    @ivar send: messages to send to the server now.
    @ivar confirmed: the server confirmed the key (C{RegisterPkResponse{OK}}).
    @ivar newId: the id changed after C{UUID_MISMATCH} (the new id), else C{None}.
    @ivar keepAlive: seconds from C{RegisterPkResponse.keep_alive} (0: not given).
    @ivar servers: the rendezvous servers of a C{ConfigUpdate} that changed them.
    @ivar request: a PunchHole, FetchLocalAddr or RequestRelay to answer.
    @ivar failure: a registration error worth a log line (C{TOO_FREQUENT}, ...).
    """

    send: list[RendezvousMessage] = field(default_factory=list)
    confirmed: bool = False
    newId: str | None = None
    keepAlive: int = 0
    servers: tuple[str, ...] | None = None
    request: RendezvousMessage | None = None
    failure: str | None = None


class RegistrationState:
    """The registration state of one peer: its id, key, and what is outstanding.

    @param peerId: the id to register; changed by C{UUID_MISMATCH}.
    @param uuid: opaque bytes identifying this device (kept across restarts).
    @param pk: the peer's 32-byte Ed25519 public key.
    @param newId: makes the replacement id after C{UUID_MISMATCH}.
    @ivar keyConfirmed: the server has acknowledged C{RegisterPk} (then C{RegisterPeer}
        is enough).
    @ivar timeouts: consecutive registrations without a reply.
    """

    def __init__(self, peerId: str, uuid: bytes, pk: bytes,
                 newId: Callable[[], str] = newRandomId) -> None:
        self.peerId = peerId
        self.uuid = uuid
        self.pk = pk
        self.newId = newId
        self.keyConfirmed = False
        self.serial = 0
        self.servers: tuple[str, ...] = ()
        self.timeouts = 0
        self.lastReply: float | None = None
        self.outstandingSince: float | None = None
        self.pausedUntil = 0.0
        self._lastRebind: float | None = None

    def registration(self) -> RendezvousMessage:
        """C{RegisterPk} while the key is unconfirmed, else C{RegisterPeer} (rustdesk.md §6.1 step 2)."""
        if self.keyConfirmed:
            return RendezvousMessage(register_peer=RegisterPeer(id=self.peerId,
                                                                serial=self.serial))
        return self.registerPk()

    def registerPk(self) -> RendezvousMessage:
        """C{RegisterPk{id, uuid, pk}}."""
        return RendezvousMessage(register_pk=RegisterPk(id=self.peerId, uuid=self.uuid,
                                                        pk=self.pk))

    @property
    def registered(self) -> bool:
        """The key is confirmed and the last registration was answered."""
        return self.keyConfirmed and self.lastReply is not None and self.timeouts == 0

    def due(self, now: float) -> RendezvousMessage | None:
        """One timer tick: the registration to send now, or C{None} (rustdesk.md §6.1 step 2)."""
        if now < self.pausedUntil:
            return None
        expired = self.lastReply is None or now - self.lastReply >= REG_INTERVAL
        outstanding = self.outstandingSince is not None
        timedOut = outstanding and now - self.outstandingSince >= REG_TIMEOUT  # type: ignore[operator]
        if timedOut:
            self.timeouts += 1
        if timedOut or (not outstanding and expired):
            self.outstandingSince = now
            return self.registration()
        return None

    def shouldRebind(self, now: float) -> bool:
        """After L{REBIND_AFTER} timeouts, at most once per L{REBIND_INTERVAL}: re-create
        the socket (rebind, resolve the server again)."""
        if self.timeouts < REBIND_AFTER:
            return False
        if self._lastRebind is not None and now - self._lastRebind < REBIND_INTERVAL:
            return False
        self._lastRebind = now
        return True

    def sent(self, now: float) -> None:
        """A registration was sent outside L{due} (an immediate reply)."""
        self.outstandingSince = now

    def received(self, message: RendezvousMessage, now: float) -> Outcome:
        """Apply one message from the server (rustdesk.md §6.1 steps 3-6)."""
        out = Outcome()
        kind = message.WhichOneof("union")
        if kind in ("register_peer_response", "register_pk_response"):
            self.lastReply = now
            self.outstandingSince = None
            self.timeouts = 0
        if kind == "register_peer_response":
            if message.register_peer_response.request_pk:
                self.keyConfirmed = False
                out.send.append(self.registerPk())
                self.outstandingSince = now
        elif kind == "register_pk_response":
            self._pkResponse(message.register_pk_response, now, out)
        elif kind == "configure_update":
            cu = message.configure_update
            servers = tuple(cu.rendezvous_servers)
            self.serial = cu.serial
            if servers and servers != self.servers:
                out.servers = servers
            self.servers = servers
        elif kind in ("punch_hole", "fetch_local_addr", "request_relay"):
            out.request = message
        return out

    def _pkResponse(self, reply: RegisterPkResponse, now: float, out: Outcome) -> None:
        if reply.keep_alive > 0:
            out.keepAlive = reply.keep_alive
        if reply.result == Result.OK:
            self.keyConfirmed = True
            out.confirmed = True
        elif reply.result == Result.UUID_MISMATCH:
            # rustdesk.md §6.1 step 4 / §4.3: another device holds this id: take a new one and
            # register it (One-KVM keeps the id and loops here).
            self.peerId = out.newId = self.newId()
            self.keyConfirmed = False
            out.send.append(self.registerPk())
            self.outstandingSince = now
        elif reply.result == Result.NOT_DEPLOYED:
            self.pausedUntil = now + NOT_DEPLOYED_BACKOFF
            out.failure = "NOT_DEPLOYED"
        else:
            out.failure = Result.Name(reply.result)

    def reset(self) -> None:
        """A new link (TCP/WS mode, or a rebound socket): register the key again."""
        self.keyConfirmed = False
        self.lastReply = None
        self.outstandingSince = None


class DuplicateFilter:
    """Drops a request whose controller address repeats within L{DUPLICATE_WINDOW}.

    PunchHole and FetchLocalAddr share one record, RequestRelay has its own (rustdesk.md §6.1
    step 6): hbbs may deliver a request twice (UDP retries, two links).
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[tuple[str, int], float]] = {}

    def fresh(self, message: RendezvousMessage, now: float) -> bool:
        """Whether C{message} should be handled (and remember it)."""
        kind = message.WhichOneof("union")
        slot = "relay" if kind == "request_relay" else "punch"
        inner = getattr(message, kind or "punch_hole")
        addr = addrmangle.decode(bytes(inner.socket_addr))
        last = self._last.get(slot)
        self._last[slot] = (addr, now)
        return not (last is not None and last[0] == addr and now - last[1] < DUPLICATE_WINDOW)
