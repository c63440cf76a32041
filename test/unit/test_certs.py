"""Tests for L{p2pnet.certs}."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.certs import generateSelfSigned, loadServerTLS
from p2pnet.errors import ConfigError


class CertificateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.cert = os.path.join(self.dir, "c.pem")
        self.key = os.path.join(self.dir, "k.pem")
        generateSelfSigned(self.cert, self.key)

    def test_loads(self) -> None:
        options = loadServerTLS(self.cert, self.key)
        self.assertIsNotNone(options.getContext())

    def test_chain(self) -> None:
        """Extra certificates after the leaf are sent as the chain."""
        other = os.path.join(self.dir, "o.pem")
        generateSelfSigned(other, os.path.join(self.dir, "ok.pem"), "intermediate")
        with open(self.cert, "ab") as f, open(other, "rb") as g:
            f.write(g.read())
        self.assertEqual(len(loadServerTLS(self.cert, self.key).extraCertChain), 1)

    def test_errors(self) -> None:
        """Missing files, non-PEM data and a key of another certificate name the setting."""
        error = self.assertRaises(ConfigError, loadServerTLS, "/nonexistent", self.key)
        self.assertEqual(error.key, "tls-cert")
        junk = os.path.join(self.dir, "junk")
        with open(junk, "wb") as f:
            f.write(b"not pem")
        self.assertEqual(self.assertRaises(ConfigError, loadServerTLS, junk, self.key).key,
                         "tls-cert")
        self.assertEqual(self.assertRaises(ConfigError, loadServerTLS, self.cert, junk).key,
                         "tls-key")
        otherKey = os.path.join(self.dir, "ok2.pem")
        generateSelfSigned(os.path.join(self.dir, "o2.pem"), otherKey)
        error = self.assertRaises(ConfigError, loadServerTLS, self.cert, otherKey)
        self.assertEqual(error.key, "tls-key")
        self.assertIn("does not match", str(error))
