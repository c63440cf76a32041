# -*- test-case-name: test.unit.test_services_turn -*-
"""The TURN service (RFC 8656, RFC 5766, RFC 6156 dual stack, RFC 6062 TCP relays).

It has no sockets of its own towards clients: it registers the TURN methods and the
ChannelData handler with the L{StunService}, so STUN and TURN share the port as coturn
does, and uses the same L{LongTermAuth} (its credentials become a chain of the
configured users, the durable user table and the REST secret).

The service is the wiring of small rooms, as pion/turn is shaped:

- L{p2pnet.services.turn_table}: the allocation table (5-tuples, quotas, reservations,
  lifetimes, lifecycle events, operator views);
- L{p2pnet.services.turn_relays}: relayed addresses and sockets, made through an
  injected L{RelaySockets} (so unit tests bind nothing);
- request handlers, one module per request family, each quoting the RFC's steps:
  L{p2pnet.services.turn_allocate} (Allocate, Refresh),
  L{p2pnet.services.turn_permissions} (CreatePermission, ChannelBind),
  L{p2pnet.services.turn_tcp} (RFC 6062 Connect, ConnectionBind);
- L{p2pnet.services.turn_data}: the data path (Send/Data, ChannelData).

Here: authentication and dispatch (RFC 8656 §5), the common checks every request
passes, start and stop.
"""

from __future__ import annotations

import base64
import os
import random
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet import task
from twisted.logger import Logger

from p2pnet.addresses import ExternalAddresses, family, parseIp
from p2pnet.codecs.fastpath_maps import STATS
from p2pnet.codecs.stun import (
    CHANNEL_MAX,
    CHANNEL_MAX_RFC5766,
    Attr,
    Message,
    Method,
    StunClass,
)
from p2pnet.errors import ConfigError
from p2pnet.protocols.stun import Reply, StunLink
from p2pnet.protocols.turn import DONT_FRAGMENT_SUPPORTED, KernelRelaySockets, RelaySockets
from p2pnet.ratelog import RateLimitedLog
from p2pnet.services.auth import Credentials, StaticUsers
from p2pnet.services.stun import StunService
from p2pnet.services.turn_allocate import AllocateHandler, AllocationLimits
from p2pnet.services.turn_allocation import TableBudget
from p2pnet.services.turn_context import TurnRequest, TurnResponder
from p2pnet.services.turn_credentials import ChainedCredentials, RestCredentials, StoredUsers
from p2pnet.services.turn_data import DataPath
from p2pnet.services.turn_fastpath import COLLECT_INTERVAL, FastPathEntries, FastPathKernel
from p2pnet.services.turn_permissions import PermissionHandler
from p2pnet.services.turn_policy import PeerPolicy
from p2pnet.services.turn_relays import RelayAllocator
from p2pnet.services.turn_table import SWEEP_INTERVAL, AllocationTable, TurnSession, autoQuotas
from p2pnet.services.turn_tcp import TcpRelays
from p2pnet.stats import Stats
from p2pnet.store.choice import userStore

__all__ = ["TurnService", "autoQuotas", "ensureGeneratedUser", "sessionRow"]

_TURN_METHODS = (
    Method.ALLOCATE, Method.REFRESH, Method.SEND, Method.CREATE_PERMISSION,
    Method.CHANNEL_BIND, Method.CONNECT, Method.CONNECTION_BIND,
)
_log = Logger(namespace="p2pnet.services.turn.TurnService")


def fastPathFor(mode: str, load: Callable[[], FastPathKernel] | None = None
                ) -> FastPathKernel | None:
    """The kernel fast path for setting C{fast-path} (C{auto}, C{on}, C{off}): loaded
    and attached, or C{None}. In C{auto} mode a reason it cannot run is one log line and
    the Python path serves everything; in C{on} mode it stops start-up.

    @param load: loads and attaches the program (default:
        L{p2pnet.fastpath.kernel.loadKernelFastPath}).
    @raise ConfigError: C{on} and the fast path cannot run here.
    """
    if mode == "off":
        return None
    from p2pnet.fastpath.kernel import FastPathUnavailable, loadKernelFastPath

    try:
        kernel = (load or loadKernelFastPath)()
    except FastPathUnavailable as e:
        if mode == "on":
            raise ConfigError("fast-path", str(e)) from None
        _log.info("TURN fast path off ({reason}); the Python path relays everything",
                  reason=str(e))
        return None
    _log.info("TURN fast path: channel data relayed in the kernel (tcx on {interfaces})",
              interfaces=", ".join(kernel.interfaces))
    return kernel


