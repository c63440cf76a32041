# -*- test-case-name: test.unit.test_metrics -*-
"""L{p2pnet.metrics}: the collector over the services' counters, and its documentation."""

from __future__ import annotations

import os
import re

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.application.service import Service
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.metrics import FAMILIES, familyOf, metricsRegistry
from p2pnet.stats import Stats

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Source file (relative to p2pnet/) prefix to the service whose Stats its keys go to.
_OWNERS = [
    ("services/stun", "stun"), ("services/turn", "turn"), ("services/relay", "relay"),
    ("protocols/relay", "relay"), ("services/rendezvous", "rendezvous"),
    ("protocols/rendezvous", "rendezvous"), ("services/gateway", "gateway"),
    ("protocols/gateway_server", "gateway"), ("node/", "node"),
]
_KEY = re.compile(r"""stats\.(add|gauge)\(\s*(f?)(['"])(.*?)\3""")


def _service(name: str, **counters: int) -> Service:
    service = Service()
    service.setName(name)
    service.stats = Stats()  # type: ignore[attr-defined]
    for key, value in counters.items():
        service.stats.add(key.replace("__", "."), value)  # type: ignore[attr-defined]
    return service


def _scrape(services: dict[str, Service]) -> dict[str, object]:
    text = generate_latest(metricsRegistry(lambda: services)).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _sourceKeys() -> list[tuple[str, str]]:
    """Every literal Stats key in p2pnet/: an f-string's fields and the part a key ending
    in C{_} is completed with at run time are filled with C{0}."""
    found = []
    for base, _, files in os.walk(os.path.join(ROOT, "p2pnet")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(base, name)
            relative = os.path.relpath(path, os.path.join(ROOT, "p2pnet"))
            owner = next((svc for prefix, svc in _OWNERS if relative.startswith(prefix)), None)
            if owner is None:
                continue
            with open(path) as f:
                text = f.read()
            for match in _KEY.finditer(text):
                key = match.group(4)
                if match.group(2):
                    key = re.sub(r"\{\{", "{", re.sub(r"\}\}", "}", re.sub(
                        r"(?<!\{)\{[^{}]*\}(?!\})", "0", key)))
                found.append((owner, key + "0" if key.endswith("_") else key))
    return found


class CollectorTests(SynchronousTestCase):
    def test_namesTypesLabels(self) -> None:
        """Counters end in C{_total}, gauges do not; codes, methods and reasons are label
        values; a running service is up; its listeners carry C{transport}."""
        turn = _service("turn", turn__allocations__created=2, turn__requests__allocate=5,
                        turn__errors__401=3, turn__errors__438=1)
        turn.stats.gauge("turn.allocations", lambda: 4)  # type: ignore[attr-defined]
        turn.running = True  # type: ignore[assignment]
        stun = _service("stun", stun__binding__requests=7)
        stun.boundPorts = {"udp": 3478, "tls": 5349}  # type: ignore[attr-defined]
        found = _scrape({"stun": stun, "turn": turn})
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in found.values() for s in f.samples}  # type: ignore[attr-defined]
        self.assertEqual(found["p2pnet_turn_allocations"].type, "gauge")  # type: ignore[attr-defined]
        self.assertEqual(samples[("p2pnet_turn_allocations", ())], 4)
        self.assertEqual(found["p2pnet_turn_error_responses"].type, "counter")  # type: ignore[attr-defined]
        self.assertEqual(samples[("p2pnet_turn_error_responses_total", (("code", "401"),))], 3)
        self.assertEqual(samples[("p2pnet_turn_error_responses_total", (("code", "438"),))], 1)
        self.assertEqual(samples[("p2pnet_turn_requests_total", (("method", "allocate"),))], 5)
        self.assertEqual(
            samples[("p2pnet_turn_allocation_events_total", (("event", "created"),))], 2)
        self.assertEqual(samples[("p2pnet_stun_binding_requests_total", ())], 7)
        self.assertEqual(samples[("p2pnet_service_up", (("service", "turn"),))], 1)
        self.assertEqual(samples[("p2pnet_service_up", (("service", "stun"),))], 0)
        self.assertEqual(samples[("p2pnet_listen_port", (("service", "stun"),
                                                         ("transport", "tls")))], 5349)
        # Families of a present service are there at 0 before anything happened.
        self.assertEqual(samples[("p2pnet_turn_channels_bound_total", ())], 0)
        self.assertNotIn("p2pnet_relay_pairs", found)
        # No metric name carries a code.
        self.assertFalse([n for n in found if re.search(r"_\d{3}(_|$)", n)])

    def test_everyFamilyHasHelp(self) -> None:
        """Every family exported, ours and prometheus_client's, has HELP text; the process
        collector's metrics are there."""
        every = {name: _service(name) for name in ("stun", "turn", "relay", "rendezvous",
                                                   "gateway", "node")}
        found = _scrape(every)
        self.assertFalse([n for n, f in found.items() if not f.documentation])  # type: ignore[attr-defined]
        self.assertIn("python_info", found)
        if os.path.exists("/proc/self/stat"):
            self.assertIn("process_cpu_seconds", found)
        ours = {n.removeprefix("p2pnet_") for n in found if n.startswith("p2pnet_")}
        unlabelled = {n for n, (_, labels, _) in FAMILIES.items() if not labels}
        self.assertEqual(unlabelled - ours, set())

    def test_sharedCountersSum(self) -> None:
        """A C{turn.} key counted in the STUN service's Stats (TURN answers on its sockets)
        joins the TURN family, summed with the TURN service's own."""
        stun = _service("stun", turn__errors__401=2)
        turn = _service("turn", turn__errors__401=3)
        found = _scrape({"stun": stun, "turn": turn})
        values = [s.value for s in found["p2pnet_turn_error_responses"].samples]  # type: ignore[attr-defined]
        self.assertEqual(values, [5])

    def test_unlisted(self) -> None:
        """A key no rule knows is exported under C{unlisted_events}, not dropped."""
        found = _scrape({"relay": _service("relay", brand_new=2)})
        samples = [(s.labels, s.value)
                   for s in found["p2pnet_unlisted_events"].samples]  # type: ignore[attr-defined]
        self.assertEqual(samples, [({"service": "relay", "event": "brand_new"}, 2)])

    def test_everySourceKeyHasAFamily(self) -> None:
        """Every counter and gauge key written in p2pnet/ maps to a family of its own."""
        keys = _sourceKeys()
        self.assertGreater(len(keys), 100)
        unlisted = sorted({(svc, key) for svc, key in keys
                           if familyOf(key.partition(".")[0] if key.startswith(
                               ("stun.", "turn.")) else svc, key)[0] == "unlisted_events"})
        self.assertEqual(unlisted, [])

    def test_familiesInRange(self) -> None:
        """Every family is a counter or a gauge and its name has no C{_total} suffix
        (prometheus_client adds it)."""
        for name, (kind, _, text) in FAMILIES.items():
            self.assertIn(kind, ("counter", "gauge"), name)
            self.assertFalse(name.endswith("_total"), name)
            self.assertTrue(text.endswith("."), name)


