"""Every C{gateway.md §N} cited in code, tests and docs names a section that exists in
the repository's C{docs/protocols/gateway.md}."""

from __future__ import annotations

import os
import re

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CITATION = re.compile(r"gateway\.md §(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)[. ]", re.M)


def sections() -> set[str]:
    with open(os.path.join(ROOT, "docs", "protocols", "gateway.md")) as f:
        return set(HEADING.findall(f.read()))


def citations() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for top in ("p2pnet", "test", "docs", "bench"):
        for directory, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if not name.endswith((".py", ".md")):
                    continue
                path = os.path.join(directory, name)
                with open(path, encoding="utf-8") as f:
                    for number in CITATION.findall(f.read()):
                        found.setdefault(number, set()).add(os.path.relpath(path, ROOT))
    return found


class CitationTests(SynchronousTestCase):
    def test_everyCitedSectionExists(self) -> None:
        known = sections()
        missing = {n: sorted(paths) for n, paths in citations().items() if n not in known}
        self.assertEqual(missing, {})

    def test_sectionsAreRead(self) -> None:
        """The heading pattern finds the document's sections (so the test can fail)."""
        self.assertTrue({"1.5", "2.4", "3.3", "4.2", "5.1", "9"} <= sections())
        self.assertNotIn("8.8", sections())
