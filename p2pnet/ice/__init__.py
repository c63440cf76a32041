# -*- test-case-name: test.unit.test_ice_core -*-
"""ICE (RFC 8445) for Twisted: a sans-IO core (L{p2pnet.ice.core.IceCore} and the
modules it is built from, none of which imports Twisted) and the Twisted L{Agent}."""

from p2pnet.ice.agent import Agent, IceFailed, NotConnected, TurnServer

__all__ = ["Agent", "IceFailed", "NotConnected", "TurnServer"]
