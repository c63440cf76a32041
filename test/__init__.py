"""p2pnet tests (run with python -m twisted.trial test)."""
