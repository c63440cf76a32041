"""The gateway's modules keep the layer direction: codecs <- protocols <- services.

Every import statement is read (those inside functions too), so a lazy import cannot
hide a cycle.
"""

from __future__ import annotations

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

import p2pnet

PACKAGE = os.path.dirname(os.path.abspath(p2pnet.__file__))

GATEWAY = {
    "codecs": ["gateway_frames.py", "device_auth.py"],
    "protocols": ["gateway_server.py", "gateway_client.py"],
    "services": ["gateway.py", "gateway_policy.py", "gateway_nodes.py", "gateway_pairing.py",
                 "gateway_handshake.py", "gateway_methods.py"],
    "store": ["gateway.py"],
}

#: What each layer may not import.
FORBIDDEN = {
    "codecs": ("p2pnet.protocols", "p2pnet.services", "p2pnet.store", "p2pnet.app",
               "twisted"),
    "protocols": ("p2pnet.services", "p2pnet.app"),
    "services": ("p2pnet.app",),
    "store": ("p2pnet.protocols", "p2pnet.services", "p2pnet.app"),
}


def imports(path: str) -> list[str]:
    with open(path) as f:
        tree = ast.parse(f.read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


class LayerTests(SynchronousTestCase):
    def test_direction(self) -> None:
        wrong = []
        for layer, files in GATEWAY.items():
            for name in files:
                for module in imports(os.path.join(PACKAGE, layer, name)):
                    if module == "p2pnet" or module.startswith(FORBIDDEN[layer]):
                        wrong.append(f"{layer}/{name} imports {module}")
        self.assertEqual(wrong, [])

    def test_detectsLazyImport(self) -> None:
        """The walk sees an import inside a function (so the test can fail)."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("def f():\n    from p2pnet.services.gateway import GatewayService\n")
        self.assertIn("p2pnet.services.gateway", imports(path))
