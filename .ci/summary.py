"""The closing line of .ci/run: "N passed, N failed" from trial's summary and mypy.

Usage: summary.py LOG TRIAL_STATUS MYPY_STATUS; exits 1 on any failure. A mypy failure
counts as one failed check, a clean mypy run as one passed check.
"""

from __future__ import annotations

import re
import sys


def summarize(text: str, status: int, typed: int) -> tuple[str, int]:
    """The closing line and the exit status for trial's output C{text}."""
    found = re.findall(r"^(PASSED|FAILED) \(([^)]*)\)\s*$", text, re.M)
    if not found:
        return f"0 passed, {1 + (1 if typed else 0)} failed", status or 1
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", found[-1][1])}
    passed = counts.get("successes", 0) + counts.get("expectedFailures", 0)
    failed = (counts.get("failures", 0) + counts.get("errors", 0)
              + counts.get("unexpectedSuccesses", 0))
    if typed:
        failed += 1  # mypy found errors (listed above the line)
    else:
        passed += 1  # mypy clean
    return f"{passed} passed, {failed} failed", 1 if failed or status or typed else 0


def main(argv: list[str]) -> int:
    with open(argv[1], errors="replace") as f:
        line, code = summarize(f.read(), int(argv[2]), int(argv[3]))
    print(line)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
