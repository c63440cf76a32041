"""One citation form everywhere, and every cited section exists (issue 13 item 5).

Code, tests and docs cite standards as C{RFC 8656 §7.2} (optionally C{step 3}) and the
repository's own documents as C{rustdesk.md §6.6}, C{gateway.md §3.4},
C{architecture.md §2}. This test finds every citation of a repository document (any
C{NAME.md §N}) and checks that the document exists under C{docs/} and has a heading
numbered C{N}; and it refuses the other forms (C{RFC 8656 section 7.2},
C{section 7.2 of RFC 8656}, C{RFC 8656, Section 7.2}, a bare C{section 7.2}, a C{§}
citation in code that names no document, and C{specs/...}/C{spec §} citations of
documents that are not in the repository).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Where citations are looked for.
TREES = ("p2pnet", "test", "docs", "bench", "tac", "twisted")
FILES = ("README.md",)
SUFFIXES = (".py", ".md", ".proto", ".tac", ".toml")

#: A citation of a repository document: C{gateway.md §3.4}.
DOC_CITATION = re.compile(r"\b([a-z][a-z0-9_-]*\.md) §(\d+(?:\.\d+)*)")
#: Forms refused, with what to write instead.
WRONG_FORMS = (
    (re.compile(r"\bRFC ?\d{3,5},? (?:[Ss]ection|[Ss]ec\.|[Ss]ect\.) ?\d"),
     "write RFC NNNN §N"),
    (re.compile(r"\b[Ss]ection \d+(?:\.\d+)* of RFC ?\d{3,5}"), "write RFC NNNN §N"),
    (re.compile(r"\bRFC\d{3,5}\b"), "write RFC NNNN with a space"),
    (re.compile(r"(?<!RFC \d{4} )(?<!RFC \d{4}, )(?<![\w.])[Ss]ections? \d+(?:\.\d+)*"
                r"(?![\d.]*,? of RFC)"),
     "name the document: RFC NNNN §N or NAME.md §N"),
    (re.compile(r"\bspecs?/[\w./-]*\.md"), "cite the repository's docs/ copy: NAME.md §N"),
    (re.compile(r"\bspec §\d"), "cite the repository's document: NAME.md §N"),
)
#: A named section: C{RFC 8656 §7.2}, C{gateway.md §3.4}, or an ITU-T standard
#: (C{H.264 §7.3.2.1.1}).
NAMED = re.compile(r"(?:RFC \d{3,5}|[\w-]+\.md|H\.26[45]) §\d")
#: A line ending in a document's name, cited by a § at the start of the next line.
CONTINUED = re.compile(r"(?:RFC \d{3,5}|[\w-]+\.md|H\.26[45])(?: §[\d.]+,)?\W?$")
#: Any section sign followed by a number.
SECTION_SIGN = re.compile(r"§\d")


def sources(root: str = ROOT) -> Iterator[str]:
    """Every file that may hold citations."""
    for tree in TREES:
        for directory, dirs, files in os.walk(os.path.join(root, tree)):
            dirs[:] = [d for d in dirs if not d.startswith((".", "_")) and d != "proto"
                       or d == "proto" and "codecs" in directory]
            for name in sorted(files):
                path = os.path.join(directory, name)
                if (name.endswith(SUFFIXES) and not name.endswith("_pb2.py")
                        and os.path.abspath(path) != os.path.abspath(__file__)):
                    yield path
    for name in FILES:
        if os.path.exists(os.path.join(root, name)):
            yield os.path.join(root, name)


def documents(root: str = ROOT) -> dict[str, str]:
    """Every repository document by file name (C{gateway.md}) to its path; names of
    docs/protocols/ win, as the notes the code cites live there."""
    found: dict[str, str] = {}
    for sub in ("docs", os.path.join("docs", "protocols")):
        directory = os.path.join(root, sub)
        if os.path.isdir(directory):
            for name in os.listdir(directory):
                if name.endswith(".md"):
                    found[name] = os.path.join(directory, name)
    return found


def sections(path: str) -> set[str]:
    """The section numbers of a document's headings: C{## 3. Title} and
    C{### 3.4 Title} give C{3} and C{3.4}."""
    numbers = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = re.match(r"#+\s+(\d+(?:\.\d+)*)\.?\s", line)
            if match:
                numbers.add(match.group(1))
    return numbers


def problems(root: str = ROOT) -> list[str]:
    """Every citation of a missing document or section, and every refused form."""
    docs = documents(root)
    numbered = {name: sections(path) for name, path in docs.items()}
    found = []
    for path in sources(root):
        relative = os.path.relpath(path, root)
        isDoc = path.endswith(".md")
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        for number, line in enumerate(lines, 1):
            where = f"{relative}:{number}"
            for match in DOC_CITATION.finditer(line):
                name, section = match.groups()
                if name not in docs:
                    found.append(f"{where}: {match.group(0)}: no docs/{name} in the "
                                 "repository")
                elif section not in numbered[name]:
                    found.append(f"{where}: {match.group(0)}: {name} has no section "
                                 f"{section}")
            for pattern, advice in WRONG_FORMS:
                for match in pattern.finditer(line):
                    found.append(f"{where}: {match.group(0)!r}: {advice}")
            if not isDoc:
                # In code a § names its document, or follows a named one on the same
                # line ("rustdesk.md §4.1, §4.3").
                named = [m.end() - 2 for m in NAMED.finditer(line)]
                # ... or continues a citation whose document (or first section) ends the
                # line above ("... RFC 8489\n§14 orders them", "RFC 8656 §11,\n§12.5").
                if number > 1 and CONTINUED.search(lines[number - 2]):
                    named.insert(0, 0)
                for match in SECTION_SIGN.finditer(line):
                    if not named or match.start() < named[0]:
                        found.append(f"{where}: a § that names no document: "
                                     f"{line.strip()!r}")
                        break
    return found


class CitationTests(SynchronousTestCase):
    def test_citations(self) -> None:
        self.assertEqual(problems(), [])


class CheckerTests(SynchronousTestCase):
    """The check finds what it is meant to find (a tree written for the test)."""

    def test_findsEachProblem(self) -> None:
        root = self.mktemp()
        os.makedirs(os.path.join(root, "docs", "protocols"))
        os.makedirs(os.path.join(root, "p2pnet"))
        with open(os.path.join(root, "docs", "protocols", "gateway.md"), "w") as f:
            f.write("# Gateway\n\n## 3. Handshake\n\n### 3.4 Nonces\n")
        with open(os.path.join(root, "p2pnet", "a.py"), "w") as f:
            f.write("# gateway.md §3.4 and RFC 8656 §7.2 step 3: fine\n"
                    "# gateway.md §3.5: no such section\n"
                    "# nodes.md §1: no such document\n"
                    "# RFC 8656 section 7.2, RFC 5389, Section 15\n"
                    "# see section 9.3; specs/gateway.md; spec §4\n"
                    "# §9.3 alone; gateway.md §3.4, §3 and H.264 §7.3 are fine\n"
                    "# as RFC 8489\n# §14 orders them: fine too\n")
        found = problems(root)
        self.assertEqual([p.split(": ", 1)[0] for p in found], [
            "p2pnet/a.py:2", "p2pnet/a.py:3", "p2pnet/a.py:4", "p2pnet/a.py:4",
            "p2pnet/a.py:5", "p2pnet/a.py:5", "p2pnet/a.py:5", "p2pnet/a.py:5",
            "p2pnet/a.py:6",
        ], found)
        self.assertIn("gateway.md has no section 3.5", found[0])
        self.assertIn("no docs/nodes.md", found[1])
