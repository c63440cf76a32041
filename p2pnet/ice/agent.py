# -*- test-case-name: test.interop.test_ice_agent -*-
"""The Twisted ICE agent: L{IceCore} on real sockets and TURN allocations.

    agent = Agent(reactor, controlling=True, hosts=["192.0.2.10"],
                  stunServers=[("198.51.100.1", 3478)],
                  turnServers=[TurnServer("198.51.100.1", 3478, "user", "password")])
    await agent.gather()
    send(agent.localDescription())           # to the peer, any way you like
    agent.setRemote(ufrag, pwd)              # from the peer
    for line in candidates: agent.addRemoteCandidate(line)
    agent.endOfRemoteCandidates()
    pair = await agent.connect()
    agent.onData = print
    agent.send(b"hello")
    await agent.close()

Every timer runs on the injected reactor (its C{seconds()} is the core's C{now}).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger

from p2pnet.addresses import defaultRouteAddress
from p2pnet.codecs.ice_candidate import Candidate, parseCandidate
from p2pnet.ice.checklist import CandidatePair
from p2pnet.ice.core import IceCore, IceState, Restarted, Selected, StateChanged
from p2pnet.ice.transports import HostSocket, StreamRelay, TurnServer, UdpRelay

__all__ = ["Agent", "IceFailed", "NotConnected", "TurnServer"]

Address = tuple[str, int]
_log = Logger()


class IceFailed(Exception):
    """Connectivity checks failed, or consent was lost (RFC 7675)."""


class NotConnected(Exception):
    """There is no selected pair to send on (yet, or any more)."""


class Agent:
    """An ICE agent (RFC 8445) for one data stream of one component over UDP.

    @param reactor: clock, scheduler and sockets (C{listenUDP}, C{connectTCP}).
    @param controlling: the initial role.
    @param lite: an ICE-lite agent (host candidates only, answers checks).
    @param hosts: the IP addresses to gather host candidates on (an interface filter);
        by default the addresses of the IPv4 and IPv6 default routes.
    @param includeLoopback: add 127.0.0.1 to the default addresses.
    @param stunServers: C{(ip, port)} of STUN servers for server-reflexive candidates.
    @param turnServers: L{TurnServer}s for relayed candidates.
    @param relayOnly: gather, signal and use relayed candidates only.
    @ivar onData: called with each datagram that arrives on a candidate pair.
    @ivar onCandidate: called with each local candidate as it is gathered, then with
        C{None} at the end (trickle, RFC 8838).
    @ivar onRestart: called with C{(ufrag, pwd)} when the remote restarted and this
        agent did too; signal them and the candidates again.
    """

    def __init__(self, reactor: Any, *, controlling: bool = True, lite: bool = False,
                 hosts: Sequence[str] | None = None, includeLoopback: bool = False,
                 stunServers: Sequence[Address] = (), turnServers: Sequence[TurnServer] = (),
                 relayOnly: bool = False, rng: random.Random | None = None,
                 nominationDelay: float = 1.0) -> None:
        self.core = IceCore(controlling, lite, rng, nominationDelay=nominationDelay)
        self._reactor = reactor
        self._hosts = list(hosts) if hosts is not None else None
        self._includeLoopback = includeLoopback
        self._stunServers = list(stunServers)
        self._turnServers = list(turnServers)
        self.relayOnly = relayOnly
        self._paths: dict[Address, Any] = {}
        self._ports: list[Any] = []
        self._relays: list[UdpRelay | StreamRelay] = []
        self._timer: Any = None
        self._waiting: list[Deferred[CandidatePair]] = []
        self.onData: Callable[[bytes], None] | None = None
        self.onCandidate: Callable[[Candidate | None], None] | None = None
        self.onRestart: Callable[[str, str], None] | None = None

    # -- what to signal ----------------------------------------------------------------

    @property
    def ufrag(self) -> str:
        """The local ufrag."""
        return self.core.ufrag

    @property
    def pwd(self) -> str:
        """The local password."""
        return self.core.pwd

    @property
    def selectedPair(self) -> CandidatePair | None:
        """The selected pair, or C{None}."""
        return self.core.selected

    @property
    def state(self) -> IceState:
        """The core's state."""
        return self.core.state

    def localCandidates(self) -> list[Candidate]:
        """The candidates to signal (peer-reflexive ones are never signalled)."""
        return [lc.candidate for lc in self.core.locals
                if lc.type != "prflx" and (not self.relayOnly or lc.type == "relay")]

    def localDescription(self) -> dict[str, Any]:
        """C{{"ufrag", "pwd", "lite", "candidates"}}, candidates as RFC 8839 lines."""
        return {"ufrag": self.ufrag, "pwd": self.pwd, "lite": self.core.lite,
                "candidates": [c.toLine() for c in self.localCandidates()]}

    # -- gathering ---------------------------------------------------------------------

    def hostAddresses(self) -> list[str]:
        """The addresses host candidates are gathered on."""
        if self._hosts is not None:
            return list(self._hosts)
        found = [a for a in (defaultRouteAddress(4), defaultRouteAddress(6)) if a]
        if self._includeLoopback and "127.0.0.1" not in found:
            found.append("127.0.0.1")
        return found

    def _add(self, kind: str, address: Address, base: Address, server: str | None = None,
             related: Address | None = None, localPreference: int = 65535) -> None:
        local = self.core.addLocalCandidate(kind, address, base, server, related,
                                            localPreference)
        if local.type == kind and self.onCandidate is not None and (
                not self.relayOnly or kind == "relay"):
            self.onCandidate(local.candidate)

    async def gather(self) -> list[Candidate]:
        """Gather host, server-reflexive and relayed candidates; returns those to
        signal. Servers that do not answer are logged and skipped."""
        sockets: list[tuple[HostSocket, int]] = []
        hosts = [] if self.relayOnly else self.hostAddresses()
        for index, host in enumerate(hosts):
            sock = HostSocket(self._reactor)
            try:
                self._ports.append(self._reactor.listenUDP(0, sock, interface=host))
            except Exception as e:
                _log.warn("ICE: cannot bind a host candidate on {host}: {error}",
                          host=host, error=e)
                continue
            sock.receiver = self._received
            self._paths[sock.base] = sock
            preference = max(0, 65535 - index)
            sockets.append((sock, preference))
            self._add("host", sock.base, sock.base, localPreference=preference)
        work = []
        for sock, preference in sockets:
            for server in self._stunServers:
                if (":" in server[0]) == (":" in sock.base[0]):
                    work.append(Deferred.fromCoroutine(
                        self._reflexive(sock, server, preference)))
        for turn in self._turnServers:
            work.append(Deferred.fromCoroutine(self._relay(turn)))
        if work:
            await DeferredList(work, consumeErrors=True)
        self.core.endOfLocalCandidates()
        if self.onCandidate is not None:
            self.onCandidate(None)
        self._pump()
        return self.localCandidates()

    async def _reflexive(self, sock: HostSocket, server: Address, preference: int) -> None:
        try:
            mapped = await sock.reflexive(server)
        except Exception as e:
            _log.warn("ICE: STUN server {server} gave no reflexive address: {error}",
                      server=f"{server[0]}:{server[1]}", error=e)
            return
        if mapped is not None and mapped != sock.base:
            self._add("srflx", mapped, sock.base, server[0], sock.base, preference)

    async def _relay(self, server: TurnServer) -> None:
        relay = (UdpRelay if server.transport == "udp" else StreamRelay)(self._reactor, server)
        try:
            allocation = await relay.allocate()
        except Exception as e:
            _log.warn("ICE: TURN server {server} ({transport}) gave no allocation: {error}",
                      server=f"{server.host}:{server.port}", transport=server.transport,
                      error=e)
            await maybeDeferred(lambda: Deferred.fromCoroutine(relay.close()))
            return
        self._relays.append(relay)
        relay.receiver = self._received
        self._paths[relay.base] = relay
        self._add("relay", relay.base, relay.base, server.host, allocation.mapped)

    # -- the remote description ------------------------------------------------------------

    def setRemote(self, ufrag: str, pwd: str, lite: bool = False) -> None:
        """The remote ufrag, password and whether it is lite."""
        self.core.setRemoteCredentials(ufrag, pwd, lite, self._reactor.seconds())
        self._pump()

    def addRemoteCandidate(self, candidate: Candidate | str) -> None:
        """A remote candidate (a L{Candidate} or an RFC 8839 line); raises
        C{CandidateDecodeError} for a bad line. Non-UDP candidates are ignored."""
        if isinstance(candidate, str):
            candidate = parseCandidate(candidate)
        self.core.addRemoteCandidate(candidate)
        self._pump()

    def endOfRemoteCandidates(self) -> None:
        """The remote has no more candidates (RFC 8838 end-of-candidates)."""
        self.core.endOfRemoteCandidates()
        self._pump()

    def restart(self) -> tuple[str, str]:
        """An ICE restart: new local credentials to signal with the candidates."""
        credentials = self.core.restart(self._reactor.seconds())
        self._pump()
        return credentials

    # -- connecting and data -----------------------------------------------------------------

    def connect(self) -> Deferred[CandidatePair]:
        """A L{Deferred} firing with the selected pair, or failing with L{IceFailed}."""
        d: Deferred[CandidatePair] = Deferred()
        if self.core.selected is not None and self.core.state == IceState.CONNECTED:
            d.callback(self.core.selected)
        elif self.core.state in (IceState.FAILED, IceState.CLOSED):
            d.errback(IceFailed(f"ICE {self.core.state.value}"))
        else:
            self._waiting.append(d)
        return d

    def send(self, data: bytes) -> None:
        """Send one datagram on the selected pair.

        @raise NotConnected: before a pair is selected, after consent was lost, or
            after L{close}.
        """
        pair = self.core.selected
        if pair is None or self.core.state not in (IceState.CONNECTED, IceState.CHECKING):
            raise NotConnected(f"ICE is {self.core.state.value}")
        local, remote = pair.key
        self._paths[local].send(remote, data)
        self.core.sentData(self._reactor.seconds())

    def _received(self, base: Address, source: Address, data: bytes) -> None:
        if self.core.receive(data, base, source, self._reactor.seconds()):
            self._pump()
            return
        # Data is taken from the paths the checks know (the remote may start sending
        # once it selected a pair this agent's own check has not confirmed yet).
        selected = self.core.selected
        if self.core.checklist.get((base, source)) is not None or (
                selected is not None and selected.key == (base, source)):
            if self.onData is not None:
                self.onData(data)

    async def close(self) -> None:
        """Stop checks, delete TURN allocations, close every socket."""
        self.core.close()
        self._pump()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        relays, self._relays = self._relays, []
        for relay in relays:
            try:
                await relay.close()
            except Exception as e:
                _log.warn("ICE: closing a TURN allocation failed: {error}", error=e)
        ports, self._ports = self._ports, []
        for port in ports:
            await maybeDeferred(port.stopListening)
        self._paths.clear()

    # -- driving the core --------------------------------------------------------------------

    def _pump(self) -> None:
        for t in self.core.takeTransmits():
            path = self._paths.get(t.local)
            if path is None:
                continue
            try:
                path.send(t.remote, t.data)
            except OSError as e:
                _log.debug("ICE: send to {remote} failed: {error}", remote=t.remote, error=e)
        for event in self.core.takeEvents():
            self._event(event)
        deadline = self.core.nextDeadline()
        if self.core.state == IceState.CLOSED:
            deadline = None
        timer = self._timer
        if timer is not None and timer.active():
            if deadline is not None and abs(timer.getTime() - deadline) < 1e-3:
                return  # already set for it (the common case on a busy socket)
            timer.cancel()
        self._timer = None
        if deadline is not None:
            delay = max(0.0, deadline - self._reactor.seconds())
            self._timer = self._reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.core.tick(self._reactor.seconds())
        self._pump()

    def _event(self, event: object) -> None:
        if isinstance(event, Selected):
            pair = event.pair
            _log.info("ICE: selected {local} {lbase} -> {remote} {raddr}",
                      local=(pair.validLocal or pair.local).type, lbase=pair.local.base,
                      remote=pair.remote.type, raddr=pair.remote.address)
            path = self._paths.get(pair.local.base)
            if isinstance(path, (UdpRelay, StreamRelay)):
                path.selected(pair.remote.address)
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(pair)
        elif isinstance(event, StateChanged) and event.state in (IceState.FAILED,
                                                                   IceState.CLOSED):
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.errback(IceFailed(f"ICE {event.state.value}"))
        elif isinstance(event, Restarted) and self.onRestart is not None:
            self.onRestart(event.ufrag, event.pwd)
