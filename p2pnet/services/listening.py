# -*- test-case-name: test.interop.test_services_listening -*-
"""L{ListeningService}: the listener lifecycle every server service shares.

A subclass says which sockets it wants in L{ListeningService.listen}; the base binds
them when the service starts (in C{privilegedStartService} under C{twistd}, which may
hold privileges then; in C{startService} for embedders, who call only that), closes
what was bound when a later bind fails, logs one C{"<name> listening on ..."} line, and
closes every port when the service stops.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from p2pnet.listen import closePorts, describePorts, listenSamePort

__all__ = ["ListeningService"]


class ListeningService(Service, ABC):
    """A service that owns listening ports.

    @cvar listeningName: how the C{"listening on"} log line names the service.
    @ivar ports: every bound port, in the order L{listen} bound them; empty when stopped.
    @ivar boundPorts: the port number each kind of listener got (C{"udp"}, C{"tcp"},
        ...), for kinds bound with L{listenEverywhere}: with port 0 in the settings this
        is where to find the real ones.
    """

    log = Logger()
    listeningName = "service"

    def __init__(self) -> None:
        self.ports: list[IListeningPort] = []
        self.boundPorts: dict[str, int] = {}

    @abstractmethod
    def listen(self) -> None:
        """Bind this service's sockets, adding each to L{ports} as it is bound.

        @raise p2pnet.errors.ConfigError: a socket could not be bound; what was bound
            before is closed by the caller.
        """

    def listeningNote(self) -> str:
        """Text after the port list in the log line (e.g. C{"; key required"})."""
        return ""

    def listenEverywhere(
        self, kind: str, hosts: Iterable[str], port: int,
        bind: Callable[[str, int], IListeningPort],
    ) -> int:
        """Bind C{kind} on every address with one port number; return that number.

        See L{p2pnet.listen.listenSamePort}; the ports join L{ports} and the number is
        recorded in L{boundPorts}.
        """
        bound = listenSamePort(hosts, port, bind)
        self.ports += bound
        self.boundPorts[kind] = bound[0].getHost().port  # type: ignore[attr-defined]
        return self.boundPorts[kind]

    def privilegedStartService(self) -> None:
        """Bind the listeners (they may need privileges)."""
        self._bind()
        super().privilegedStartService()

    def startService(self) -> None:
        """Bind the listeners unless C{privilegedStartService} already did."""
        self._bind()
        super().startService()

    def _bind(self) -> None:
        if self.ports:
            return
        try:
            self.listen()
        except BaseException:
            self.closePorts()
            raise
        if self.ports:
            self.log.info("{service} listening on {ports}{note}", service=self.listeningName,
                          ports=describePorts(self.ports), note=self.listeningNote())

    def closePorts(self) -> Deferred[None]:
        """Close every port; fires once all are closed. Subclasses may forget more."""
        ports, self.ports = self.ports, []
        self.boundPorts.clear()
        return closePorts(ports)

    def stopService(self) -> Deferred[None]:
        """Stop, then close every port; fires once they are closed."""
        super().stopService()
        return self.closePorts()
