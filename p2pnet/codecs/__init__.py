"""Sans-IO codecs: bytes to typed messages and back, no reactor, no sockets, no clocks."""
