# -*- test-case-name: test.interop.test_node_e2e -*-
"""Answering the rendezvous server's requests (rustdesk.md §6.2-6.4).

- C{PunchHole}: relay when the controller's NAT is symmetric, relay is forced, or the
  node registers over WebSocket (rustdesk.md §6.2 step 3); otherwise connect to the server over TCP
  from a fresh local address L, send C{PunchHoleSent}, close, and listen on L for the
  controller (18 s) — the TCP punch (rustdesk.md §6.2 step 5).
- C{FetchLocalAddr}: the same with C{LocalAddr{local_addr: L}} (rustdesk.md §6.3), so the
  controller connects to the address the node advertised (not One-KVM's reuse of the
  server socket).
- C{RequestRelay}: C{RelayResponse} to the server, then the relay leg (rustdesk.md §6.4).

Every accepted or relayed stream becomes a L{PeerStream} with a session made by the
node (C{node.newSession(secure, source, path)}).
"""

from __future__ import annotations

import socket
import uuid as uuidlib
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from p2pnet.codecs import addrmangle
from p2pnet.codecs.proto.rendezvous_pb2 import (
    LocalAddr,
    NatType,
    PunchHoleSent,
    RelayResponse,
    RendezvousMessage,
    RequestRelay,
)
from p2pnet.codecs.rustdesk_frame import encodeFrame
from p2pnet.codecs.rustdesk_register import DuplicateFilter
from p2pnet.protocols.rustdesk_client import connectReusingPort, connectStream, splitHostPort
from p2pnet.protocols.rustdesk_peer import PeerStream
from p2pnet.ratelog import RateLimitedLog

__all__ = ["ACCEPT_TIMEOUT", "Mediator", "NODE_VERSION"]

log = Logger()

#: How long the node listens on L for the controller after a punch (rustdesk.md §6.2 step 5.4).
ACCEPT_TIMEOUT = 18.0
#: The version the node puts in its answers (non-empty: hbbs then signs our pk, rustdesk.md §4.10).
NODE_VERSION = "1.4.5"
DEFAULT_RELAY_PORT = 21117
#: Requests being answered plus punched addresses still listening, at most: more are
#: dropped and counted (a flood of PunchHoles must not open sockets without bound).
MAX_PENDING = 32
#: How long the NAT-opening connect from L towards the controller may take (rustdesk.md §6.2 5.2).
NAT_OPEN_TIME = 0.03


