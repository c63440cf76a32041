# -*- test-case-name: test.unit.test_config -*-
"""Errors that stop start-up."""


class ConfigError(Exception):
    """A setting is wrong: an unknown key, a bad value, a port in use, an unreadable file.

    The message always names the setting, so C{str(error)} is the one line a person sees
    when start-up stops.

    @ivar key: the setting's name as written in TOML and on the command line.
    @ivar reason: what is wrong with it.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason
