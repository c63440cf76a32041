# -*- test-case-name: test.unit.test_logformat -*-
"""L{p2pnet.logformat}: JSON lines for twistd."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogPublisher
from twisted.trial.unittest import SynchronousTestCase

from p2pnet import logformat
from p2pnet.errors import ConfigError
from p2pnet.tap import Options


class JsonObserverTests(SynchronousTestCase):
    def test_oneObjectPerLine(self) -> None:
        """Each event is one line of JSON with its format, fields and level."""
        out = io.StringIO()
        publisher = LogPublisher(logformat.jsonObserver(out))
        log = Logger(namespace="p2pnet.test", observer=publisher)
        log.info("{service} listening on {ports}", service="STUN", ports="udp 1.2.3.4:3478")
        log.warn("second\nline {n}", n=2)
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        first, second = map(json.loads, lines)
        self.assertEqual(first["log_format"], "{service} listening on {ports}")
        self.assertEqual((first["service"], first["ports"]), ("STUN", "udp 1.2.3.4:3478"))
        self.assertEqual(first["log_namespace"], "p2pnet.test")
        self.assertEqual(first["log_level"]["name"], "info")
        self.assertEqual((second["n"], second["log_level"]["name"]), (2, "warn"))
        self.assertNotIn("\x1e", out.getvalue())


class UseJsonLogTests(SynchronousTestCase):
    def tearDown(self) -> None:
        logformat._twistd.clear()

    def test_pointsTwistdLogger(self) -> None:
        """twistd's C{--logger} becomes the JSON factory, remembering where to write."""
        options = {"logger": None, "logfile": "-", "nodaemon": True, "syslog": False}
        logformat.useJsonLog(options)
        self.assertEqual(options["logger"], "p2pnet.logformat.twistdJsonObserver")
        self.assertEqual(logformat._twistd, {"logfile": "-", "nodaemon": True})

    def test_refusesLoggerAndSyslog(self) -> None:
        """Another C{--logger} or C{--syslog} is a config error naming log-format."""
        for options in ({"logger": "x.y"}, {"syslog": True}):
            with self.assertRaises(ConfigError) as raised:
                logformat.useJsonLog(dict(options))
            self.assertIn("log-format", str(raised.exception))

    def test_pluginOptions(self) -> None:
        """C{twistd p2pnet --log-format json} sets the parent's logger; text leaves it."""
        for fmt, expected in (("json", "p2pnet.logformat.twistdJsonObserver"),
                              ("text", None)):
            options = Options()
            options.parent = {"logger": None, "logfile": "", "nodaemon": True}
            options.parseOptions(["--log-format", fmt, "--services", "stun"])
            self.assertEqual(options.parent["logger"], expected)

    def test_writesToFile(self) -> None:
        """Without C{--nodaemon}, the factory writes to C{--logfile}."""
        path = self.mktemp()
        logformat.useJsonLog({"logfile": path, "nodaemon": False})
        observer = logformat.twistdJsonObserver()
        Logger(namespace="t", observer=observer).info("hello {x}", x=1)
        with open(path) as f:
            self.assertEqual(json.loads(f.readline())["x"], 1)