def _kernelStat(kernel: FastPathKernel, name: str) -> Callable[[], int]:
    """A gauge reading one of the program's own counters."""
    return lambda: kernel.stats()[name]


#: Where the generated TURN user of a server started without users is written.
GENERATED_USER_FILE = "turn-user.txt"


def ensureGeneratedUser(dataDir: str) -> tuple[str, str] | None:
    """The generated TURN user of a server with no configured users (architecture.md §3).

    Made on first start and kept in C{DATA_DIR/turn-user.txt} (mode 0600, one line
    C{NAME:PASSWORD}); the log names the file, never the password. C{None} when the file
    cannot be read or made (the server then relies on the durable user table).
    """
    path = os.path.join(dataDir, GENERATED_USER_FILE)
    try:
        with open(path) as f:
            name, sep, password = f.read().strip().partition(":")
        if sep and name:
            return name, password
    except FileNotFoundError:
        pass
    except OSError:
        return None
    name, password = "p2pnet", base64.urlsafe_b64encode(os.urandom(18)).decode()
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{name}:{password}\n")
    except OSError:
        return None
    _log.info("generated TURN user {name}; its password is in {path}",
                         name=name, path=path)
    return name, password


def sessionRow(session: TurnSession) -> dict[str, Any]:
    """A L{TurnSession} as a JSON-ready row (addresses as C{host:port} text)."""
    return {
        "user": session.user,
        "client": hostPort(session.client),
        "transport": session.transport,
        "relayed": [hostPort(a) for a in session.relayed],
        "age": round(session.age, 3),
        "expiresIn": round(session.expiresIn, 3),
        "bytesToPeers": session.bytesToPeers,
        "packetsToPeers": session.packetsToPeers,
        "bytesFromPeers": session.bytesFromPeers,
        "packetsFromPeers": session.packetsFromPeers,
        "permissions": list(session.permissions),
        "channels": [{"number": n, "peer": hostPort(p)} for n, p in session.channels],
    }