class DocsTests(SynchronousTestCase):
    def test_docsListEveryFamily(self) -> None:
        """docs/metrics.md lists exactly the exported families, each with its type."""
        with open(os.path.join(ROOT, "docs", "metrics.md")) as f:
            text = f.read()
        listed = dict(re.findall(r"^\| `(p2pnet_\w+)` \| (counter|gauge) \|", text, re.M))
        expected = {
            "p2pnet_" + name + ("_total" if kind == "counter" else ""): kind
            for name, (kind, _, _) in FAMILIES.items()
        }
        self.assertEqual(listed, expected)

    def test_dashboardQueriesExist(self) -> None:
        """The example Grafana dashboard is JSON and queries only metrics we export."""
        import json

        with open(os.path.join(ROOT, "docs", "grafana-dashboard.json")) as f:
            dashboard = json.load(f)
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        self.assertTrue(exprs)
        known = {"p2pnet_" + n + ("_total" if k == "counter" else "")
                 for n, (k, _, _) in FAMILIES.items()}
        known |= {"process_cpu_seconds_total", "process_resident_memory_bytes",
                  "process_open_fds", "process_max_fds"}
        used = {m for e in exprs for m in re.findall(r"\b(p2pnet_\w+|process_\w+)", e)}
        self.assertEqual(used - known, set())
