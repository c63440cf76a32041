# -*- test-case-name: test.unit.test_app -*-
"""Composition: a L{Config} in, the appliance's C{MultiService} out.

C{twistd p2pnet}, the C{.tac} files and embedders all come through L{buildService}, so
the three run the same tree. Each entry of L{BUILDERS} makes one named child service.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from functools import cached_property
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet import ssl
from twisted.internet.interfaces import IReactorCore

from p2pnet.certs import ReloadableTLS, generateSelfSigned, loadServerTLS
from p2pnet.config import SERVICES, Config, settings
from p2pnet.drain import DrainService
from p2pnet.errors import ConfigError
from p2pnet.files import narrowFiles, privateDirectory
from p2pnet.listen import ConnectionGuard, setProcessGuard
from p2pnet.reload import ReloadService
from p2pnet.sdnotify import SystemdNotifier, notify

__all__ = ["AppContext", "Appliance", "BUILDERS", "RELOADABLE", "buildService"]

#: Settings a reload (SIGHUP, C{config.reload}) applies while running; any other that
#: changed keeps its old value until a restart, and the reload says which.
RELOADABLE = frozenset({
    "tls-cert", "tls-key", "user", "auth-secret", "gateway-auth", "gateway-token",
    "gateway-password",
})


class AppContext:
    """What the services of one appliance share: settings, reactor, data directory, TLS."""

    def __init__(self, config: Config, reactor: IReactorCore,
                 load: Callable[[], Config] | None = None) -> None:
        self.config = config
        self.reactor = reactor
        #: Reads the settings again (from the file, environment and flags they came
        #: from); C{None} for an embedder's fixed L{Config}: a reload then re-reads files.
        self.load = load
        #: This node's entry in a shared store's node table, if there is one.
        self.cluster: Any = None
        #: SIGHUP and the gateway's C{config.reload} (L{p2pnet.reload}).
        self.reloader = ReloadService(reactor, lambda: self.reload(
            self.load() if self.load is not None else self.config))
        #: Services built so far, by name (TURN finds the STUN service here).
        self.built: dict[str, IService] = {}
        #: The drain over the built services (SIGUSR1, the gateway's C{server.drain}).
        self.drain = DrainService(reactor, lambda: dict(self.built), reactor.stop,
                                  lambda state: notify(state))

    @cached_property
    def dataDir(self) -> str:
        """The data directory, created on first use, mode 0700 whatever it was before;
        its files of state or secrets are narrowed to 0600 (L{p2pnet.files.narrowFiles})."""
        path = self.config.data_dir
        try:
            privateDirectory(path)
            narrowFiles(path)
        except OSError as e:
            raise ConfigError("data-dir", f"cannot create {path}: {e.strerror}") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError("data-dir", f"{path} is not writable")
        return path

    @cached_property
    def tlsOptions(self) -> ReloadableTLS:
        """Server TLS options: C{tls-cert}/C{tls-key}, else a certificate made in data-dir;
        L{reload} replaces the certificate for new connections."""
        return ReloadableTLS(self._loadTLS(self.config))

    def _loadTLS(self, config: Config) -> ssl.CertificateOptions:
        if config.tls_cert:
            return loadServerTLS(config.tls_cert, config.tls_key)
        cert = os.path.join(self.dataDir, "tls-cert.pem")
        key = os.path.join(self.dataDir, "tls-key.pem")
        if not (os.path.exists(cert) and os.path.exists(key)):
            generateSelfSigned(cert, key)
        return loadServerTLS(cert, key)

    def reload(self, config: Config) -> list[str]:
        """Apply C{config}'s reloadable settings (L{RELOADABLE}) and re-read the files
        the services keep (certificate, user table, relay lists); return the keys of the
        settings that changed but cannot change while running (they keep their old
        values).

        @raise ConfigError: the new certificate or key cannot be used; nothing changed.
        """
        old = self.config
        tls = self._loadTLS(config) if "tlsOptions" in self.__dict__ else None
        fixed = sorted(s.key for s in settings()
                       if getattr(old, s.attr) != getattr(config, s.attr)
                       and s.key not in RELOADABLE)
        kept = {s.attr: getattr(old, s.attr) for s in settings() if s.key not in RELOADABLE}
        self.config = dataclasses.replace(config, **kept)
        if tls is not None:
            self.tlsOptions.replace(tls)
        for service in self.built.values():
            reconfigure = getattr(service, "reconfigure", None)
            if callable(reconfigure):
                reconfigure(self)
        if self.cluster is not None:
            self.cluster.beat()  # and exchange the node table now
        return fixed


class Appliance(MultiService):
    """The appliance: a named child per service, and around them the drain (SIGUSR1,
    C{server.drain}; L{p2pnet.drain}) and systemd's readiness notification
    (L{p2pnet.sdnotify}), which start after every child and stop before them.

    @ivar drain: the L{DrainService} over the children.
    """

    def __init__(self, drain: DrainService, reloader: ReloadService,
                 notifier: SystemdNotifier) -> None:
        super().__init__()
        self.drain = drain
        self.reloader = reloader
        self.notifier = notifier

    def startService(self) -> None:
        """Start the services (binding their listeners), then the drain, the reload
        trigger and the notifier."""
        super().startService()
        self.drain.startService()
        self.reloader.startService()
        self.notifier.startService()

    def stopService(self) -> Any:
        """Tell systemd, end the drain and the reload trigger, stop the services."""
        self.notifier.stopService()
        self.reloader.stopService()
        self.drain.stopService()
        return super().stopService()


def turnAddresses(config: Config, stun: Any) -> dict[str, list[Any]]:
    """Where clients reach this node's STUN/TURN over UDP, by address family, for the
    cluster's node table: each family's first listen address, as announced behind 1:1
    NAT (C{external-ip}); a wildcard listener's, this host's default route address."""
    from p2pnet.addresses import ExternalAddresses, defaultRouteAddress, family
    from p2pnet.listen import WILDCARDS, bindAddresses

    port = dict(getattr(stun, "boundPorts", {}) or {}).get("udp")
    if not port:
        return {}
    external = ExternalAddresses(config.external_ip)
    out: dict[str, list[Any]] = {}
    for host in bindAddresses(config.listen):
        kind = family(host)
        if str(kind) in out:
            continue
        public = external.public(host)
        if host in WILDCARDS and public == host:
            found = defaultRouteAddress(kind)
            if found is None:
                continue
            public = found
        out[str(kind)] = [public, port]
    return out


def _buildStun(context: AppContext) -> IService:
    from p2pnet.services.stun import StunService

    return StunService.fromConfig(context)


def _buildTurn(context: AppContext) -> IService:
    from p2pnet.services.turn import TurnService

    return TurnService.fromConfig(context)


def _buildRendezvous(context: AppContext) -> IService:
    from p2pnet.services.rendezvous import RendezvousService

    return RendezvousService.fromConfig(context)


def _buildRelay(context: AppContext) -> IService:
    from p2pnet.services.relay import RelayService

    return RelayService.fromConfig(context)


def _buildGateway(context: AppContext) -> IService:
    from twisted.internet.defer import maybeDeferred

    from p2pnet.services.gateway import GatewayService
    from p2pnet.services.gateway_operator import OperatorAction, OperatorListing
    from p2pnet.services.relay import RelayService
    from p2pnet.services.rendezvous import RendezvousService
    from p2pnet.services.turn import TurnService, killAllocations, sessionRow

    gateway = GatewayService.fromConfig(context)
    # The operator lists of the services built before the gateway (issue 14 item 5);
    # the gateway imports none of them, it is handed their typed listing methods.
    rendezvous = context.built.get("rendezvous")
    if isinstance(rendezvous, RendezvousService):
        gateway.provideListing(
            "rendezvous.peers.list", OperatorListing(rendezvous, rendezvous.onlinePeers)
        )
    relay = context.built.get("relay")
    if isinstance(relay, RelayService):
        pairs = relay.pairs
        gateway.provideListing(
            "relay.pairs.list",
            OperatorListing(relay, lambda offset, limit: pairs()[offset : offset + limit]),
        )
        gateway.provideAction("relay.pairs.kill", OperatorAction(relay, relay.killFromParams))
    turn = context.built.get("turn")
    if isinstance(turn, TurnService):
        table = turn.table
        gateway.provideListing("turn.allocations.list", OperatorListing(
            turn, lambda offset, limit: [sessionRow(s) for s in table.sessions()][
                offset : offset + limit]))
        gateway.provideListing("turn.users.list", OperatorListing(
            turn, lambda offset, limit: maybeDeferred(turn.listing, "users").addCallback(
                lambda rows: rows[offset : offset + limit])))
        gateway.provideAction("turn.users.add", OperatorAction(
            turn, lambda params: turn.manage("users", "add", params)))
        gateway.provideAction("turn.users.remove", OperatorAction(
            turn, lambda params: turn.manage("users", "remove", params)))
        gateway.provideAction("turn.allocations.kill", OperatorAction(
            turn, lambda params: killAllocations(table, params)))
        gateway.provideAction("turn.credentials.mint", OperatorAction(
            turn, turn.mintCredentials))
    gateway.provideAction("server.drain", OperatorAction(context.drain, context.drain.drain))
    gateway.provideAction("config.reload",
                          OperatorAction(context.reloader, context.reloader.reload))
    return gateway


def _buildNode(context: AppContext) -> IService:
    from p2pnet.node.service import NodeService

    return NodeService.fromConfig(context)


#: Service name to a function making that service from the shared context.
BUILDERS: dict[str, Callable[[AppContext], IService]] = {
    "stun": _buildStun,
    "turn": _buildTurn,
    "rendezvous": _buildRendezvous,
    "relay": _buildRelay,
    "gateway": _buildGateway,
    "node": _buildNode,
}
assert set(BUILDERS) == set(SERVICES)


def buildService(config: Config, reactor: IReactorCore | None = None,
                 load: Callable[[], Config] | None = None) -> Appliance:
    """The appliance as one C{MultiService}: a named child per service in C{config.services}.

    Nothing listens until the service is started; a port in use then raises
    L{ConfigError} naming the port's setting. The process's connection guard
    (L{p2pnet.listen.processGuard}) is set from C{config}'s connection limits.

    @param reactor: the reactor to run on (default: the global one).
    @param load: reads the settings again for a reload (SIGHUP, C{config.reload});
        without it a reload keeps C{config} and re-reads the files (certificate, user
        table, relay lists).
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    config.check()
    if config.store:
        from p2pnet.store.redis import checkReachable

        checkReachable(config.store)
    setProcessGuard(ConnectionGuard(
        config.max_open_connections, config.max_pending_per_ip, config.pending_timeout,
        reactor,  # type: ignore[arg-type]
    ))
    context = AppContext(config, reactor, load)
    root = Appliance(context.drain, context.reloader, SystemdNotifier(reactor))
    wanted = set(config.services)
    if "turn" in wanted:
        wanted.add("stun")  # TURN answers on the STUN service's sockets
    for name in SERVICES:
        if name in wanted:
            child = BUILDERS[name](context)
            child.setName(name)
            child.setServiceParent(root)
            context.built[name] = child
    if config.store:
        from p2pnet.cluster import ClusterMember
        from p2pnet.config import nodeName
        from p2pnet.store.redis import RedisNodes

        stun = context.built.get("stun")
        member = ClusterMember(reactor, RedisNodes(config.store), nodeName(config),
                               lambda: dict(context.built),
                               lambda: turnAddresses(config, stun) if stun else {})
        member.setServiceParent(root)
        context.cluster = member
        turn: Any = context.built.get("turn")
        if turn is not None:
            # user-quota counts the user's ports at every node of the cluster.
            turn.table.elsewhere = member.heldElsewhere
            if config.turn_redirect_above:
                turn.allocate.redirectAbove = config.turn_redirect_above
                turn.allocate.redirect = member.leastLoaded
    if config.metrics_listen:
        from p2pnet.metrics import MetricsService

        metrics = MetricsService(reactor, config.metrics_listen)
        metrics.setName("metrics")
        metrics.setServiceParent(root)
    return root