def hostPort(address: tuple[str, int]) -> str:
    """C{host:port}, IPv6 in brackets."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def credentialSources(context: Any, table: StoredUsers) -> list[Credentials]:
    """The credential chain the settings of C{context.config} describe: the C{user}
    entries, the durable C{table}, the REST secret; with neither users nor a secret, a
    user generated into the data directory first."""
    config = context.config
    sources: list[Credentials] = []
    if config.user:
        sources.append(StaticUsers(dict(config.user)))
    sources.append(table)
    if config.auth_secret:
        sources.append(RestCredentials(config.auth_secret, context.reactor))
    if not config.user and not config.auth_secret:
        generated = ensureGeneratedUser(context.dataDir)
        if generated is not None:
            sources.insert(0, StaticUsers(dict([generated])))
    return sources


def killAllocations(table: AllocationTable, params: Mapping[str, Any]) -> dict[str, Any]:
    """The operator's kill (C{turn.allocations.kill}): C{params} name a C{user}, or a
    C{client} IP address with an optional C{port}; the matching allocations are deleted.
    Answers C{{"killed": N}}; C{ValueError} for params that name nothing or are malformed.
    """
    user, client, port = params.get("user"), params.get("client"), params.get("port")
    if (user is None) == (client is None):
        raise ValueError("give user or client")
    if user is not None:
        if not isinstance(user, str) or not user:
            raise ValueError("user must be a non-empty string")
        return {"killed": table.kill(user=user)}
    address = parseIp(client) if isinstance(client, str) else None
    if address is None:
        raise ValueError("client must be an IP address")
    if port is None:
        return {"killed": table.kill(client=str(address))}
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError("port must be an integer from 1 to 65535")
    return {"killed": table.kill(client=(str(address), port))}


class TurnService(Service):
    """TURN relays on the sockets of a L{StunService}.

    @param reactor: time (and, without C{relaySockets}, the relayed sockets' reactor).
    @param stun: the STUN service whose sockets, auth and software value are shared.
    @param credentials: who may allocate (installed as the STUN service's credentials).
    @param relayAddresses: the address relayed sockets bind to, per family (4, 6);
        default: the address the client reached, else this host's address of that family.
    @param external: public addresses behind 1:1 NAT (C{external-ip}): bind the private
        address, announce the public one.
    @param relayPorts: the inclusive range relayed ports are chosen from.
    @param policy: which peers may be relayed to.
    @param maxLifetime: the longest LIFETIME granted, in seconds.
    @param maxAllocations: allocations open at once (then 508).
    @param userQuota: allocations and reservations per user (then 486); 0 for
        automatic (L{autoQuotas}), so one user cannot take every relayed port.
    @param ipQuota: allocations per client IP address (then 486); 0 for automatic.
    @param maxBps: bytes per second per allocation and direction; 0 for no limit.
    @param bpsCapacity: bytes per second for all allocations, per direction; 0 no limit.
    @param maxPermissions: permissions per allocation (then 508).
    @param maxChannels: channel bindings per allocation (then 508).
    @param maxPermissionsTotal: permissions in all allocations together (then 508).
    @param maxChannelsTotal: channel bindings in all allocations together (then 508).
    @param tcpRelays: offer RFC 6062 TCP allocations (C{no-tcp-relay} turns them off).
    @param userTable: the durable user table among C{credentials}, started and stopped
        with this service.
    @param relaySockets: makes the relayed sockets (default: real ones on C{reactor};
        tests pass L{p2pnet.testing.MemoryRelaySockets}).
    """

    log = _log

    def __init__(
        self,
        reactor: Any,
        stun: StunService,
        *,
        credentials: Credentials,
        relayAddresses: Mapping[int, str] | None = None,
        external: ExternalAddresses | None = None,
        relayPorts: tuple[int, int] = (49152, 65535),
        policy: PeerPolicy | None = None,
        maxLifetime: float = 3600.0,
        maxAllocations: int = 10000,
        userQuota: int = 0,
        ipQuota: int = 0,
        maxBps: float = 0.0,
        bpsCapacity: float = 0.0,
        maxPermissions: int = 100,
        maxChannels: int = 100,
        maxPermissionsTotal: int = 100_000,
        maxChannelsTotal: int = 100_000,
        tcpRelays: bool = True,
        userTable: StoredUsers | None = None,
        relaySockets: RelaySockets | None = None,
        rng: random.Random | None = None,
        fastPath: FastPathKernel | None = None,
    ) -> None:
        self.reactor = reactor
        self.clock = reactor
        self.stun = stun
        self.credentials = credentials
        self.relayPorts = relayPorts
        self.userTable = userTable
        self.stats = Stats()
        self.badInputLog = RateLimitedLog(self.log, reactor)
        rng = rng or random.SystemRandom()
        userQuota, ipQuota = autoQuotas(relayPorts, maxAllocations, userQuota, ipQuota)
        self.budget = TableBudget(maxPermissionsTotal, maxChannelsTotal)
        #: The allocation table; C{sessions()} and C{kill()} are for operators.
        self.table = AllocationTable(reactor, self.stats, self.log,
                                     maxAllocations=maxAllocations, userQuota=userQuota,
                                     ipQuota=ipQuota, budget=self.budget)
        self.relays = RelayAllocator(
            relaySockets or KernelRelaySockets(reactor), relayPorts,
            relayAddresses=relayAddresses, external=external,
            listenAddresses=lambda: self.stun.listenAddresses, rng=rng, log=self.log,
            badInputLog=self.badInputLog)
        self.respond = TurnResponder(stun, self.stats)
        self.data = DataPath(reactor, self.table, self.relays, self.stats, self.badInputLog,
                             bpsCapacity)
        self.permissions = PermissionHandler(reactor, self.table, self.respond,
                                             policy or PeerPolicy(), self.stats,
                                             self.badInputLog)
        self.tcp = TcpRelays(reactor, self.table, self.relays, self.respond, self.permissions,
                             self.stats, rng)
        self.allocate = AllocateHandler(
            reactor, self.table, self.relays, self.respond,
            AllocationLimits(max(maxLifetime, 600.0), maxPermissions, maxChannels, maxBps,
                             tcpRelays),
            self.budget, self.data, self.tcp)
        self.table.observers += [self.relays, self.tcp]
        #: The kernel's channel-data fast path (docs/fastpath.md), if loaded.
        self.fastPath: FastPathEntries | None = None
        self._collector: task.LoopingCall | None = None
        if fastPath is not None and bpsCapacity:
            # The kernel counts no shared bandwidth budget: with one, everything stays
            # where the budget is enforced.
            self.log.info("TURN fast path unused: bps-capacity is enforced on the Python "
                          "path")
            fastPath.close()
            fastPath = None
        if fastPath is not None:
            self.fastPath = FastPathEntries(reactor, fastPath, self.stats,
                                            lambda host: self.policy.permitted(host))
            self.table.observers.append(self.fastPath)
            for name in STATS:
                self.stats.gauge(f"turn.fastpath.{name}", _kernelStat(fastPath, name))
        self._handlers = {
            Method.REFRESH: self.allocate.refresh,
            Method.CREATE_PERMISSION: self.permissions.createPermission,
            Method.CHANNEL_BIND: self.permissions.channelBind,
            Method.CONNECT: self.tcp.connect,
        }
        self._sweeper: task.LoopingCall | None = None
        self.stats.gauge("turn.allocations", lambda: len(self.table))
        self.stats.gauge("turn.permissions", self.table.livePermissions)
        self.stats.gauge("turn.channels", self.table.liveChannels)

    @property
    def policy(self) -> PeerPolicy:
        """Which peers may be relayed to (replaceable while running)."""
        return self.permissions.policy

    @policy.setter
    def policy(self, policy: PeerPolicy) -> None:
        self.permissions.policy = policy

    @property
    def allocations(self) -> dict[Any, Any]:
        """The allocations by 5-tuple key (the table's)."""
        return self.table.allocations

    @property
    def userQuota(self) -> int:
        """Allocations and reservations one user may hold."""
        return self.table.userQuota

    @property
    def ipQuota(self) -> int:
        """Allocations one client address may hold."""
        return self.table.ipQuota

    @classmethod
    def fromConfig(cls, context: Any) -> TurnService:
        """The service as the appliance's settings describe it, on the STUN service
        already built in C{context}."""
        config = context.config
        stun = context.built["stun"]
        table = StoredUsers(userStore(config.store, context.dataDir), context.reactor)
        sources = credentialSources(context, table)
        return cls(
            context.reactor,
            stun,
            fastPath=fastPathFor(config.fast_path),
            credentials=ChainedCredentials(sources),
            relayAddresses={family(a): a for a in config.relay_ip},
            external=ExternalAddresses(config.external_ip),
            relayPorts=config.relay_ports,
            policy=PeerPolicy(config.allow_peer, config.deny_peer,
                              config.allow_loopback_peers),
            maxLifetime=float(config.max_lifetime),
            maxAllocations=config.max_allocations,
            userQuota=config.user_quota,
            ipQuota=config.ip_quota,
            maxBps=float(config.max_bps),
            bpsCapacity=float(config.bps_capacity),
            maxPermissions=config.max_permissions,
            maxChannels=config.max_channels,
            tcpRelays=not config.no_tcp_relay,
            userTable=table,
        )

    def reconfigure(self, context: Any) -> None:
        """A reload: the configured users and REST secret from C{context.config}, and the
        durable user table read again. The credential chain is changed in place, so the
        STUN service (which holds the same chain) checks with it at once."""
        if self.userTable is None or not isinstance(self.credentials, ChainedCredentials):
            return
        self.credentials.sources[:] = credentialSources(context, self.userTable)
        self.userTable.reload()

    # -- operators (the gateway's turn.allocations.list, turn.users.*) ----------------------

    def listing(self, kind: str) -> Any:
        """JSON-ready rows: C{allocations} (L{AllocationTable.sessions}) or C{users}
        (the durable user table: names, realms and creation times, never keys; a
        Deferred). C{KeyError} for another kind."""
        if kind == "allocations":
            return [sessionRow(s) for s in self.table.sessions()]
        if kind == "users":
            if self.userTable is None:
                return []
            return self.userTable.store.list().addCallback(lambda rows: [
                {"name": name, "realm": realm, "createdAt": created}
                for name, realm, created in rows])
        raise KeyError(kind)

    def mintCredentials(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The operator's C{turn.credentials.mint}: REST credentials (C{auth-secret}) for
        C{params["user"]} (default C{operator}), valid C{params["ttl"]} seconds (default
        600, at most a day). C{ValueError} without a REST secret or with bad params."""
        rest = [s for s in getattr(self.credentials, "sources", ())
                if isinstance(s, RestCredentials)]
        if not rest:
            raise ValueError("no auth-secret is configured: REST credentials are off")
        user, ttl = params.get("user", "operator"), params.get("ttl", 600)
        if not isinstance(user, str) or not user or ":" in user:
            raise ValueError("user must be a non-empty string without ':'")
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 < ttl <= 86400:
            raise ValueError("ttl must be an integer from 1 to 86400")
        username, password = rest[0].mint(user, ttl)
        return {"username": username, "credential": password, "ttl": ttl,
                "realm": self.stun.auth.realm}

    def startDrain(self) -> None:
        """Refuse new allocations (508); existing ones are refreshed until they end."""
        self.allocate.draining = True

    def remaining(self) -> int:
        """Allocations a drain waits for."""
        return len(self.table.allocations)

    def manage(self, kind: str, action: str, params: Mapping[str, Any]) -> Any:
        """C{users}/C{add} (C{name}, C{password}; the server's realm) or C{users}/
        C{remove} (C{name}) in the durable table, in force on this server at once; a
        Deferred of C{{"name", "created"}} or C{{"name", "removed"}}. C{remove} also ends
        the user's allocations. C{KeyError} for another kind or action, C{ValueError}
        for bad params."""
        if kind != "users" or action not in ("add", "remove") or self.userTable is None:
            raise KeyError(f"{kind}.{action}")
        name = params.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string")
        users = self.userTable
        if action == "add":
            password = params.get("password")
            if not isinstance(password, str) or not password:
                raise ValueError("password must be a non-empty string")
            d = users.store.add(name, password, self.stun.auth.realm, self.clock.seconds())
            d.addCallback(lambda new: users.reload().addCallback(
                lambda _: {"name": name, "created": new}))
            return d

        def removed(found: bool) -> Any:
            killed = self.table.kill(user=name)
            return users.reload().addCallback(
                lambda _: {"name": name, "removed": found, "allocationsEnded": killed})

        return users.store.remove(name).addCallback(removed)

    # -- wiring ----------------------------------------------------------------------------

    def startService(self) -> None:
        """Take the TURN methods and ChannelData from the STUN service."""
        super().startService()
        if self.userTable is not None:
            self.userTable.start()
        for method in _TURN_METHODS:
            self.stun.registerMethod(method, self.messageReceived)
        self.stun.channelDataHandler = self.data.channelDataReceived
        self.stun.channelMax = CHANNEL_MAX_RFC5766
        self.stun.streamClosedHandlers.append(self.streamClosed)
        self.stun.credentials = self.credentials
        self.stun.auth.credentials = self.credentials
        self._sweeper = task.LoopingCall(self.table.sweep)
        self._sweeper.clock = self.clock
        self._sweeper.start(SWEEP_INTERVAL, now=False)
        if self.fastPath is not None:
            self._collector = task.LoopingCall(self.fastPath.collectAll)
            self._collector.clock = self.clock
            self._collector.start(COLLECT_INTERVAL, now=False)
        low, high = self.relayPorts
        self.log.info(
            "TURN on the STUN sockets, relayed ports {low}-{high}, loopback peers "
            "{loopback}", low=low, high=high,
            loopback="allowed" if self.policy.allowLoopback else "refused")

    def stopService(self) -> None:
        """Delete every allocation and give the STUN service its methods back."""
        super().stopService()
        for method in _TURN_METHODS:
            self.stun.methods.pop(method, None)
        self.stun.channelDataHandler = None
        self.stun.channelMax = CHANNEL_MAX
        if self.streamClosed in self.stun.streamClosedHandlers:
            self.stun.streamClosedHandlers.remove(self.streamClosed)
        self.table.clear()
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        if self._collector is not None and self._collector.running:
            self._collector.stop()
        if self.fastPath is not None:
            self.fastPath.kernel.close()
        if self.userTable is not None:
            self.userTable.stop()

    def streamClosed(self, link: StunLink) -> None:
        """A TCP/TLS connection closed: a client data connection's peer connection closes
        (RFC 6062 §5.5); a control connection's allocation ends (RFC 8656 §3.1)."""
        if self.tcp.streamClosed(link):
            return
        peer: Any = getattr(link, "peer", None)
        allocation = self.table.get((link, peer))
        if allocation is not None:
            self.table.delete(allocation, "deleted")

    # -- dispatch (RFC 8656 §5) ------------------------------------------------------------

    def messageReceived(self, message: Message, link: StunLink,
                        source: tuple[str, int]) -> Reply | None:
        """A TURN method from the STUN sockets: requests are authenticated and handled,
        Send indications relayed, anything else dropped and counted. Answers before
        authentication are returned for the STUN dispatcher to send (it charges them to
        the source's error budget once); the handlers answer the rest themselves."""
        if message.cls == StunClass.INDICATION and message.method == Method.SEND:
            self.data.sendIndication(message, link, source)
            return None
        if message.cls != StunClass.REQUEST or message.classic:
            self.stats.add("turn.dropped.not_request")
            return None
        self.stats.add(f"turn.requests.{Method(message.method).name.lower()}")
        request = TurnRequest(message, link, source)
        # Unknown comprehension-required attributes (420) and malformed ones (400) were
        # answered by the STUN dispatcher's one check (RFC 8489 §6.3.1) before this.
        if message.method == Method.ALLOCATE and not DONT_FRAGMENT_SUPPORTED and (
                Attr.DONT_FRAGMENT in message):
            # RFC 8656 §7.2 step 4: "If it does, but the server does not support sending
            # UDP datagrams with the DF bit set to 1, then the server treats the
            # DONT-FRAGMENT attribute ... as an unknown comprehension-required attribute."
            self.stats.add("turn.errors.420")
            return Reply(message.errorReply(420).set(Attr.UNKNOWN_ATTRIBUTES,
                                                     [Attr.DONT_FRAGMENT]))
        # RFC 8656 §7.2 step 1 and §5: "The server MUST require that the request be
        # authenticated. This authentication MUST be done using the long-term credential
        # mechanism of [RFC 8489]".
        auth = self.stun.auth.check(message, request.host)
        if auth.error is not None:
            self.stats.add(f"turn.errors.{auth.error.errorCode}")
            return Reply(auth.error)
        request.auth = auth
        if message.method == Method.ALLOCATE:
            self.allocate.allocate(request)
            return None
        if message.method == Method.CONNECTION_BIND:
            self.tcp.connectionBind(request)
            return None
        # RFC 8656 §5: "if the 5-tuple does not identify an existing allocation, then ...
        # If the message is a request, the server MUST reject the request with a 437
        # (Allocation Mismatch) error."
        request.allocation = self.table.get(request.key)
        if request.allocation is None:
            self.respond.error(request, 437)
            return None
        # RFC 8656 §5: "the server MUST check that the request ... uses the same username
        # as the one used to create the allocation. If not, the server MUST reject the
        # request with a 441 (Wrong Credentials) error."
        if auth.username != request.allocation.username:
            self.respond.error(request, 441)
            return None
        handler = self._handlers.get(Method(message.method))
        if handler is None:  # a Send request: Send is an indication only (RFC 8656 §11)
            self.respond.error(request, 400)
            return None
        handler(request)
        return None
