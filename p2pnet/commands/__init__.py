"""Sub-commands of the C{p2pnet} command (see L{p2pnet.cli})."""
