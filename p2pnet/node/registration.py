# -*- test-case-name: test.unit.test_node_registration -*-
"""The node's registration with its rendezvous server, over UDP or a kept TCP/WS link.

L{UdpRegistration} is RustDesk's loop (rustdesk.md §6.1): a 1 s timer on the reactor's
clock asks L{RegistrationState} what to send; replies come back on the same socket;
after four timeouts in a row the socket is re-created (at most once a minute), which
also resolves the server's name again.

L{StreamRegistration} keeps one TCP (or WebSocket) link instead, for networks that
block UDP (rustdesk.md §4.17, p2pnet's server answers it): C{RegisterPk} on every new
link and again every 15 s while unconfirmed, requests arrive on the link, heartbeats
are answered by the link itself, and a link silent for 1.5 x keep-alive is dropped.
A lost or refused link is retried with exponential back-off (1 s doubling to 30 s).

Both hand every PunchHole, FetchLocalAddr and RequestRelay to C{onRequest} and report a
changed id (after UUID_MISMATCH) to C{onNewId}.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from p2pnet.codecs.proto.rendezvous_pb2 import RendezvousMessage
from p2pnet.codecs.rustdesk_register import REG_INTERVAL, TIMER, Outcome, RegistrationState
from p2pnet.ratelog import RateLimitedLog
from p2pnet.stats import Stats

__all__ = ["DEFAULT_KEEP_ALIVE", "StreamRegistration", "UdpRegistration"]

log = Logger()

#: TCP keep-alive (seconds) until the server announces one (rustdesk.md §4.4 DEFAULT_KEEP_ALIVE).
DEFAULT_KEEP_ALIVE = 60.0
#: Reconnect back-off of the stream mode: first delay and ceiling, in seconds.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0

RequestHandler = Callable[[RendezvousMessage], None]


class _Registration:
    """What both modes share: the state, the callbacks, outcome handling."""

    def __init__(self, reactor: Any, state: RegistrationState, onRequest: RequestHandler,
                 onNewId: Callable[[str], None], stats: Stats | None = None) -> None:
        self.reactor = reactor
        self.state = state
        self.onRequest = onRequest
        self.onNewId = onNewId
        self.stats = stats or Stats()
        self.badInput = RateLimitedLog(log, reactor)
        self.keepAlive = DEFAULT_KEEP_ALIVE
        #: Called with the server list of a ConfigUpdate that changed it (rustdesk.md §6.1 step 5).
        self.onServers: Callable[[tuple[str, ...]], None] | None = None
        self._loop: LoopingCall | None = None

    @property
    def status(self) -> str:
        """C{registered}, C{registering} or C{offline} (for C{kvm.status})."""
        if self.state.registered:
            return "registered"
        return "offline" if self.state.timeouts >= 2 else "registering"

    def _startTimer(self) -> None:
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self.reactor
        self._loop.start(TIMER, now=True)

    def _stopTimer(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def tick(self) -> None:
        """One timer tick."""
        raise NotImplementedError

    def send(self, message: RendezvousMessage) -> None:
        """Send one message to the server."""
        raise NotImplementedError

    def handle(self, message: RendezvousMessage) -> None:
        """Apply one message from the server."""
        outcome: Outcome = self.state.received(message, self.reactor.seconds())
        for reply in outcome.send:
            self.send(reply)
        if outcome.keepAlive:
            self.keepAlive = float(outcome.keepAlive)
        if outcome.newId is not None:
            log.warn("Rendezvous server: id taken by another device (UUID_MISMATCH); "
                     "now registering as {id}", id=outcome.newId)
            self.onNewId(outcome.newId)
        if outcome.confirmed:
            self.stats.add("registered")
        if outcome.failure:
            self.stats.add("register_failed")
            self.badInput.warn("register", "Rendezvous server refused registration: {why}",
                               why=outcome.failure)
        if outcome.servers:
            log.info("Rendezvous server lists servers {servers}",
                     servers=", ".join(outcome.servers))
            if self.onServers is not None:
                self.onServers(outcome.servers)
        if outcome.request is not None:
            self.onRequest(outcome.request)


class _Datagrams(DatagramProtocol):
    def __init__(self, owner: UdpRegistration) -> None:
        self.owner = owner

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.owner.datagramReceived(data, addr)


class UdpRegistration(_Registration):
    """RustDesk's UDP registration loop (rustdesk.md §6.1).

    @param server: the rendezvous server's C{(host, port)}; a name is resolved on start
        and on every rebind.
    """

    def __init__(self, reactor: Any, server: tuple[str, int], state: RegistrationState,
                 onRequest: RequestHandler, onNewId: Callable[[str], None],
                 stats: Stats | None = None) -> None:
        super().__init__(reactor, state, onRequest, onNewId, stats)
        self.server = server
        self.address: tuple[str, int] | None = None
        self._port: Any = None
        self._running = False

    def start(self) -> None:
        """Resolve, bind and start the timer."""
        self._running = True
        self._open()
        self._startTimer()

    def stop(self) -> Deferred[None] | None:
        """Stop the timer and close the socket."""
        self._running = False
        self._stopTimer()
        return self._close()

    def moveTo(self, server: tuple[str, int]) -> None:
        """Register with C{server} from now on: a new socket, the key registered anew."""
        self.server = server
        self.state.reset()
        if self._running:
            self._close()
            self._open()

    def _open(self) -> None:
        host, port = self.server
        try:
            ipaddress.ip_address(host)
        except ValueError:
            self.reactor.resolve(host).addCallbacks(
                lambda ip: self._bind((ip, port)),
                lambda f: self.badInput.warn("resolve", "cannot resolve {host}: {why}",
                                             host=host, why=f.getErrorMessage()))
            return
        self._bind((host, port))

    def _bind(self, address: tuple[str, int]) -> None:
        if not self._running:
            return
        self.address = address
        interface = "::" if ":" in address[0] else "0.0.0.0"
        self._port = self.reactor.listenUDP(0, _Datagrams(self), interface=interface)

    def _close(self) -> Deferred[None] | None:
        port, self._port = self._port, None
        return port.stopListening() if port is not None else None

    def tick(self) -> None:
        now = self.reactor.seconds()
        if self.state.shouldRebind(now):
            # rustdesk.md §6.1 step 2: four timeouts in a row: new socket, fresh name lookup.
            self.stats.add("rebind")
            self._close()
            self._open()
        message = self.state.due(now)
        if message is not None:
            self.send(message)

    def send(self, message: RendezvousMessage) -> None:
        if self._port is None or self.address is None:
            return
        self._port.write(message.SerializeToString(), self.address)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """One datagram: only the server's, only well-formed ones."""
        if self.address is None or (addr[0], addr[1]) != self.address:
            self.stats.add("stray_datagram")
            return
        try:
            message = RendezvousMessage.FromString(data)
        except (DecodeError, RuntimeError, ValueError):
            self.stats.add("bad_datagram")
            self.badInput.warn("udp", "undecodable datagram from the rendezvous server")
            return
        self.handle(message)


