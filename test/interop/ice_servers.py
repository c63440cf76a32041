"""p2pnet's own STUN/TURN server on loopback for the ICE tests."""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import IService
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.protocols.tls import TLSMemoryBIOFactory

from p2pnet.app import buildService
from p2pnet.config import Config

USER, PASSWORD = "alice", "wonderland"
SECRET = "ice-rest-secret"


def _kind(port: Any) -> str:
    """C{udp}, C{tcp} or C{tls}: a stream port is TLS when a TLS factory is somewhere in
    its chain of wrapped factories (listeners are wrapped by guards)."""
    factory = getattr(port, "factory", None)
    if factory is None:
        return "udp"
    for _ in range(10):
        if factory is None:
            return "tcp"
        if isinstance(factory, TLSMemoryBIOFactory):
            return "tls"
        factory = getattr(factory, "wrappedFactory", None)
    return "tcp"


class LoopbackTurn:
    """STUN+TURN in-process on 127.0.0.1 with kernel-chosen ports, loopback peers
    allowed (every ICE peer in these tests is on loopback).

    @ivar udp: @ivar tcp: @ivar tls: the ports.
    """

    def __init__(self, test: Any) -> None:
        self.dataDir = test.mktemp()
        root = buildService(Config(
            services=("stun", "turn"), listen=("127.0.0.1",), stun_port=0, tls_port=0,
            data_dir=self.dataDir, user=((USER, PASSWORD),), auth_secret=SECRET,
            allow_loopback_peers=True))
        root.startService()
        test.addCleanup(root.stopService)
        stun: Any = IService(root.getServiceNamed("stun"))
        kinds: dict[str, int] = {}
        for p in stun.ports:
            kinds.setdefault(_kind(p), p.getHost().port)
        self.udp, self.tcp, self.tls = kinds["udp"], kinds["tcp"], kinds["tls"]

    def certificatePath(self) -> str:
        """The PEM certificate the appliance generated (it names 127.0.0.1)."""
        return os.path.join(self.dataDir, "tls-cert.pem")

    def tlsOptions(self) -> Any:
        """Client TLS options trusting the appliance's certificate for 127.0.0.1."""
        with open(self.certificatePath(), "rb") as f:
            return optionsForClientTLS("127.0.0.1", trustRoot=Certificate.loadPEM(f.read()))
