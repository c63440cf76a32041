# -*- test-case-name: test.interop.test_metrics_process -*-
"""C{/metrics} of a real C{twistd -n p2pnet --services stun,turn --metrics-listen},
parsed with prometheus_client's own parser."""

from __future__ import annotations

import os
import re
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, error, reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from p2pnet.metrics import FAMILIES
from test.interop.twistd_child import TwistdChild

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class MetricsListenTests(TestCase):
    """A coturn-style STUN/TURN box with no gateway still serves metrics."""

    @defer.inlineCallbacks
    def test_scrape(self) -> Any:
        """The listener named in the log answers C{/metrics}; every family parses, has
        HELP, is listed in docs/metrics.md; the Binding request the test sent is counted;
        both services are up; the process collector's metrics are there."""
        dataDir = os.path.abspath(self.mktemp())
        child = TwistdChild([
            "--services", "stun,turn", "--listen", "127.0.0.1", "--stun-port", "0",
            "--tls-port", "0", "--metrics-listen", "127.0.0.1:0", "--data-dir", dataDir,
        ], ready=b"/metrics")
        yield child.start(self)
        yield child.answering()
        found = re.search(r"metrics listening on http://127\.0\.0\.1:(\d+)/metrics",
                          child.text())
        self.assertIsNotNone(found, child.text())
        assert found is not None
        url = f"http://127.0.0.1:{found.group(1)}/metrics".encode()
        response = yield Agent(reactor).request(b"GET", url)
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers.getRawHeaders(b"content-type")[0]
                        .startswith(b"text/plain"))
        text = (yield readBody(response)).decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        with open(os.path.join(ROOT, "docs", "metrics.md")) as f:
            doc = f.read()
        for name, family in families.items():
            self.assertTrue(family.documentation, name)
            if name.startswith("p2pnet_"):
                shown = name + ("_total" if family.type == "counter" else "")
                self.assertIn(f"| `{shown}` |", doc)
                self.assertIn(name.removeprefix("p2pnet_"), FAMILIES)
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in families.values() for s in f.samples}
        self.assertEqual(samples[("p2pnet_service_up", (("service", "stun"),))], 1)
        self.assertEqual(samples[("p2pnet_service_up", (("service", "turn"),))], 1)
        self.assertGreaterEqual(samples[("p2pnet_stun_binding_requests_total", ())], 1)
        self.assertEqual(samples[("p2pnet_turn_allocations", ())], 0)
        self.assertEqual(samples[("p2pnet_listen_port",
                                  (("service", "stun"), ("transport", "udp")))],
                         int(re.search(r"udp 127\.0\.0\.1:(\d+)", child.text()).group(1)))  # type: ignore[union-attr]
        self.assertIn("process_cpu_seconds", families)
        self.assertIn("process_resident_memory_bytes", families)
        ended = yield child.stop()
        self.assertIsInstance(ended, error.ProcessDone, child.text())

    @defer.inlineCallbacks
    def test_portInUse(self) -> Any:
        """A metrics port already taken stops start-up with one line naming the key."""
        from twisted.internet.protocol import Factory

        busy = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(busy.stopListening)
        child = TwistdChild([
            "--services", "stun", "--listen", "127.0.0.1", "--stun-port", "0",
            "--tls-port", "0", "--data-dir", os.path.abspath(self.mktemp()),
            "--metrics-listen", f"127.0.0.1:{busy.getHost().port}",
        ], ready=b"/metrics")
        yield child.start(self).addErrback(lambda _: None)
        ended = yield child.ended
        self.assertIsInstance(ended, error.ProcessTerminated)
        self.assertIn("metrics-listen", child.text())
