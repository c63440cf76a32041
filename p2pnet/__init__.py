# -*- test-case-name: test.unit.test_app -*-
"""p2pnet: one Twisted process for NAT traversal.

STUN (RFC 8489/5389/3489/5780), TURN (RFC 8656/5766/6062/6156), a RustDesk-compatible
rendezvous and relay server, a control gateway and a KVM node share one reactor as
``MultiService`` children (docs/architecture.md).

Curated exports for embedders::

    from p2pnet import Config, ConfigError, buildService
"""

from p2pnet._version import __version__  # noqa: E402
from p2pnet.app import buildService  # noqa: E402
from p2pnet.config import Config, ConfigError  # noqa: E402

__all__ = ["Config", "ConfigError", "buildService", "__version__"]
