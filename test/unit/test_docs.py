"""The documentation stays true to the code: every setting is documented."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.config import settings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ConfigurationDocTests(SynchronousTestCase):
    def test_everySettingDocumented(self) -> None:
        with open(os.path.join(ROOT, "docs", "configuration.md")) as f:
            text = f.read()
        missing = [s.key for s in settings() if f"| `{s.key}` |" not in text]
        self.assertEqual(missing, [], "settings missing from docs/configuration.md")
