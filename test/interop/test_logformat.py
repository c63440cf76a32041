# -*- test-case-name: test.interop.test_logformat -*-
"""C{--log-format json} in a real C{twistd -n p2pnet}: every log line is one JSON object."""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet import defer, error
from twisted.trial.unittest import TestCase

from test.interop.twistd_child import TwistdChild

SECRET = "auth-secret-never-logged-7f3a"
PASSWORD = "user-password-never-logged-91c2"


class JsonLogTests(TestCase):
    """The appliance started the way an operator does, logging JSON."""

    @defer.inlineCallbacks
    def test_everyLineIsJson(self) -> Any:
        """From start to SIGTERM every line parses as one JSON object carrying the
        fields of the text log (C{log_format}, C{log_level}, C{log_namespace},
        C{log_time} and the event's own, e.g. the listening line's C{service});
        the configured secrets appear nowhere."""
        dataDir = os.path.abspath(self.mktemp())
        child = TwistdChild([
            "--log-format", "json", "--services", "stun,turn", "--listen", "127.0.0.1",
            "--stun-port", "0", "--tls-port", "0",
            "--auth-secret", SECRET, "--user", f"alice:{PASSWORD}", "--data-dir", dataDir,
        ])
        yield child.start(self)
        yield child.answering()
        ended = yield child.stop()
        text = child.text()
        self.assertIsInstance(ended, error.ProcessDone, text)
        lines = text.splitlines()
        self.assertGreater(len(lines), 3, text)
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                self.fail(f"not JSON: {line!r}\n{text}")
            self.assertIsInstance(event, dict, line)
            for key in ("log_format", "log_level", "log_namespace", "log_time"):
                self.assertIn(key, event, line)
            events.append(event)
        listening = [e for e in events if "listening on" in (e.get("log_format") or "")]
        self.assertTrue(listening, text)
        self.assertIn("service", listening[0])
        self.assertIn("ports", listening[0])
        self.assertNotIn(SECRET, text)
        self.assertNotIn(PASSWORD, text)

    @defer.inlineCallbacks
    def test_notWithSyslog(self) -> Any:
        """JSON cannot go to syslog: one line naming log-format, exit status 1."""
        child = TwistdChild(["--log-format", "json", "--services", "stun"])
        child.argv.insert(child.argv.index("p2pnet"), "--syslog")
        yield child.start(self).addErrback(lambda _: None)
        ended = yield child.ended
        self.assertIsInstance(ended, error.ProcessTerminated)
        self.assertEqual(ended.exitCode, 1)
        self.assertIn("p2pnet: log-format: json cannot go to syslog", child.text())
