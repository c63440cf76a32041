# -*- test-case-name: test.unit.test_gateway_console,test.interop.test_console_chromium -*-
"""What the status page and the TURN tester read and change: L{Console}.

The pages (L{p2pnet.protocols.gateway_console}) see the appliance only through this
object, which the gateway service owns. It reads the same sibling lists and changes the
operator methods serve (C{turn.allocations.list}, C{relay.pairs.kill}, ...), so the page
shows and does what C{p2pnet turn sessions} and C{p2pnet gateway call} do, and checks
the login secret as the gateway's handshake does (constant time, token or password).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed

from p2pnet.listen import describePorts
from p2pnet.services.gateway_operator import OperatorAction, OperatorListing, jsonRow
from p2pnet.stats import Stats

__all__ = ["Console", "TABLES", "ACTIONS"]

#: The tables of the page: name -> the operator list it shows.
TABLES = {
    "turn": "turn.allocations.list",
    "relay": "relay.pairs.list",
    "peers": "rendezvous.peers.list",
}
#: The kill buttons: form kind -> (operator method, the param the form's target fills).
ACTIONS = {
    "turn-user": ("turn.allocations.kill", "user"),
    "turn-client": ("turn.allocations.kill", "client"),
    "relay": ("relay.pairs.kill", "uuid"),
}
#: Most rows one table shows (the rest are counted, not listed).
MAX_ROWS = 500


class Console:
    """The status page's view of the appliance.

    @param siblings: the appliance's services by name.
    @param listings: the operator lists the wiring provided, by method.
    @param actions: the operator changes the wiring provided, by method.
    @param auth: gives the gateway's current auth settings (mode, token, password).
    @param clock: C{seconds()} for the sessions and the login limit.
    """

    def __init__(self, siblings: Callable[[], Mapping[str, Any]],
                 listings: Mapping[str, OperatorListing],
                 actions: Mapping[str, OperatorAction], auth: Callable[[], Any],
                 clock: Any) -> None:
        self.siblings = siblings
        self.listings = listings
        self.actions = actions
        self.auth = auth
        self.clock = clock

    def seconds(self) -> float:
        """Now, on the gateway's clock."""
        return float(self.clock.seconds())

    def loginEnabled(self) -> bool:
        """Whether a secret can log in (token or password mode; not behind a proxy)."""
        auth = self.auth()
        return auth.mode in ("token", "password") and bool(auth.token or auth.password)

    def checkSecret(self, secret: str) -> bool:
        """Whether C{secret} is the gateway's token or password (constant time)."""
        auth = self.auth()
        expected = auth.token if auth.mode == "token" else auth.password
        if auth.mode not in ("token", "password") or not expected:
            return False
        return hmac.compare_digest(secret.encode(), expected.encode())

    def _rows(self, method: str) -> Deferred[list[Any]]:
        listing = self.listings.get(method)
        if listing is None or not listing.owner.running:
            return succeed([])
        return maybeDeferred(listing.rows, 0, MAX_ROWS).addCallback(
            lambda rows: [jsonRow(r) for r in rows])

    def state(self) -> Deferred[dict[str, Any]]:
        """Services and listeners, counters, and the tables."""
        names = list(TABLES)
        tables = gatherResults([self._rows(TABLES[n]) for n in names], consumeErrors=True)

        def assemble(rows: list[list[Any]]) -> dict[str, Any]:
            found = dict(zip(names, rows, strict=True))
            return {"services": self._services(), "counters": self._counters(found),
                    "tables": found, "available": {n: TABLES[n] in self.listings
                                                   for n in names}}

        return tables.addCallback(assemble)

    def _services(self) -> list[dict[str, Any]]:
        out = []
        for name, service in self.siblings().items():
            ports = getattr(service, "ports", None)
            listeners = describePorts(ports) if isinstance(ports, list) and ports else ""
            out.append({"name": name, "running": bool(service.running),
                        "listeners": listeners})
        return out

    def _counters(self, tables: Mapping[str, list[Any]]) -> dict[str, int]:
        services = self.siblings()

        def stat(service: str, key: str) -> int:
            stats = getattr(services.get(service), "stats", None)
            return int(stats.snapshot().get(key, 0)) if isinstance(stats, Stats) else 0

        turnBytes = sum(r.get("bytesToPeers", 0) + r.get("bytesFromPeers", 0)
                        for r in tables.get("turn", []))
        return {
            "turnAllocations": len(tables.get("turn", [])),
            "turnBytes": turnBytes,
            "peersOnline": len(tables.get("peers", [])),
            "relayPairs": len(tables.get("relay", [])),
            "relayBytes": stat("relay", "relayed_bytes"),
            "gatewayClients": stat("gateway", "clients_connected"),
            "gatewayNodes": stat("gateway", "nodes_connected"),
        }

    def act(self, kind: str, target: str) -> Deferred[Any]:
        """Run the kill button C{kind} (L{ACTIONS}) on C{target}.

        @raise KeyError: no such kind, or the service does not offer it.
        """
        method, param = ACTIONS[kind]
        action = self.actions[method]
        return maybeDeferred(action.call, {param: target})

    def turnTest(self, host: str) -> Deferred[dict[str, Any]]:
        """The TURN tester's servers at C{host} (the address the browser used): STUN and
        TURN over UDP, TCP and TLS, with REST credentials valid ten minutes.

        @raise KeyError: no TURN service with an C{auth-secret} (C{ValueError} from it).
        """
        stun = self.siblings().get("stun")
        action = self.actions["turn.credentials.mint"]
        ports = dict(getattr(stun, "boundPorts", {}) or {})
        shown = f"[{host}]" if ":" in host else host

        def servers(minted: dict[str, Any]) -> dict[str, Any]:
            auth = {"username": minted["username"], "credential": minted["credential"]}
            out: list[dict[str, Any]] = []
            if "udp" in ports:
                out.append({"label": "STUN over UDP", "urls": f"stun:{shown}:{ports['udp']}"})
                out.append({"label": "TURN over UDP", "relay": True,
                            "urls": f"turn:{shown}:{ports['udp']}?transport=udp", **auth})
            if "tcp" in ports:
                out.append({"label": "TURN over TCP", "relay": True,
                            "urls": f"turn:{shown}:{ports['tcp']}?transport=tcp", **auth})
            if "tls" in ports:
                out.append({"label": "TURN over TLS", "relay": True,
                            "urls": f"turns:{shown}:{ports['tls']}?transport=tcp", **auth})
            return {"servers": out, "ttl": minted["ttl"]}

        return maybeDeferred(action.call, {"user": "turn-test", "ttl": 600}).addCallback(
            servers)
