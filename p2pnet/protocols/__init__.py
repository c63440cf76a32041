"""Thin Twisted protocols, servers and clients: framing, transport, dispatch; no policy."""
