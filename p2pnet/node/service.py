# -*- test-case-name: test.unit.test_node_session -*-
"""L{NodeService}: the KVM node as one Twisted service (the appliance's C{node}).

It owns the identity, the registration (UDP, TCP or WebSocket), the mediator, the
direct-access listener (off unless C{node-direct-port} is set), the viewers, and the
video feed and input controller it is given; optionally a gateway client offering the
C{kvm.*} commands. See docs/kvm-node.md.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from p2pnet.codecs.rustdesk_register import RegistrationState
from p2pnet.node.identity import NodeIdentity
from p2pnet.node.login import LoginGuard, peerInfo
from p2pnet.node.mediator import Mediator
from p2pnet.node.nat import NatTest, natTypeName
from p2pnet.node.registration import StreamRegistration, UdpRegistration
from p2pnet.node.session import NodeSession
from p2pnet.protocols.rustdesk_client import natTestPorts
from p2pnet.protocols.rustdesk_peer import PeerStream
from p2pnet.stats import Stats

__all__ = ["DEFAULT_MAX_VIEWERS", "NodeService"]

log = Logger()

#: Most viewers logged in at once (more get "Too many viewers").
DEFAULT_MAX_VIEWERS = 4
#: Most peer connections (logged in or not) at once.
MAX_SESSIONS = 16


class _DirectFactory(Factory):
    """Direct IP access (rustdesk.md §6.5): sessions without the secure handshake."""

    def __init__(self, node: NodeService) -> None:
        self.node = node

    def buildProtocol(self, addr: Any) -> PeerStream | None:
        return self.node.newSession(False, (addr.host, addr.port), "ip")


class NodeService(MultiService):
    """The KVM node.

    @param identity: id, keys and password hash (L{p2pnet.node.identity}).
    @param feed: the video feed (C{p2pnet.node.video.VideoFeed}); started and stopped
        with this service when C{ownFeed}.
    @param inputs: the input controller (C{p2pnet.node.input.InputController}).
    @param server: the rendezvous server's C{(host, port)}.
    @param transport: C{udp}, C{tcp} or C{ws} registration.
    @param licenceKey: the server's key (relay legs; PunchHole licence on p2pnet's side).
    @param relay: overrides the relay the server names.
    @param directPort: direct IP access port, or C{None} (off).
    @param connectLink: opens a TCP/WS registration link (default: to C{server}).
    @param natProbe: runs RustDesk's NAT test (default L{natTestPorts}; see
        L{p2pnet.node.nat}).
    """

    name = "node"

    def __init__(self, reactor: Any, identity: NodeIdentity, feed: Any, inputs: Any, *,
                 server: tuple[str, int], transport: str = "udp", licenceKey: str = "",
                 relay: str = "", directPort: int | None = None, directListen: str = "",
                 maxViewers: int = DEFAULT_MAX_VIEWERS, source: str = "",
                 connectLink: Callable[[], Deferred[Any]] | None = None,
                 ownFeed: bool = True, tcpPort: int | None = None,
                 wsPort: int | None = None, natPort: int | None = None,
                 natProbe: Callable[..., Deferred[Any]] = natTestPorts) -> None:
        super().__init__()
        self.reactor = reactor
        self.clock = reactor
        self.identity = identity
        self.feed = feed
        self.inputs = inputs
        self.server = server
        self.tcpPort = tcpPort or server[1]
        self.wsPort = wsPort or server[1] + 2
        self.transport = transport
        self.licenceKey = licenceKey
        self.directPort = directPort
        self.directListen = directListen
        self.maxViewers = maxViewers
        self.source = source
        self.ownFeed = ownFeed
        self.stats = Stats()
        self.guard = LoginGuard()
        self.viewers: dict[str, NodeSession] = {}
        self.streams: set[PeerStream] = set()
        self._nextViewer = 0
        self.directPortListening: Any = None
        self.gateway: Any = None
        self.mediator = Mediator(reactor, self, (server[0], self.tcpPort), relay=relay,
                                 licenceKey=licenceKey,
                                 forceRelay=transport == "ws")
        self.natTest = NatTest(reactor, (server[0], self.tcpPort), natPort, natProbe)
        state = RegistrationState(identity.peerId, identity.uuid, identity.pk)
        if transport == "udp":
            self.registration: Any = UdpRegistration(reactor, server, state,
                                                     self.mediator.handle, self._newId,
                                                     self.stats)
        else:
            self.registration = StreamRegistration(
                reactor, connectLink or self._connectLink, state, self.mediator.handle,
                self._newId, self.stats)
        self.registration.onServers = self._serversChanged
        self.stats.gauge("viewers", lambda: len(self.viewers))
        self.stats.gauge("sessions", lambda: len(self.streams))

    @classmethod
    def fromConfig(cls, context: Any) -> NodeService:
        """The node configured by an L{p2pnet.app.AppContext} (the C{node-*} keys)."""
        from p2pnet.node.hid import FileHidSink, MemoryHidSink
        from p2pnet.node.identity import loadIdentity
        from p2pnet.node.input import InputController
        from p2pnet.node.video import VideoFeed
        from p2pnet.protocols.rustdesk_client import splitHostPort

        config = context.config
        identity = loadIdentity(context.dataDir, config.node_id, config.node_password)
        if identity.generatedPassword:
            # Printed once: only its salted hash is kept.
            print(f"KVM node {identity.peerId}: generated password "
                  f"{identity.generatedPassword} (set node-password to choose one)",
                  flush=True)
        server = splitHostPort(config.node_server or "127.0.0.1",
                               config.rendezvous_port or 21116)
        feed = VideoFeed(context.reactor, config.node_video, config.node_codec,
                         config.node_fps, config.node_bitrate)
        keyboard = FileHidSink(config.node_keyboard) if config.node_keyboard \
            else MemoryHidSink()
        mouse = FileHidSink(config.node_mouse) if config.node_mouse else MemoryHidSink()
        inputs = InputController(keyboard, mouse, lambda: (feed.width, feed.height))
        node = cls(context.reactor, identity, feed, inputs, server=server,
                   transport=config.node_transport, licenceKey=config.node_key,
                   relay=config.node_relay, maxViewers=config.node_max_viewers,
                   directPort=config.node_direct_port or None, source=config.node_video)
        if config.node_gateway:
            node.joinGateway(config.node_gateway, token=config.node_gateway_token,
                             password=config.node_gateway_password,
                             identityPath=os.path.join(context.dataDir,
                                                       "node-gateway-identity.json"))
        return node

    def joinGateway(self, url: str, *, token: str = "", password: str = "",
                    identityPath: str) -> None:
        """Join the control gateway at C{url} as C{role=node}, offering C{kvm.*}."""
        from p2pnet.node.gateway import COMMANDS, KvmCommands
        from p2pnet.protocols.gateway_client import (
            ClientOptions,
            DeviceIdentity,
            GatewayClient,
        )

        options = ClientOptions(
            role="node", clientId="node-host", clientMode="node", token=token or None,
            password=password or None, displayName=f"KVM node {self.peerId}",
            commands=COMMANDS, caps=("kvm",), identity=DeviceIdentity.load(identityPath),
            handlers=KvmCommands(self).handlers())
        self.gateway = GatewayClient(self.reactor, url, options)

    @property
    def peerId(self) -> str:
        """The id registered now."""
        return self.identity.peerId

    def _connectLink(self) -> Deferred[Any]:
        host = self.server[0]
        if self.transport == "ws":
            from p2pnet.protocols.rustdesk_client import connectWebSocket

            port = self.wsPort
            url = f"ws://[{host}]:{port}/" if ":" in host else f"ws://{host}:{port}/"
            return connectWebSocket(self.reactor, url)
        from p2pnet.protocols.rustdesk_client import connectStream

        return connectStream(self.reactor, host, self.tcpPort)

    def _serversChanged(self, servers: tuple[str, ...]) -> None:
        """A ConfigUpdate named the rendezvous servers (rustdesk.md §6.1 step 5): stay when ours is
        among them, else register with the first one (its TCP and WebSocket ports
        follow the rendezvous port, as on a real server)."""
        from p2pnet.protocols.rustdesk_client import splitHostPort

        try:
            listed = [splitHostPort(s, 21116) for s in servers]
        except ValueError:
            self.stats.add("bad_config_update")
            return
        if not listed or self.server in listed:
            return
        if not all(0 < port < 65534 and host for host, port in listed):
            self.stats.add("bad_config_update")
            return
        host, port = listed[0]
        log.info("Rendezvous server moved the node to {host}:{port}", host=host, port=port)
        self.server = (host, port)
        self.tcpPort, self.wsPort = port, port + 2
        self.mediator.server = (host, port)
        self.natTest.server, self.natTest.natPort = (host, port), None
        self._testNat()
        self.stats.add("server_moved")
        if self.transport == "udp":
            self.reactor.callLater(0, self.registration.moveTo, self.server)
        else:
            self.reactor.callLater(0, self.registration.moveTo, self._connectLink)

    def _testNat(self) -> None:
        """Run the NAT test (not over WebSocket, which always relays) and hand the
        answer to the mediator."""
        if self.transport == "ws":
            return

        def measured(natType: int) -> None:
            self.mediator.natType = natType

        self.natTest.run().addCallback(measured)

    def _newId(self, peerId: str) -> None:
        self.identity.setId(peerId)

    # -- lifecycle -------------------------------------------------------------------------

    def startService(self) -> None:
        if self.ownFeed:
            self.feed.startService()
        if self.directPort is not None:
            self.directPortListening = self.reactor.listenTCP(
                self.directPort, _DirectFactory(self), interface=self.directListen)
        super().startService()
        self.registration.start()
        self._testNat()
        if self.gateway is not None:
            self.gateway.start()
        log.info("KVM node {id} registering with {host}:{port} over {transport}",
                 id=self.peerId, host=self.server[0], port=self.server[1],
                 transport=self.transport)

    def stopService(self) -> Deferred[Any]:
        waits: list[Deferred[Any]] = []
        if self.gateway is not None:
            self.gateway.stop()
        self.natTest.cancel()
        stopped = self.registration.stop()
        if isinstance(stopped, Deferred):
            waits.append(stopped)
        self.mediator.stop()
        for stream in list(self.streams):
            stream.close("node stopping")
        if self.directPortListening is not None:
            port, self.directPortListening = self.directPortListening, None
            waits.append(port.stopListening())
        waits.append(super().stopService())
        if self.ownFeed:
            result = self.feed.stopService()
            if isinstance(result, Deferred):
                waits.append(result)
        return DeferredList(waits)

    # -- sessions --------------------------------------------------------------------------

    def newSession(self, secure: bool, source: tuple[str, int], path: str,
                   preamble: bytes = b"") -> PeerStream | None:
        """A peer stream with a fresh session, or C{None} when too many are open."""
        if len(self.streams) >= MAX_SESSIONS:
            self.stats.add("sessions_refused")
            return None
        session = NodeSession(self, secure, source, path)
        stream = PeerStream(session, preamble=preamble)
        self.streams.add(stream)
        ended = session.streamEnded

        def streamEnded(reason: str) -> None:
            self.streams.discard(stream)
            ended(reason)

        session.streamEnded = streamEnded  # type: ignore[method-assign]
        return stream

    def admitViewer(self, session: NodeSession) -> bool:
        """A session logged in: give it an id, unless the node is full."""
        if len(self.viewers) >= self.maxViewers:
            self.stats.add("viewers_refused")
            return False
        self._nextViewer += 1
        session.viewerId = f"v{self._nextViewer}"
        self.viewers[session.viewerId] = session
        self.stats.add("logins")
        return True

    def viewerLeft(self, session: NodeSession) -> None:
        """A logged-in session ended."""
        self.viewers.pop(session.viewerId, None)

    def keyRejected(self) -> None:
        """A controller could not verify our signed id: register the key again (rustdesk.md §6.6)."""
        self.registration.state.keyConfirmed = False

    def peerInfo(self) -> Any:
        """The login's PeerInfo from the feed's real size and codec."""
        return peerInfo(hostname=socket.gethostname(), width=self.feed.width,
                        height=self.feed.height, codec=self.feed.codec)

    def status(self) -> dict[str, Any]:
        """What C{kvm.status} answers."""
        feed = self.feed
        return {"id": self.peerId, "registration": self.registration.status,
                "transport": self.transport, "server": f"{self.server[0]}:{self.server[1]}",
                "viewers": len(self.viewers), "source": self.source,
                "nat": natTypeName(self.mediator.natType),
                "codec": feed.codec, "width": feed.width, "height": feed.height,
                "fps": feed.fps, "framesOut": feed.framesOut}