class StreamRegistration(_Registration):
    """Registration over one kept TCP or WebSocket link (rustdesk.md §4.17).

    @param connect: opens a link: a Deferred firing with an object with C{send},
        C{receive()} (Deferred of the next message), C{heartbeats}, C{closed} and
        C{transport} (L{p2pnet.protocols.rustdesk_client.MessageStream} or
        C{MessageWebSocket}).
    """

    def __init__(self, reactor: Any, connect: Callable[[], Deferred[Any]],
                 state: RegistrationState, onRequest: RequestHandler,
                 onNewId: Callable[[str], None], stats: Stats | None = None) -> None:
        super().__init__(reactor, state, onRequest, onNewId, stats)
        self.connect = connect
        self.link: Any = None
        self.delay = BACKOFF_FIRST
        self._running = False
        self._retry: IDelayedCall | None = None
        self._lastHeard = 0.0
        self._heartbeats = 0
        self._lastPk = 0.0

    def start(self) -> None:
        """Connect, and keep connecting."""
        self._running = True
        self._attempt()
        self._startTimer()

    def stop(self) -> None:
        """Close the link and stop reconnecting."""
        self._running = False
        self._stopTimer()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._drop()

    def _attempt(self) -> None:
        self._retry = None
        if not self._running:
            return
        self.connect().addCallbacks(self._connected, self._failed)

    def _connected(self, link: Any) -> None:
        if not self._running:
            link.transport.loseConnection()
            return
        self.link = link
        self.delay = BACKOFF_FIRST
        now = self.reactor.seconds()
        self._lastHeard = now
        self._heartbeats = link.heartbeats
        self.state.reset()  # a new link registers its key again
        self._sendPk(now)
        link.closed.addCallback(lambda _: self._lost(link))
        self._read(link)

    def _read(self, link: Any) -> None:
        def got(message: RendezvousMessage) -> None:
            if link is not self.link:
                return
            self._lastHeard = self.reactor.seconds()
            self.handle(message)
            self._read(link)

        link.receive().addCallbacks(got, lambda f: None)

    def _failed(self, failure: Any) -> None:
        self.stats.add("connect_failed")
        self.badInput.warn("connect", "cannot reach the rendezvous server: {why}",
                           why=failure.getErrorMessage())
        self._schedule()

    def _lost(self, link: Any) -> None:
        if link is self.link:
            self.link = None
            self.state.reset()
            self._schedule()

    def _schedule(self) -> None:
        if not self._running or self._retry is not None:
            return
        self._retry = self.reactor.callLater(self.delay, self._attempt)
        self.delay = min(self.delay * 2, BACKOFF_MAX)

    def moveTo(self, connect: Callable[[], Deferred[Any]]) -> None:
        """Open links with C{connect} from now on (another server): reconnect now."""
        self.connect = connect
        self._drop()
        self.state.reset()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self.delay = BACKOFF_FIRST
        if self._running:
            self._attempt()

    def _drop(self) -> None:
        link, self.link = self.link, None
        if link is not None and link.transport is not None:
            link.transport.loseConnection()

    def _sendPk(self, now: float) -> None:
        self._lastPk = now
        self.state.sent(now)
        self.send(self.state.registerPk())

    def tick(self) -> None:
        link = self.link
        if link is None:
            return
        now = self.reactor.seconds()
        if link.heartbeats != self._heartbeats:
            self._heartbeats = link.heartbeats
            self._lastHeard = now
        if now - self._lastHeard >= self.keepAlive * 1.5:
            self.stats.add("link_silent")
            log.info("Rendezvous link silent for {s:.0f} s; reconnecting",
                     s=now - self._lastHeard)
            self._drop()
            self.state.reset()
            self._schedule()
            return
        if not self.state.keyConfirmed and now - self._lastPk >= REG_INTERVAL:
            self._sendPk(now)

    def send(self, message: RendezvousMessage) -> None:
        if self.link is not None:
            self.link.send(message)

    @property
    def status(self) -> str:
        """C{registered} while the link is up and the key confirmed."""
        if self.link is not None and self.state.keyConfirmed:
            return "registered"
        return "registering" if self.link is not None else "offline"
