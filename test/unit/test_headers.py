"""Every module of C{p2pnet/} names its tests on its first line (the house rule, as in
Twisted: C{# -*- test-case-name: test.unit.test_config -*-}), and the named test
modules exist, so C{trial --testmodule} and editors find them."""

from __future__ import annotations

import ast
import os
import re

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADER = re.compile(r"# -\*- test-case-name: ([\w., ]+) -\*-$")


def problems(root: str = ROOT) -> list[str]:
    """Modules without the header, and headers naming a test module that is not there."""
    found = []
    for directory, _, files in os.walk(os.path.join(root, "p2pnet")):
        for name in sorted(files):
            if not name.endswith(".py") or name.endswith("_pb2.py"):
                continue
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            body = ast.parse(text).body
            if name == "__init__.py" and all(
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                for node in body
            ):
                continue  # a package marker with at most a docstring
            match = HEADER.match(text.partition("\n")[0])
            if match is None:
                found.append(f"{relative}: no test-case-name line")
                continue
            for test in (t.strip() for t in match.group(1).split(",")):
                module = os.path.join(root, *test.split("."))
                if not (os.path.exists(module + ".py") or os.path.isdir(module)):
                    found.append(f"{relative}: names {test}, which does not exist")
    return found


class HeaderTests(SynchronousTestCase):
    def test_everyModuleNamesItsTests(self) -> None:
        self.assertEqual(problems(), [])

    def test_checker(self) -> None:
        root = self.mktemp()
        os.makedirs(os.path.join(root, "p2pnet"))
        os.makedirs(os.path.join(root, "test", "unit"))
        files = {
            "p2pnet/__init__.py": '"""Package."""\n',
            "p2pnet/a.py": "# -*- test-case-name: test.unit.test_a -*-\nx = 1\n",
            "p2pnet/b.py": "# -*- test-case-name: test.unit.test_gone -*-\nx = 1\n",
            "p2pnet/c.py": "x = 1\n",
            "test/unit/test_a.py": "",
        }
        for name, text in files.items():
            with open(os.path.join(root, name), "w") as f:
                f.write(text)
        self.assertEqual(problems(root), [
            "p2pnet/b.py: names test.unit.test_gone, which does not exist",
            "p2pnet/c.py: no test-case-name line",
        ])
