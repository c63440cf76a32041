"""Services: state, policy and timers, composed by L{p2pnet.app}."""
