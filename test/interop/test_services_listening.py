"""Tests for L{p2pnet.services.listening}: bind once, undo a partial bind, close, log."""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.errors import ConfigError
from p2pnet.listen import listenTCP, listenUDP
from p2pnet.services.listening import ListeningService
from p2pnet.testing import UDPMemoryReactor
from test.interop.test_listen import blockedOnlyOn

HOSTS = ("127.0.0.1", "127.0.0.2")


class Sample(ListeningService):
    """UDP on C{port} and TCP on C{tcpPort}, on both loopback addresses."""

    listeningName = "sample"

    def __init__(self, reactor: UDPMemoryReactor, port: int = 0, tcpPort: int = 0,
                 hosts: tuple[str, ...] = HOSTS) -> None:
        super().__init__()
        self.reactor = reactor
        self.port = port
        self.tcpPort = tcpPort
        self.hosts = hosts
        self.listens = 0
        #: Every port bound, kept here whatever happens to L{ports}.
        self.opened: list[Any] = []

    def keep(self, listening: Any) -> Any:
        self.opened.append(listening)
        return listening

    def listen(self) -> None:
        self.listens += 1
        self.listenEverywhere("udp", self.hosts, self.port, lambda host, port: self.keep(
            listenUDP(self.reactor, DatagramProtocol(), host, port, "sample-port")))
        self.listenEverywhere("tcp", self.hosts, self.tcpPort, lambda host, port: self.keep(
            listenTCP(self.reactor, Factory(), host, port, "sample-tcp-port")))

    def listeningNote(self) -> str:
        return "; noted"


class Quiet(ListeningService):
    """Binds nothing (like a gateway built without listeners)."""

    def listen(self) -> None:
        pass


class ListeningServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = UDPMemoryReactor()
        self.lines: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace", "").startswith("test.interop.test_services_listening"):
                self.lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def test_startBindsEveryKindAndLogsOnce(self) -> None:
        service = Sample(self.reactor)
        service.startService()
        self.assertEqual(len(service.ports), 4)
        udp, tcp = service.boundPorts["udp"], service.boundPorts["tcp"]
        self.assertEqual(
            [p.getHost().port for p in service.ports], [udp, udp, tcp, tcp])
        self.assertEqual(self.lines, [
            f"sample listening on udp 127.0.0.1:{udp}, udp 127.0.0.2:{udp}, "
            f"tcp 127.0.0.1:{tcp}, tcp 127.0.0.2:{tcp}; noted"])

    def test_privilegedStartThenStartBindsOnce(self) -> None:
        service = Sample(self.reactor)
        service.privilegedStartService()
        service.startService()
        self.assertEqual((service.listens, len(service.ports), len(self.lines)), (1, 4, 1))

    def test_stopClosesEverything(self) -> None:
        service = Sample(self.reactor)
        service.startService()
        self.assertIsNone(self.successResultOf(service.stopService()))
        self.assertEqual([p.stopped for p in service.opened], [True] * 4)
        self.assertEqual((service.ports, service.boundPorts), ([], {}))
        self.assertFalse(service.running)

    def test_restartBindsAgain(self) -> None:
        service = Sample(self.reactor)
        service.startService()
        service.stopService()
        service.startService()
        self.assertEqual((service.listens, len(service.ports)), (2, 4))

    def test_portInUseLeavesNothingBound(self) -> None:
        blocker = blockedOnlyOn(HOSTS[1], HOSTS[0])
        self.addCleanup(blocker.close)
        busy = blocker.port
        service = Sample(self.reactor, tcpPort=busy)
        e = self.assertRaises(ConfigError, service.privilegedStartService)
        self.assertEqual(e.key, "sample-tcp-port")
        self.assertIn(f"{HOSTS[1]}:{busy}: address already in use", str(e))
        # Both UDP sockets and TCP on the first address were bound, then all closed.
        self.assertEqual([p.getHost().type for p in service.opened], ["UDP", "UDP", "TCP"])
        self.assertEqual([p.stopped for p in service.opened], [True, True, True])
        self.assertEqual((service.ports, service.boundPorts, self.lines), ([], {}, []))
        self.assertFalse(service.running)
        blocker.close()
        service.startService()
        self.assertEqual(len(service.ports), 4)

    def test_nothingBoundNoLine(self) -> None:
        service = Quiet()
        service.startService()
        self.assertEqual((service.ports, self.lines), ([], []))
        self.assertIsNone(self.successResultOf(service.stopService()))
