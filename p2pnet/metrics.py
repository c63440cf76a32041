# -*- test-case-name: test.unit.test_metrics,test.interop.test_metrics_process -*-
"""Prometheus metrics of every service, produced with C{prometheus_client}.

L{ServiceCollector} is a custom collector: at each scrape it reads the counters the
services keep anyway (their L{p2pnet.stats.Stats}), so serving metrics costs nothing per
packet. Each counter key maps to one metric family of L{FAMILIES} (names and HELP text;
docs/metrics.md lists the same set, and a test keeps them equal): counters end in
C{_total}, error codes, reasons and methods are label values, never parts of names, and
no label holds a user name or an address. A key no rule knows is exported as
C{p2pnet_unlisted_events_total{service,event}} rather than dropped.

L{metricsRegistry} adds C{prometheus_client}'s process, platform and GC collectors;
L{metricsResource} serves a registry through C{prometheus_client.twisted.MetricsResource}.
That resource renders in the reactor's thread pool, so the collector takes its snapshot in
the reactor thread (C{blockingCallFromThread}): the services' dictionaries are only ever
touched by the thread that changes them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.twisted import MetricsResource
from twisted.application.service import Service
from twisted.internet.interfaces import IListeningPort
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger
from twisted.python import threadable
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

from p2pnet.config import parseHostPort
from p2pnet.listen import listenTCP
from p2pnet.stats import Stats

__all__ = [
    "FAMILIES",
    "MetricsService",
    "ServiceCollector",
    "familyOf",
    "metricsRegistry",
    "metricsResource",
]

#: Family name (without C{p2pnet_} and without C{_total}) to its type, label names and
#: HELP text. Service-less families first, then one block per service.
FAMILIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "service_up": ("gauge", ("service",), "1 when the service is running, 0 when stopped."),
    "listen_port": ("gauge", ("service", "transport"),
                    "Port number a service's listeners of one transport are bound to."),
    "unlisted_events": ("counter", ("service", "event"),
                        "Counters that have no metric of their own yet (docs/metrics.md)."),
    # stun
    "stun_connections": ("gauge", (), "Open STUN/TURN connections over TCP and TLS."),
    "stun_connection_events": ("counter", ("event",),
                               "STUN/TURN TCP and TLS connections accepted, refused at "
                               "the limit, or authenticated."),
    "stun_auth_failures": ("counter", (), "STUN/TURN requests whose credentials failed."),
    "stun_auth_throttled": ("counter", (),
                            "STUN/TURN requests refused because their source failed "
                            "authentication too often."),
    "stun_binding_requests": ("counter", (), "Binding requests received."),
    "stun_binding_success": ("counter", (), "Binding success responses sent."),
    "stun_indications": ("counter", (), "STUN indications received."),
    "stun_error_responses": ("counter", ("code",), "STUN error responses sent, by error code."),
    "stun_dropped": ("counter", ("reason",),
                     "STUN messages dropped without an answer, by reason."),
    "stun_malformed": ("counter", (), "Datagrams or frames that looked like STUN but did not "
                       "decode."),
    "stun_garbage": ("counter", (), "Datagrams or frames that were neither STUN nor "
                     "ChannelData."),
    "stun_send_errors": ("counter", (), "Answers the socket refused to send."),
    "stun_internal_errors": ("counter", (), "Requests whose handling raised (answered 500)."),
    # turn
    "turn_allocations": ("gauge", (), "Live TURN allocations."),
    "turn_permissions": ("gauge", (), "Live TURN permissions over all allocations."),
    "turn_channels": ("gauge", (), "Live TURN channel bindings over all allocations."),
    "turn_requests": ("counter", ("method",), "TURN requests received, by method."),
    "turn_error_responses": ("counter", ("code",), "TURN error responses sent, by error code."),
    "turn_allocation_events": ("counter", ("event",),
                               "TURN allocations created, refreshed, and ended (by why)."),
    "turn_permissions_installed": ("counter", (), "TURN permissions installed or refreshed."),
    "turn_channels_bound": ("counter", (), "TURN channel bindings made or refreshed."),
    "turn_dropped": ("counter", ("reason",), "TURN data dropped without an answer, by reason."),
    "turn_tcp_peer_connections": ("counter", (), "RFC 6062 peer connections set up."),
    "turn_tcp_peer_connections_bound": ("counter", (),
                                        "RFC 6062 peer connections bound to a client data "
                                        "connection."),
    "turn_internal_errors": ("counter", (), "TURN data paths that raised."),
    "turn_fastpath_channels": ("gauge", (), "TURN channels the kernel fast path forwards "
                               "(docs/fastpath.md)."),
    "turn_fastpath_packets": ("counter", ("direction",), "Datagrams the kernel fast path "
                              "relayed, to_peers or from_peers (read every 5 s)."),
    "turn_fastpath_bytes": ("counter", ("direction",), "Bytes of data the kernel fast path "
                            "relayed, to_peers or from_peers (read every 5 s)."),
    "turn_fastpath_program": ("counter", ("event",), "The fast path program's own counts "
                              "(forwarded_out, forwarded_in, expired, too_long, "
                              "adjust_failed, malformed) and entries not written for want "
                              "of a route (no_route)."),
    "gateway_cluster_events": ("counter", ("event",), "node.invoke across the gateways of "
                               "a cluster: invokes forwarded, bad messages, store errors."),
    "rendezvous_cluster_events": ("counter", ("event",), "Routing across the nodes of a "
                                  "cluster: requests and answers forwarded, undeliverable "
                                  "requests, bad messages, store errors."),
    "rendezvous_store_errors": ("counter", (), "Reads or writes of the peer registry "
                                "(SQLite or the shared store) that failed."),
    "rendezvous_presence_errors": ("counter", (), "Reads or writes of the cluster's presence "
                                   "table (the shared store) that failed."),
    # relay (hbbr)
    "relay_pairs": ("gauge", (), "RustDesk relay pairs relaying now."),
    "relay_waiting": ("gauge", (), "RustDesk relay connections waiting for their peer."),
    "relay_connections": ("gauge", (), "Open RustDesk relay connections."),
    "relay_relayed_bytes": ("counter", (), "Bytes relayed between RustDesk peers."),
    "relay_throttled": ("counter", (), "Times a relay pair was held back by its rate limit."),
    "relay_refused": ("counter", ("reason",), "RustDesk relay connections refused, by reason."),
    "relay_paired": ("counter", (), "RustDesk relay pairs formed."),
    "relay_pairs_ended": ("counter", ("reason",),
                          "RustDesk relay pairs or waiting connections ended by the server, "
                          "by reason."),
    "relay_downgraded": ("counter", (), "Relay pairs moved to the downgraded rate."),
    "relay_bad_input": ("counter", ("kind",),
                        "RustDesk relay connections that sent bad or no input, by kind."),
    # rendezvous (hbbs)
    "rendezvous_peers_in_memory": ("gauge", (), "RustDesk peers held in memory."),
    "rendezvous_peers_bytes": ("gauge", (), "Bytes of peer records held in memory."),
    "rendezvous_peers_online": ("gauge", (), "RustDesk peers seen recently (online)."),
    "rendezvous_punch_pending": ("gauge", (), "TCP hole punches waiting for their answer."),
    "rendezvous_connections": ("gauge", (), "Open RustDesk rendezvous TCP and WebSocket "
                               "connections."),
    "rendezvous_peers_table_full": ("counter", (), "Registrations refused: peer table full."),
    "rendezvous_peers_pruned": ("counter", (), "Stale peers removed from memory."),
    "rendezvous_register_peer": ("counter", (), "RegisterPeer messages answered."),
    "rendezvous_register_pk": ("counter", (), "RegisterPk messages received."),
    "rendezvous_register_pk_refused": ("counter", ("reason",),
                                       "RegisterPk messages refused, by reason."),
    "rendezvous_messages": ("counter", ("kind",),
                            "Rendezvous messages received on TCP or WebSocket, by kind."),
    "rendezvous_routing": ("counter", ("event",),
                           "Rendezvous routing outcomes (punch hole, local address, "
                           "relay, refusals), by event."),
    "rendezvous_dropped": ("counter", ("reason",),
                           "Rendezvous input dropped or refused, by reason."),
    "rendezvous_secure_links": ("counter", (), "Encrypted rendezvous connections set up."),
    "rendezvous_software_update": ("counter", (), "SoftwareUpdate messages answered."),
    # gateway
    "gateway_connections_open": ("gauge", (), "Open gateway WebSocket connections."),
    "gateway_clients_connected": ("gauge", (), "Authenticated gateway clients."),
    "gateway_nodes_connected": ("gauge", (), "Nodes connected to the gateway."),
    "gateway_pairings_pending": ("gauge", (), "Device pairings waiting for approval."),
    "gateway_devices_paired": ("gauge", (), "Paired devices in the gateway store."),
    "gateway_connections": ("counter", (), "Gateway WebSocket connections opened."),
    "gateway_handshakes": ("counter", (), "Gateway handshakes completed."),
    "gateway_handshake_timeouts": ("counter", (), "Gateway handshakes that timed out."),
    "gateway_auth_failures": ("counter", ("reason",), "Gateway authentication failures, by "
                              "reason."),
    "gateway_preauth_rejected": ("counter", (), "Connections refused before authentication."),
    "gateway_requests": ("counter", (), "Gateway method requests received."),
    "gateway_handler_errors": ("counter", (), "Gateway method handlers that raised."),
    "gateway_invokes": ("counter", (), "Invocations sent to nodes."),
    "gateway_invoke_timeouts": ("counter", (), "Node invocations that timed out."),
    # node
    "node_viewers": ("gauge", (), "Viewers logged in to the KVM node."),
    "node_sessions": ("gauge", (), "Open KVM node sessions."),
    "node_events": ("counter", ("event",),
                    "KVM node registration, login and connection events, by event."),
    "node_requests": ("counter", ("kind",), "Connection requests the node received, by kind."),
}

_PREFIX = "p2pnet_"

#: (service, key regex, family, fixed label values or None to use the match groups).
#: The first match wins; keys are the services' Stats keys without a C{<service>.} prefix.
_RULES: list[tuple[str, re.Pattern[str], str, tuple[str, ...] | None]] = [
    (svc, re.compile(pattern), family, labels)
    for svc, pattern, family, labels in [
        ("stun", r"connections\.(\w+)", "stun_connection_events", None),
        ("stun", r"auth\.failures", "stun_auth_failures", ()),
        ("stun", r"auth\.throttled", "stun_auth_throttled", ()),
        ("stun", r"binding\.requests", "stun_binding_requests", ()),
        ("stun", r"binding\.success", "stun_binding_success", ()),
        ("stun", r"errors\.(\d+)", "stun_error_responses", None),
        ("stun", r"dropped\.(\w+)", "stun_dropped", None),
        ("turn", r"requests\.(\w+)", "turn_requests", None),
        ("turn", r"errors\.(\d+)", "turn_error_responses", None),
        ("turn", r"allocations\.(\w+)", "turn_allocation_events", None),
        ("turn", r"permissions\.installed", "turn_permissions_installed", ()),
        ("turn", r"channels\.bound", "turn_channels_bound", ()),
        ("turn", r"dropped\.(\w+)", "turn_dropped", None),
        ("turn", r"tcp\.connections", "turn_tcp_peer_connections", ()),
        ("turn", r"tcp\.bound", "turn_tcp_peer_connections_bound", ()),
        ("turn", r"fastpath\.packets_(to_peers|from_peers)", "turn_fastpath_packets", None),
        ("turn", r"fastpath\.bytes_(to_peers|from_peers)", "turn_fastpath_bytes", None),
        ("turn", r"fastpath\.(?!channels$)(\w+)", "turn_fastpath_program", None),
        ("relay", r"refused_(\w+)", "relay_refused", None),
        ("relay", r"(unpaired_timeout|idle_timeout|killed)", "relay_pairs_ended", None),
        ("relay", r"ended_(blocklist)", "relay_pairs_ended", None),
        ("relay", r"(first_message_timeout|bad_first_message|bad_frame|bad_message)",
         "relay_bad_input", None),
        ("rendezvous", r"register_pk_(\w+)", "rendezvous_register_pk_refused", None),
        ("rendezvous", r"cluster_(\w+)", "rendezvous_cluster_events", None),
        ("rendezvous", r"stream_(throttled|timeout|overflow)", "rendezvous_dropped", None),
        ("rendezvous", r"stream_(\w+)", "rendezvous_messages", None),
        ("rendezvous", r"(reply_without_requester|licence_mismatch|lookups_refused|"
         r"fetch_local_addr|punch_hole|relay_unknown_peer|undeliverable)",
         "rendezvous_routing", None),
        ("rendezvous", r"(connections_refused|udp_flood_dropped|udp_ignored|unknown_message|"
         r"config_update_refused|bad_datagram|udp_send_error|bad_message|bad_key_exchange|"
         r"bad_frame|decrypt_error)", "rendezvous_dropped", None),
        ("gateway", r'auth_failures\{reason="([^"]*)"\}', "gateway_auth_failures", None),
        ("gateway", r"cluster_(\w+)", "gateway_cluster_events", None),
        ("node", r"request_(dropped|failed)", "node_events", ("request_{0}",)),
        ("node", r"request_(\w+)", "node_requests", None),
        ("node", r"(registered|register_failed|rebind|stray_datagram|bad_datagram|"
         r"connect_failed|link_silent|bad_config_update|server_moved|sessions_refused|"
         r"viewers_refused|logins|login_failed|duplicate_request|nat_open|punch_unused)",
         "node_events", None),
    ]
]


def familyOf(service: str, key: str) -> tuple[str, tuple[str, ...]]:
    """The family (without C{p2pnet_}) and label values that C{service}'s Stats key
    C{key} is exported as; C{("unlisted_events", (service, key))} when no rule knows it.
    """
    bare = key.removeprefix(f"{service}.")
    for svc, pattern, family, labels in _RULES:
        if svc != service:
            continue
        found = pattern.fullmatch(bare)
        if found is None:
            continue
        if labels is None:
            return family, found.groups()
        return family, tuple(label.format(*found.groups()) for label in labels)
    plain = f"{service}_{bare}".replace(".", "_")
    if plain in FAMILIES and not FAMILIES[plain][1]:
        return plain, ()
    return "unlisted_events", (service, key)


def _snapshot(services: Mapping[str, Any]) -> list[tuple[str, bool, dict[str, int],
                                                           dict[str, int]]]:
    """Per service: its name, whether it runs, its counters and its listening ports."""
    taken = []
    for name, service in services.items():
        stats = getattr(service, "stats", None)
        values = stats.snapshot() if isinstance(stats, Stats) else {}
        ports = dict(getattr(service, "boundPorts", {}) or {})
        taken.append((name, bool(getattr(service, "running", False)), values, ports))
    return taken


class ServiceCollector:
    """A C{prometheus_client} collector over the services' counters, read at scrape time.

    @param services: returns every service of the appliance by name (as the gateway's
        C{siblings} or a C{MultiService}'s named children); called at each scrape.

    Called from a thread other than the reactor's (C{MetricsResource}'s thread pool), it
    takes the snapshot in the reactor thread and waits for it.
    """

    def __init__(self, services: Callable[[], Mapping[str, Any]]) -> None:
        self._services = services

    def _take(self) -> list[tuple[str, bool, dict[str, int], dict[str, int]]]:
        if threadable.ioThread is None or threadable.isInIOThread():
            return _snapshot(self._services())
        from twisted.internet import reactor

        return blockingCallFromThread(reactor, lambda: _snapshot(self._services()))

    def collect(self) -> Iterator[Metric]:
        """Every family of L{FAMILIES} for the services there are, plus unlisted keys."""
        taken = self._take()
        names = {name for name, _, _, _ in taken}
        families: dict[str, Any] = {}

        def family(name: str) -> Any:
            if name not in families:
                kind, labels, text = FAMILIES[name]
                make = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                families[name] = make(_PREFIX + name, text, labels=labels)
            return families[name]

        summed: dict[tuple[str, tuple[str, ...]], int] = {}
        for name, running, values, ports in taken:
            family("service_up").add_metric([name], int(running))
            for transport, port in sorted(ports.items()):
                family("listen_port").add_metric([name, transport], port)
            for key, value in values.items():
                owner, dot, _ = key.partition(".")
                target = familyOf(owner if dot and owner in names else name, key)
                summed[target] = summed.get(target, 0) + int(value)
        for (fam, labels), value in sorted(summed.items()):
            family(fam).add_metric(list(labels), value)
        for fam, (_, labels, _) in FAMILIES.items():
            service = fam.split("_", 1)[0]
            if service in names and not labels:
                family(fam)
        for fam, metric in families.items():
            if not FAMILIES[fam][1] and not metric.samples:
                metric.add_metric([], 0)
        yield from families.values()


def metricsRegistry(services: Callable[[], Mapping[str, Any]]) -> CollectorRegistry:
    """A registry with L{ServiceCollector} and prometheus_client's process, platform and
    garbage-collector metrics (C{process_*}, C{python_info}, C{python_gc_*})."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(services))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def metricsResource(services: Callable[[], Mapping[str, Any]]) -> IResource:
    """C{GET} answers every metric in the Prometheus text format."""
    resource: IResource = MetricsResource(metricsRegistry(services))
    return resource


