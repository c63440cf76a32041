# -*- test-case-name: test.unit.test_commands_rustdesk -*-
"""C{p2pnet keygen}: print a new RustDesk server key pair (as hbbs's C{--genkeypair})."""

from __future__ import annotations

import argparse
import base64
import sys

from p2pnet.services.rendezvous_keys import generateKeyPair, secretKeyBytes

__all__ = ["register"]


def run(args: argparse.Namespace) -> int:
    """Print the public key (what clients configure) and the secret key (for C{--key})."""
    key = generateKeyPair()
    out = args.out or sys.stdout
    out.write(f"Public Key:  {base64.b64encode(bytes(key.verify_key)).decode()}\n")
    out.write(f"Secret Key:  {base64.b64encode(secretKeyBytes(key)).decode()}\n")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add C{keygen}."""
    parser = subparsers.add_parser(
        "keygen",
        help="print a new Ed25519 key pair for the RustDesk rendezvous server",
        description="Print a new key pair in hbbs's encodings: the public key is what "
        "RustDesk clients enter as Key; the secret key can be given as --key, or saved "
        "(base64, one line) as id_ed25519 in the data directory.",
    )
    parser.set_defaults(run=run, out=None)