class _OneShot(Factory):
    """Accepts one connection on a punched address, then stops listening."""

    def __init__(self, mediator: Mediator, path: str) -> None:
        self.mediator = mediator
        self.path = path
        self.port: Any = None
        self.timer: Any = None
        self.used = False

    def buildProtocol(self, addr: Any) -> PeerStream | None:
        if self.used:
            return None
        self.used = True
        self.stop()
        return self.mediator.node.newSession(True, (addr.host, addr.port), self.path)

    def stop(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        port, self.port = self.port, None
        if port is not None:
            port.stopListening()


class Mediator:
    """Turns rendezvous requests into peer streams.

    @param node: gives C{peerId}, C{newSession(secure, source, path)} and C{stats}.
    @param server: the rendezvous server's C{(host, port)} (TCP answers go there).
    @param relay: C{host[:port]} overriding the relay the server names (C{node-relay}).
    @param licenceKey: sent on relay legs (the server's key, as a client's "Key").
    @param forceRelay: always answer with the relay (WebSocket mode, rustdesk.md §6.2 step 3).
    @ivar natType: this node's NAT type (L{p2pnet.node.nat.NatTest} sets it); behind a
        symmetric NAT every PunchHole is answered with the relay (rustdesk.md §6.2 step 3).
    """

    def __init__(self, reactor: Any, node: Any, server: tuple[str, int], *, relay: str = "",
                 licenceKey: str = "", forceRelay: bool = False) -> None:
        self.reactor = reactor
        self.node = node
        self.server = server
        self.relay = relay
        self.licenceKey = licenceKey
        self.forceRelay = forceRelay
        self.natType: int = NatType.UNKNOWN_NAT
        self.duplicates = DuplicateFilter()
        self.badInput = RateLimitedLog(log, reactor)
        self.listening: list[_OneShot] = []
        self.inFlight = 0
        self._natOpeners: dict[socket.socket, Any] = {}

    def stop(self) -> None:
        """Stop every pending punch listener."""
        for shot in self.listening:
            shot.stop()
        self.listening.clear()
        for sock, timer in list(self._natOpeners.items()):
            timer.cancel()
            self._closeOpener(sock)

    def relayFor(self, named: str) -> str:
        """rustdesk.md §6.2 step 2: our option, else the server's, else the server's host, port + 1."""
        if self.relay:
            return self.relay
        if named:
            return named
        host, port = self.server
        return f"[{host}]:{port + 1}" if ":" in host else f"{host}:{port + 1}"

    def handle(self, message: RendezvousMessage) -> None:
        """One request from the registration (rustdesk.md §6.1 step 6: duplicates dropped)."""
        if not self.duplicates.fresh(message, self.reactor.seconds()):
            self.node.stats.add("duplicate_request")
            return
        kind = message.WhichOneof("union")
        if self.inFlight + len(self.listening) >= MAX_PENDING:
            self.node.stats.add("request_dropped")
            self.badInput.warn("pending", "too many requests pending; dropping {kind}",
                               kind=kind)
            return
        self.node.stats.add("request_" + str(kind))
        self.inFlight += 1
        if kind == "punch_hole":
            d = self.punchHole(message.punch_hole)
        elif kind == "fetch_local_addr":
            d = self.fetchLocalAddr(message.fetch_local_addr)
        else:
            rr = message.request_relay
            d = self.answerRelay(rr.socket_addr, self.relayFor(rr.relay_server), rr.uuid,
                                 secure=rr.secure, initiate=False)
        d.addErrback(self._failed, kind)
        d.addBoth(self._done)

    def _done(self, result: Any) -> None:
        self.inFlight -= 1

    def _failed(self, failure: Any, kind: str) -> None:
        self.node.stats.add("request_failed")
        self.badInput.warn("mediator", "answering {kind} failed: {why}", kind=kind,
                           why=failure.getErrorMessage())

    def punchHole(self, ph: Any) -> defer.Deferred[Any]:
        """rustdesk.md §6.2: relay, or PunchHoleSent and listen."""
        relay = self.relayFor(ph.relay_server)
        if NatType.SYMMETRIC in (ph.nat_type, self.natType) or ph.force_relay or \
                self.forceRelay:
            return self.answerRelay(ph.socket_addr, relay, str(uuidlib.uuid4()),
                                    secure=True, initiate=True)

        def message(local: tuple[str, int]) -> RendezvousMessage:
            return RendezvousMessage(punch_hole_sent=PunchHoleSent(
                socket_addr=ph.socket_addr, id=self.node.peerId, relay_server=relay,
                nat_type=self.natType, version=NODE_VERSION))

        return self._answerThenListen(message, "direct", ph.socket_addr, relay,
                                      openNat=True)

    def fetchLocalAddr(self, fla: Any) -> defer.Deferred[Any]:
        """rustdesk.md §6.3: LocalAddr naming L, then listen on L."""
        relay = self.relayFor(fla.relay_server)
        if self.forceRelay:
            return self.answerRelay(fla.socket_addr, relay, str(uuidlib.uuid4()),
                                    secure=True, initiate=True)

        def message(local: tuple[str, int]) -> RendezvousMessage:
            mangled = addrmangle.encode(local[0], local[1],
                                        addrmangle.timestampFor(self.reactor.seconds()))
            return RendezvousMessage(local_addr=LocalAddr(
                socket_addr=fla.socket_addr, local_addr=mangled, relay_server=relay,
                id=self.node.peerId, version=NODE_VERSION))

        return self._answerThenListen(message, "lan", fla.socket_addr, relay)

    @defer.inlineCallbacks
    def _answerThenListen(self, build: Any, path: str, peerAddr: bytes, relay: str,
                          openNat: bool = False) -> Any:
        host, port = self.server
        stream = yield connectReusingPort(self.reactor, host, port, ("", 0))
        local = stream.localAddress
        if openNat:
            self.openNat(local, addrmangle.decode(bytes(peerAddr)))
        stream.send(build(local))
        stream.transport.loseConnection()
        yield stream.closed
        shot = _OneShot(self, path)
        try:
            shot.port = self.reactor.listenTCP(local[1], shot, interface=local[0])
        except CannotListenError as e:
            # Cannot listen where we said we would: the relay is the way left (rustdesk.md §6.3).
            self.badInput.warn("listen", "cannot listen on {addr}: {why}; relaying",
                               addr=f"{local[0]}:{local[1]}", why=str(e.socketError))
            yield self.answerRelay(peerAddr, relay, str(uuidlib.uuid4()), secure=True,
                                   initiate=True)
            return
        shot.timer = self.reactor.callLater(ACCEPT_TIMEOUT, self._expire, shot)
        self.listening.append(shot)

    def openNat(self, local: tuple[str, int], target: tuple[str, int]) -> None:
        """rustdesk.md §6.2 step 5.2: a short connect from L towards the controller, so that our own
        NAT lets the controller's connection to L in. Its outcome does not matter."""
        if target[1] == 0 or (":" in target[0]) != (":" in local[0]):
            return
        sock = socket.socket(socket.AF_INET6 if ":" in local[0] else socket.AF_INET,
                             socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(local)
            sock.setblocking(False)
            sock.connect_ex(target)
        except OSError:
            sock.close()
            return
        self.node.stats.add("nat_open")
        self._natOpeners[sock] = self.reactor.callLater(NAT_OPEN_TIME, self._closeOpener,
                                                        sock)

    def _closeOpener(self, sock: socket.socket) -> None:
        self._natOpeners.pop(sock, None)
        sock.close()

    def _expire(self, shot: _OneShot) -> None:
        shot.stop()
        if shot in self.listening:
            self.listening.remove(shot)
        if not shot.used:
            self.node.stats.add("punch_unused")

    @defer.inlineCallbacks
    def answerRelay(self, peerAddr: bytes, relay: str, uuid: str, *, secure: bool,
                    initiate: bool) -> Any:
        """rustdesk.md §6.4: RelayResponse to the server, then our relay leg."""
        host, port = self.server
        answer = RelayResponse(socket_addr=peerAddr, version=NODE_VERSION)
        if initiate:
            answer.uuid = uuid
            answer.relay_server = relay
            answer.id = self.node.peerId
        stream = yield connectStream(self.reactor, host, port)
        stream.send(RendezvousMessage(relay_response=answer))
        stream.transport.loseConnection()
        relayHost, relayPort = splitHostPort(relay, DEFAULT_RELAY_PORT)
        preamble = encodeFrame(RendezvousMessage(request_relay=RequestRelay(
            licence_key=self.licenceKey, uuid=uuid)).SerializeToString())
        source = addrmangle.decode(bytes(peerAddr))
        protocol = self.node.newSession(secure or initiate, source, "relay",
                                        preamble=preamble)
        if protocol is None:
            return  # the node is full (counted there); the controller times out
        kind = TCP6ClientEndpoint if ":" in relayHost else TCP4ClientEndpoint
        yield connectProtocol(kind(self.reactor, relayHost, relayPort, timeout=10), protocol)