class MetricsService(Service):
    """The C{metrics-listen} listener: a C{twisted.web} site whose C{/metrics} serves
    every sibling service's metrics, whichever services run.

    @param listen: C{ADDR:PORT} as the C{metrics-listen} setting gives it.
    """

    log = Logger()

    def __init__(self, reactor: Any, listen: str) -> None:
        self._reactor = reactor
        self.address = parseHostPort(listen)
        self.port: IListeningPort | None = None

    def siblings(self) -> dict[str, Any]:
        """The appliance's services by name (this one left out)."""
        parent = self.parent
        if parent is None:
            return {}
        return {s.name: s for s in parent if s.name and s is not self}

    def startService(self) -> None:
        """Listen; a port in use raises L{p2pnet.errors.ConfigError} naming metrics-listen."""
        root = Resource()
        root.putChild(b"metrics", metricsResource(self.siblings))
        host, port = self.address
        site: Any = Site(root)
        self.port = listenTCP(self._reactor, site, host, port, "metrics-listen")
        bound = self.port.getHost()
        shown = f"[{host}]" if ":" in host else host
        self.log.info("metrics listening on http://{address}:{port}/metrics",
                      address=shown, port=bound.port)  # type: ignore[attr-defined]
        super().startService()

    def stopService(self) -> Any:
        """Stop listening."""
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None
