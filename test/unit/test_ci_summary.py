"""Tests for .ci/summary.py, the closing line of .ci/run."""

from __future__ import annotations

import importlib.util
import os

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location(
        "ci_summary", os.path.join(ROOT, ".ci", "summary.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class SummaryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.summarize = load().summarize

    def test_allPassed(self) -> None:
        self.assertEqual(self.summarize("Ran 10 tests\n\nPASSED (successes=10)\n", 0, 0),
                         ("11 passed, 0 failed", 0))

    def test_mypyFailure(self) -> None:
        """A mypy failure is one failure in the line and fails the run."""
        self.assertEqual(self.summarize("PASSED (successes=10)\n", 0, 1),
                         ("10 passed, 1 failed", 1))

    def test_trialFailures(self) -> None:
        text = "PASSED (successes=3)\nFAILED (failures=2, errors=1, successes=8, skips=1)\n"
        self.assertEqual(self.summarize(text, 1, 0), ("9 passed, 3 failed", 1))

    def test_noSummary(self) -> None:
        self.assertEqual(self.summarize("Traceback ...\n", 2, 1), ("0 passed, 2 failed", 2))
