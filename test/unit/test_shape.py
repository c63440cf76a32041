"""The package's shape (issue 13 item 1): one dependency direction, no import cycle.

Every C{import} statement of C{p2pnet/} is read with C{ast}, those inside functions
too (a lazy import is a dependency all the same), and checked against the layer map
of docs/architecture.md §2 (L{LAYERS}): a module may import its own layer or a lower
one, never a higher one, and the import graph has no cycle. Codecs import nothing of
Twisted (sans-IO).
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Module (or package) name to layer, lowest first; the longest matching name decides.
#: docs/architecture.md §2 explains each layer.
LAYERS: dict[str, tuple[int, str]] = {
    # base: pure helpers every layer may use
    "p2pnet._version": (0, "base"),
    "p2pnet.errors": (0, "base"),
    "p2pnet.addresses": (0, "base"),
    "p2pnet.ratelimit": (0, "base"),
    "p2pnet.boundedmap": (0, "base"),
    "p2pnet.files": (0, "base"),
    # codecs: bytes <-> typed messages, sans-IO
    "p2pnet.codecs": (1, "codecs"),
    # support: settings, logging, counters, sockets and TLS set-up, test fakes
    "p2pnet.ratelog": (2, "support"),
    "p2pnet.logformat": (2, "support"),
    "p2pnet.metrics": (2, "support"),
    "p2pnet.drain": (2, "support"),
    "p2pnet.sdnotify": (2, "support"),
    "p2pnet.reload": (2, "support"),
    "p2pnet.cluster": (2, "support"),
    "p2pnet.stats": (2, "support"),
    "p2pnet.config": (2, "support"),
    "p2pnet.certs": (2, "support"),
    "p2pnet.listen": (2, "support"),
    "p2pnet.testing": (2, "support"),
    "p2pnet.fastpath": (2, "support"),
    # store: durable state
    "p2pnet.store": (3, "store"),
    # protocols: Twisted protocols, thin
    "p2pnet.protocols": (4, "protocols"),
    # services: state, policy, timers
    "p2pnet.services": (5, "services"),
    # the ICE agent, then the KVM node (which may use the agent)
    "p2pnet.ice": (6, "ice"),
    "p2pnet.node": (7, "node"),
    # wiring
    "p2pnet.app": (8, "app"),
    "p2pnet.tap": (8, "app"),
    # commands for people
    "p2pnet.commands": (9, "commands"),
    "p2pnet.cli": (9, "commands"),
    # the package itself: curated exports for embedders
    "p2pnet": (10, "package"),
}


def layerOf(module: str) -> tuple[int, str]:
    """The layer of C{module}: the entry of L{LAYERS} with the longest matching name."""
    name = module
    while name:
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    raise KeyError(module)


def modules(root: str = ROOT) -> dict[str, str]:
    """Every module of the package (generated protobuf modules left out): name to path."""
    found = {}
    for directory, _, files in os.walk(os.path.join(root, "p2pnet")):
        for name in files:
            if not name.endswith(".py") or name.endswith("_pb2.py"):
                continue
            path = os.path.join(directory, name)
            module = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
            if module.endswith(".__init__"):
                module = module[: -len(".__init__")]
            found[module] = path
    return found


def imports(module: str, path: str, known: dict[str, str]
            ) -> Iterator[tuple[int, str, str]]:
    """C{(line, imported name, module of the package it resolves to)} for every import
    statement of C{module}, at any depth; the module is C{""} outside the package."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    isPackage = path.endswith("__init__.py")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                if not isPackage:
                    parts = parts[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # "from p2pnet.x import y" depends on p2pnet.x.y if that is a module,
            # else on p2pnet.x (never on a package above it).
            names = []
            for alias in node.names:
                names.append(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known
                             else base)
        else:
            continue
        for name in names:
            target = name
            while target and target not in known:
                target = target.rpartition(".")[0]
            yield node.lineno, name, target


def graph(root: str = ROOT) -> dict[str, set[str]]:
    """Module to the modules of the package it imports."""
    known = modules(root)
    edges: dict[str, set[str]] = {m: set() for m in known}
    for module, path in known.items():
        for _, _, target in imports(module, path, known):
            if target and target != module:
                edges[module].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    onStack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        # Iterative, so a deep graph cannot hit the recursion limit.
        work = [(node, iter(sorted(edges[node])))]
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        onStack.add(node)
        while work:
            current, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    onStack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in onStack:
                    low[current] = min(low[current], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[current])
            if low[current] == index[current]:
                component = []
                while True:
                    member = stack.pop()
                    onStack.discard(member)
                    component.append(member)
                    if member == current:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def upward(root: str = ROOT) -> list[str]:
    """Every import against the layer direction, as C{"path:line (layer) imports name
    (layer)"}."""
    known = modules(root)
    wrong = []
    for module, path in sorted(known.items()):
        level, name = layerOf(module)
        for line, imported, target in imports(module, path, known):
            if not target or target == module:
                continue
            targetLevel, targetName = layerOf(target)
            if targetLevel > level:
                wrong.append(f"{os.path.relpath(path, root)}:{line} ({name}) imports "
                             f"{imported} ({targetName})")
    return wrong


class ShapeTests(SynchronousTestCase):
    def test_everyModuleHasALayer(self) -> None:
        for module in modules():
            layerOf(module)  # raises KeyError naming the module

    def test_noCycle(self) -> None:
        """No import cycle, lazy imports included (issue 13: gateway <-> gateway_server
        and relay service <-> relay protocol were hidden inside functions)."""
        self.assertEqual(cycles(graph()), [])

    def test_direction(self) -> None:
        """Every import goes to the same layer or a lower one."""
        self.assertEqual(upward(), [])

    def test_codecsWithoutTwisted(self) -> None:
        """Codecs are sans-IO: no Twisted import."""
        known = modules()
        found = [
            f"{module}:{line} {imported}"
            for module, path in sorted(known.items()) if module.startswith("p2pnet.codecs")
            for line, imported, _ in imports(module, path, known)
            if imported.split(".")[0] == "twisted"
        ]
        self.assertEqual(found, [])


class CheckerTests(SynchronousTestCase):
    """The checks find what they are meant to find (a tree written for the test)."""

    def tree(self, files: dict[str, str]) -> str:
        root = self.mktemp()
        for name, text in files.items():
            path = os.path.join(root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        return root

    def test_lazyCycleFound(self) -> None:
        root = self.tree({
            "p2pnet/__init__.py": "",
            "p2pnet/services/__init__.py": "",
            "p2pnet/protocols/__init__.py": "",
            "p2pnet/services/relay.py": "from p2pnet.protocols import relay\n",
            "p2pnet/protocols/relay.py": "def f():\n    from p2pnet.services.relay import x\n",
        })
        self.assertEqual(cycles(graph(root)),
                         [["p2pnet.protocols.relay", "p2pnet.services.relay"]])

    def test_upwardFound(self) -> None:
        root = self.tree({
            "p2pnet/__init__.py": "",
            "p2pnet/codecs/__init__.py": "",
            "p2pnet/codecs/stun.py": "def f():\n    import p2pnet.protocols.stun\n",
            "p2pnet/protocols/__init__.py": "",
            "p2pnet/protocols/stun.py": "from p2pnet.codecs.stun import f\n",
        })
        self.assertEqual(upward(root), [
            "p2pnet/codecs/stun.py:2 (codecs) imports p2pnet.protocols.stun (protocols)"])

    def test_relativeImports(self) -> None:
        root = self.tree({
            "p2pnet/__init__.py": "",
            "p2pnet/codecs/__init__.py": "",
            "p2pnet/codecs/a.py": "from . import b\nfrom ..services import s\n",
            "p2pnet/codecs/b.py": "",
            "p2pnet/services/__init__.py": "",
            "p2pnet/services/s.py": "",
        })
        known = modules(root)
        targets = {t for _, _, t in imports("p2pnet.codecs.a", known["p2pnet.codecs.a"],
                                            known)}
        self.assertEqual(targets, {"p2pnet.codecs.b", "p2pnet.services.s"})

    def test_layers(self) -> None:
        self.assertEqual(layerOf("p2pnet.services.turn_allocation")[1], "services")
        self.assertEqual(layerOf("p2pnet.codecs.proto")[1], "codecs")
        self.assertEqual(layerOf("p2pnet")[1], "package")
        self.assertLess(layerOf("p2pnet.codecs.stun")[0], layerOf("p2pnet.protocols.stun")[0])
        self.assertLess(layerOf("p2pnet.protocols.stun")[0], layerOf("p2pnet.services.stun")[0])
        self.assertLess(layerOf("p2pnet.services.stun")[0], layerOf("p2pnet.app")[0])
