# -*- test-case-name: test.unit.test_commands_run -*-
"""The package version, in a module of its own so that any module can read it without
importing the package (whose C{__init__} imports the application wiring)."""

__version__ = "0.1.0"
