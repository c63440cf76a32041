# -*- test-case-name: test.unit.test_gateway_service,test.unit.test_gateway_preauth -*-
"""The control gateway service: what the sessions share, and the wiring of its parts.

L{GatewayService} owns the connections (sessions, connected clients, presence, the tick
timer, broadcasts), the rate limiters and the pre-auth budget, and composes the rooms
that do the work:

- L{p2pnet.services.gateway_handshake}: one L{GatewaySession} per WebSocket and the
  C{connect} checks (L{Handshake});
- L{p2pnet.services.gateway_pairing}: pending pairing requests and device tokens;
- L{p2pnet.services.gateway_methods}: method authorisation, dispatch and handlers;
- L{p2pnet.services.gateway_nodes}: connected nodes and pending invokes.

The wire (HTTP, WebSocket, JSON text) is L{p2pnet.protocols.gateway_server}'s business:
this service implements that module's C{GatewayBackend} and hands itself to
C{listenGateway}; sessions write frames to its C{GatewayConnection}.

Other services' lists (C{rendezvous.peers.list}, C{relay.pairs.list}, ...) are handed
in by the application wiring through L{provideListing}
(L{p2pnet.services.gateway_operator}); C{status}, C{health} and C{/metrics} read each
sibling's C{running} and C{stats} from the parent C{MultiService}.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import IServiceCollection
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.internet.task import LoopingCall

from p2pnet._version import __version__
from p2pnet.codecs.device_auth import b64urlEncode
from p2pnet.codecs.gateway_frames import (
    MAX_BUFFERED_BYTES,
    MAX_PAYLOAD,
    MAX_PREAUTH_PAYLOAD,
    CloseCode,
    Event,
    Request,
    encodeFrame,
)
from p2pnet.config import nodeName
from p2pnet.protocols.gateway_server import (
    ConnectionInfo,
    GatewayConnection,
    listenGateway,
)
from p2pnet.ratelog import RateLimitedLog
from p2pnet.services.gateway_cluster import GatewayCluster, NodeDirectory
from p2pnet.services.gateway_console import Console
from p2pnet.services.gateway_handshake import Connect, GatewaySession, Handshake, Reject
from p2pnet.services.gateway_methods import GatewayMethods, nodeIdOf, sessionsOf
from p2pnet.services.gateway_node_pairing import NodePairing
from p2pnet.services.gateway_nodes import NodeRegistry
from p2pnet.services.gateway_operator import (
    OperatorAction,
    OperatorListing,
    actionHandler,
    listingHandler,
)
from p2pnet.services.gateway_pairing import DevicePairing, MethodError
from p2pnet.services.gateway_policy import (
    ADMIN,
    FORWARDING_HEADERS,
    PAIRING,
    AuthConfig,
    PreauthBudget,
    RateLimiter,
    isLocalDirect,
    resolveClientIp,
)
from p2pnet.services.inbox import Inbox
from p2pnet.services.listening import ListeningService
from p2pnet.stats import Stats
from p2pnet.store.gateway import DeviceToken, GatewayStore, GatewayStoreInterface

__all__ = [
    "EVENTS",
    "MAX_BUFFERED_BYTES",
    "MAX_PAYLOAD",
    "MAX_PREAUTH_PAYLOAD",
    "METHODS",
    "ConnectionInfo",
    "FrameSink",
    "GatewayService",
    "GatewaySession",
    "MethodError",
]

#: The wire end of a session (the protocol side's name is C{GatewayConnection}).
FrameSink = GatewayConnection

#: Seconds between C{tick} events (C{policy.tickIntervalMs} / 1000).
TICK_INTERVAL = 30.0
#: Seconds over which disconnects are gathered into one C{presence} broadcast (each
#: broadcast carries the whole list to every client, so churn must not multiply it).
PRESENCE_COALESCE = 1.0

#: Events this gateway sends, in C{hello-ok.features.events}.
EVENTS = (
    "connect.challenge",
    "presence",
    "tick",
    "shutdown",
    "node.invoke.request",
    "node.event",
    "device.pair.requested",
    "device.pair.resolved",
    "node.pair.requested",
    "node.pair.resolved",
)


#: Methods every gateway serves, in C{hello-ok.features.methods}.
METHODS = (
    "health",
    "status",
    "node.list",
    "node.describe",
    "node.invoke",
    "node.invoke.result",
    "node.event",
    "device.pair.list",
    "device.pair.approve",
    "device.pair.reject",
    "device.pair.remove",
    "device.pair.rename",
    "device.token.rotate",
    "device.token.revoke",
    "node.pair.list",
    "node.pair.approve",
    "node.pair.reject",
    "node.pair.remove",
    "node.rename",
    "node.pending.enqueue",
    "node.pending.pull",
    "node.pending.ack",
    "node.pending.drain",
)


def newGatewayToken() -> str:
    """A new random gateway token (256 bits, base64url)."""
    return b64urlEncode(secrets.token_bytes(32))


class GatewayService(ListeningService):
    """The control gateway's shared state; listeners come from C{listen}.

    @param listen: called with this service on start; returns the listening ports
        (see L{p2pnet.protocols.gateway_server.listenGateway}).
    """

    listeningName = "gateway"

    def __init__(
        self,
        *,
        clock: IReactorTime,
        store: GatewayStoreInterface,
        auth: AuthConfig,
        listen: Callable[[GatewayService], list[IListeningPort]] | None = None,
        allowedOrigins: tuple[str, ...] = (),
        handshakeTimeout: float = 10.0,
        tickInterval: float = TICK_INTERVAL,
        limitLoopback: bool = False,
        stateDir: str | None = None,
        newId: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        super().__init__()
        self.clock = clock
        self.store = store
        self.auth = auth
        #: The sibling services' lists and changes the wiring handed in, by method name
        #: (the console pages read them too).
        self.listings: dict[str, OperatorListing] = {}
        self.actions: dict[str, OperatorAction] = {}
        #: The status page's and the TURN tester's view of the appliance.
        self.console = Console(self.siblings, self.listings, self.actions,
                               lambda: self.auth, clock)
        self._listen = listen
        self.allowedOrigins = allowedOrigins
        self.handshakeTimeout = handshakeTimeout
        self.tickInterval = tickInterval
        self.stateDir = stateDir
        self.newId = newId
        self.limiter = RateLimiter(clock, exemptLoopback=not limitLoopback)
        self.browserLimiter = RateLimiter(clock, exemptLoopback=False)
        self.preauth = PreauthBudget()
        self.sessions: set[GatewaySession] = set()
        self.clients: dict[str, GatewaySession] = {}
        self.presence: dict[str, dict[str, Any]] = {}
        self.seq = 0
        self.presenceVersion = 0
        self._presenceCall: IDelayedCall | None = None
        self.healthVersion = 0
        self.startedAt = clock.seconds()
        self.stats = Stats()
        self.badInput = RateLimitedLog(self.log, clock)
        self.nodes: NodeRegistry[GatewaySession] = NodeRegistry(clock, self.stats)
        self.pairing = DevicePairing(
            clock, store, newId, lambda event, payload: self.broadcast(
                event, payload, scope=PAIRING)
        )
        self.nodePairing = NodePairing(
            clock, store, newId, lambda event, payload: self.broadcast(
                event, payload, scope=PAIRING), self._retarget
        )
        self.handshaker = Handshake(self)
        #: The other gateways of a cluster (cross-gateway node.invoke), or C{None}.
        self.cluster: GatewayCluster | None = None
        self.methods = GatewayMethods(self)
        for method, handler in self.nodePairing.handlers().items():
            self.methods.register(method, handler)
        self.stats.gauge("connections_open", lambda: len(self.sessions))
        self.stats.gauge("clients_connected", lambda: len(self.clients))
        self.stats.gauge("nodes_connected", lambda: len(self.nodes.connected))
        self.stats.gauge("pairings_pending", lambda: len(self.pairing.pending))
        self.stats.gauge("devices_paired", lambda: len(self.store.devices))
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = clock
        self._maintenance = LoopingCall(self._maintain)
        self._maintenance.clock = clock

    @classmethod
    def _authConfig(cls, context: Any, store: GatewayStoreInterface) -> AuthConfig:
        """The auth settings of C{context.config}; a token generated into C{store} (and
        logged) in token mode without a configured one. A shared store not read yet
        gives no token (handshakes wait for it: L{handshake}); it generates its own
        (its C{required} secrets)."""
        config = context.config
        mode = config.gateway_auth or ("password" if config.gateway_password else "token")
        token = config.gateway_token
        if mode == "token" and not token:
            token = store.secret("gateway-token") or ""
            if not token and store.ready:
                token = newGatewayToken()
                store.createSecret("gateway-token", token)
                cls.log.info(
                    "Generated a gateway token (stored in {dataDir}/gateway.sqlite); print "
                    "it with 'p2pnet gateway token --data-dir {dataDir}'",
                    dataDir=context.dataDir,
                )
        return AuthConfig(
            mode=mode,
            token=token if mode == "token" else "",
            password=config.gateway_password if mode == "password" else "",
            trustedProxies=tuple(ipaddress.ip_network(n) for n in config.trusted_proxy),
            userHeader=config.gateway_proxy_user_header,
            requiredHeaders=config.gateway_proxy_required_header,
            allowUsers=config.gateway_proxy_allow_user,
        )

    def reconfigure(self, context: Any) -> None:
        """A reload: the shared secret (token or password) and auth mode from
        C{context.config}, for handshakes from now on; connected clients stay."""
        self.auth = self._authConfig(context, self.store)

    @classmethod
    def fromConfig(cls, context: Any) -> GatewayService:
        """The service described by an L{p2pnet.app.AppContext}'s settings."""
        config = context.config
        store: GatewayStoreInterface
        if config.store:  # shared with the cluster's other gateways
            from p2pnet.store.gateway_redis import RedisGatewayStore

            shared = RedisGatewayStore(
                config.store, seed=os.path.join(context.dataDir, "gateway.sqlite"),
                required={"gateway-token": newGatewayToken})
            store = shared
        else:
            store = GatewayStore(os.path.join(context.dataDir, "gateway.sqlite"))
        auth = cls._authConfig(context, store)
        tls = context.tlsOptions if config.gateway_tls else None
        service = cls(
            clock=context.reactor,
            store=store,
            auth=auth,
            listen=lambda service: listenGateway(
                context.reactor, service, config.listen, config.gateway_port, tls
            ),
            allowedOrigins=config.allowed_origin,
            handshakeTimeout=config.handshake_timeout,
            limitLoopback=config.gateway_limit_loopback,
            stateDir=context.dataDir,
        )
        if config.store:
            from p2pnet.store.redis import GATEWAY_INBOX_PREFIX, RedisGatewayNodes, RedisInbox

            service.joinCluster(
                RedisInbox(config.store, nodeName(config), GATEWAY_INBOX_PREFIX),
                RedisGatewayNodes(config.store))
            shared.onWithdrawn = service.closeWithdrawn
            shared.loaded.addCallback(lambda _: service.sharedStoreRead(context))
        return service

    def sharedStoreRead(self, context: Any) -> None:
        """The shared store was read the first time: take its gateway token (before any
        handshake is let through), and say where it is."""
        self.reconfigure(context)
        if self.auth.mode == "token" and not context.config.gateway_token:
            self.log.info("Gateway token shared by the gateways of this store; print it "
                          "with 'p2pnet gateway token --store URL'")

    def closeWithdrawn(self, withdrawn: set[tuple[str, str | None]]) -> None:
        """Close the sessions of devices removed, or tokens revoked or rotated, at another
        gateway (4001, as this gateway does for its own changes)."""
        for deviceId, role in withdrawn:
            for session in sessionsOf(self.clients.values(), deviceId, role):
                session.close(CloseCode.AUTH_CHANGED, "device removed")

    @property
    def pairings(self) -> Mapping[str, Any]:
        """Pending device pairing requests by id."""
        return self.pairing.pending

    @property
    def wantedHeaders(self) -> frozenset[str]:
        """The request headers the connect checks read."""
        auth = self.auth
        return frozenset(
            ("origin", "host", *FORWARDING_HEADERS, auth.userHeader.lower(),
             *(h.lower() for h in auth.requiredHeaders))
        ) - {""}

    # -- lifecycle ---------------------------------------------------------------------

    def listen(self) -> None:
        """The listeners C{listen} binds (none without it)."""
        if self._listen is not None:
            self.ports += self._listen(self)

    def joinCluster(self, inbox: Inbox, directory: NodeDirectory) -> None:
        """Work with the other gateways of a shared store: record the nodes connected
        here, and run node.invoke for nodes connected elsewhere through them."""
        methods = self.methods
        self.cluster = GatewayCluster(self.clock, inbox, directory, self.stats,
                                      methods.invokeForOtherGateway,
                                      methods.resultFromOtherGateway)

    def startService(self) -> None:
        """Bind if not yet bound, start the tick and maintenance timers."""
        super().startService()
        if self.cluster is not None:
            self.cluster.start()
        self._ticker.start(self.tickInterval, now=False)
        self._maintenance.start(60.0, now=False)

    def stopService(self) -> Deferred[None]:
        """Tell clients, close them with 1012, stop listening, close the store."""
        closed = super().stopService()
        for timer in (self._ticker, self._maintenance):
            if timer.running:
                timer.stop()
        if self.cluster is not None:
            self.cluster.stop()
        if self._presenceCall is not None and self._presenceCall.active():
            self._presenceCall.cancel()
        self._presenceCall = None
        self.broadcast("shutdown", {"reason": "gateway stopping"})
        for session in list(self.sessions):
            session.close(CloseCode.SERVICE_RESTART, "service restart")
        return closed.addBoth(lambda _: self.store.close())

    def _maintain(self) -> None:
        self.limiter.prune()
        self.browserLimiter.prune()
        self.pairing.expire()

    def _tick(self) -> None:
        self.broadcast("tick", {"ts": self.nowMs()}, dropIfSlow=True)

    def nowMs(self) -> int:
        """The clock in epoch milliseconds."""
        return int(self.clock.seconds() * 1000)

    # -- sessions (GatewayBackend and SessionOwner) --------------------------------------

    def canOpen(self, clientIp: str | None) -> bool:
        """Whether C{clientIp} may open one more unauthenticated socket."""
        return self.preauth.count(clientIp) < self.preauth.limit

    def connectionInfo(self, remote: str, headers: Mapping[str, str]) -> ConnectionInfo:
        """Resolve the client address of an upgrade request (gateway.md §4.2, §4.3)."""
        return ConnectionInfo(
            remote,
            headers,
            resolveClientIp(remote, headers, self.auth.trustedProxies),
            isLocalDirect(remote, headers),
        )

    def openSession(self, sink: GatewayConnection, info: ConnectionInfo) -> GatewaySession:
        """A new WebSocket: take a pre-auth slot, make its session."""
        self.preauth.acquire(info.clientIp)
        session = GatewaySession(
            self, sink, info, self.newId(), self.newId(), self.clock.seconds()
        )
        self.sessions.add(session)
        self.stats.add("connections")
        return session

    def handshake(self, session: GatewaySession, request: Request) -> None:
        """Run the checks of a C{connect} (gateway.md §1.7); raise L{Reject}."""
        if not self.store.ready:
            # A shared store not read yet: refusing the device token now would make
            # the client forget it; 1012 makes it come back with it a moment later.
            session.close(CloseCode.SERVICE_RESTART, "gateway starting")
            return
        self.handshaker.run(session, request)

    def dispatch(self, session: GatewaySession, request: Request) -> None:
        """Authorise and run one request of a connected client."""
        self.methods.dispatch(session, request)

    def sessionClosed(self, session: GatewaySession) -> None:
        """Forget a closed session: registry, presence, pending invokes."""
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        if not session.authenticated:
            self.preauth.release(session.info.clientIp)
            return
        self.clients.pop(session.connId, None)
        nodeId = nodeIdOf(session) if session.role == "node" else None
        if nodeId is not None and self.cluster is not None and \
                self.nodes.connected.get(nodeId) is session:
            self.cluster.nodeDown(nodeId)
        self.nodes.disconnected(session, nodeId)
        if session.presenceKey is not None:
            self.presence.pop(session.presenceKey, None)
            self.presenceVersion += 1
            if self._presenceCall is None and self.running:
                self._presenceCall = self.clock.callLater(
                    PRESENCE_COALESCE, self._broadcastPresence
                )
        self.log.info(
            "Gateway client {connId} disconnected ({role})",
            connId=session.connId,
            role=session.role,
        )

    def _broadcastPresence(self) -> None:
        """The presence list as it is now, to everyone (after disconnects settle)."""
        self._presenceCall = None
        self.broadcast(
            "presence",
            {"presence": list(self.presence.values())},
            dropIfSlow=True,
            stateful=True,
        )

    def handshakeFailed(self, session: GatewaySession, reject: Reject) -> None:
        """Count and log (at a bounded rate; never a secret) a refused handshake."""
        reason = reject.failure or reject.closeReason or "closed"
        self.stats.add(f'auth_failures{{reason="{_label(reason)}"}}')
        self.badInput.warn(
            "gateway-handshake",
            "Gateway handshake from {ip} refused: {reason}",
            ip=session.info.clientIp or session.info.remote,
            reason=reason,
        )

    def admit(
        self, connect: Connect, deviceId: str | None, token: DeviceToken | None = None
    ) -> None:
        """Steps 13 to 15 of gateway.md §1.7: presence, hello-ok, timer cleared,
        registered, sent."""
        session, params, role, scopes = connect.session, connect.params, connect.role, connect.scopes
        session.role = role
        session.scopes = scopes
        session.deviceId = deviceId
        session.params = params
        client = params.client
        if client.mode != "cli":
            key = deviceId or client.instanceId or session.connId
            session.presenceKey = key
            self.presence[key] = self._presenceEntry(session)
            self.presenceVersion += 1
        authPayload: dict[str, Any] = {"method": connect.method, "role": role,
                                       "scopes": list(scopes)}
        if token is not None:
            authPayload["deviceToken"] = token.token
            authPayload["issuedAtMs"] = token.issuedAtMs
        snapshot: dict[str, Any] = {
            "presence": list(self.presence.values()),
            "health": self.health(),
            "stateVersion": self.stateVersion(),
            "uptimeMs": int((self.clock.seconds() - self.startedAt) * 1000),
        }
        if ADMIN in scopes:
            snapshot["authMode"] = self.auth.mode
            if self.stateDir is not None:
                snapshot["stateDir"] = self.stateDir
        hello = {
            "type": "hello-ok",
            "protocol": connect.protocol,
            "server": {"version": __version__, "connId": session.connId},
            "features": {"methods": list(self.advertisedMethods()), "events": list(EVENTS)},
            "snapshot": snapshot,
            "auth": authPayload,
            "policy": {
                "maxPayload": MAX_PAYLOAD,
                "maxBufferedBytes": MAX_BUFFERED_BYTES,
                "tickIntervalMs": int(self.tickInterval * 1000),
            },
        }
        if session.timer is not None and session.timer.active():
            session.timer.cancel()
        session.timer = None
        session.authenticated = True
        self.preauth.release(session.info.clientIp)
        self.clients[session.connId] = session
        if role == "node":
            nodeId = nodeIdOf(session)
            info = session.info
            session.commands = self.nodePairing.reconcile(
                nodeId, client, params.commands or (), info.clientIp,
                silent=info.localDirect and info.origin is None,
            )
            self.nodes.add(nodeId, session)
            if self.cluster is not None:
                self.cluster.nodeUp(nodeId)
        session.respond(connect.requestId, hello)
        self.stats.add("handshakes")
        self.log.info(
            "Gateway client {connId} connected: {clientId}/{mode} as {role} from {ip} "
            "({method})",
            connId=session.connId,
            clientId=client.id,
            mode=client.mode,
            role=role,
            ip=session.info.clientIp,
            method=connect.method,
        )

    def _retarget(self, nodeId: str, commands: tuple[str, ...] | None) -> None:
        """Node pairing changed: a connected node may now be invoked for what it
        declared within C{commands}; when its pairing was removed (C{None}) it is
        closed with 4001, and asks again when it reconnects."""
        session = self.nodes.connected.get(nodeId)
        if session is None or session.params is None:
            return
        if commands is None:
            session.commands = ()
            session.close(CloseCode.AUTH_CHANGED, "device removed")
            return
        approved = set(commands)
        session.commands = tuple(c for c in session.params.commands or () if c in approved)

    def advertisedMethods(self) -> tuple[str, ...]:
        """The methods in hello-ok: every one served (the other services' lists only
        when the wiring provided them, L{provideListing})."""
        return self.methods.names

    def provideListing(self, method: str, listing: OperatorListing) -> None:
        """Serve C{method} (e.g. C{rendezvous.peers.list}) from a sibling's paged list;
        called by the application wiring, which knows the sibling services."""
        self.methods.register(method, listingHandler(listing))
        self.listings[method] = listing

    def provideAction(self, method: str, action: OperatorAction) -> None:
        """Serve C{method} (e.g. C{turn.users.add}) with a sibling's change; called by
        the application wiring."""
        self.methods.register(method, actionHandler(action))
        self.actions[method] = action

    def _presenceEntry(self, session: GatewaySession) -> dict[str, Any]:
        assert session.params is not None
        client = session.params.client
        entry: dict[str, Any] = {
            "host": client.displayName or client.id,
            "version": client.version,
            "platform": client.platform,
            "deviceFamily": client.deviceFamily,
            "modelIdentifier": client.modelIdentifier,
            "mode": client.mode,
            "deviceId": session.deviceId,
            "roles": [session.role],
            "scopes": list(session.scopes),
            "instanceId": client.instanceId,
            "reason": "connect",
            "ts": self.nowMs(),
        }
        if not session.info.localDirect:
            entry["ip"] = session.info.clientIp
        return {k: v for k, v in entry.items() if v is not None}

    def stateVersion(self) -> dict[str, int]:
        """The presence and health versions."""
        return {"presence": self.presenceVersion, "health": self.healthVersion}

    # -- broadcasting ------------------------------------------------------------------

    def broadcast(
        self,
        event: str,
        payload: Any,
        *,
        dropIfSlow: bool = False,
        scope: str | None = None,
        stateful: bool = False,
    ) -> None:
        """Send an event to every connected client (or operators holding C{scope}).

        Untargeted broadcasts carry the gateway-wide C{seq} (gateway.md §1.1).
        """
        targets = [
            s
            for s in self.clients.values()
            if scope is None
            or (s.role == "operator" and (scope in s.scopes or ADMIN in s.scopes))
        ]
        seq = None
        if scope is None:
            self.seq += 1
            seq = self.seq
        frame = Event(event, payload, seq, self.stateVersion() if stateful else None)
        if targets:
            text = encodeFrame(frame)
            for session in targets:
                session.send(frame, dropIfSlow, text)

    # -- health, status, siblings --------------------------------------------------------

    def siblings(self) -> dict[str, Any]:
        """Every service of the appliance by name (this one included)."""
        parent = self.parent
        if parent is None or not IServiceCollection.providedBy(parent):
            return {self.name or "gateway": self}
        return {s.name: s for s in parent if s.name}

    def health(self) -> dict[str, Any]:
        """Liveness of every service."""
        return {
            "ok": True,
            "ts": self.nowMs(),
            "services": {name: bool(s.running) for name, s in self.siblings().items()},
        }

    def status(self) -> dict[str, Any]:
        """Every service's state and counters."""
        services = {}
        for name, service in self.siblings().items():
            stats = getattr(service, "stats", None)
            services[name] = {
                "running": bool(service.running),
                "stats": stats.snapshot() if isinstance(stats, Stats) else {},
            }
        return {
            "version": __version__,
            "uptimeMs": int((self.clock.seconds() - self.startedAt) * 1000),
            "authMode": self.auth.mode,
            "services": services,
        }


def _label(text: str) -> str:
    """A Prometheus label value: reasons are short identifiers, quotes are dropped."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:64]
