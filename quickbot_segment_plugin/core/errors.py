"""The one exception family the plugin raises for problems a user can cause.

A host (or the CLI) can catch `PluginError` and show `str(error)`: every subclass is written
so that its text names the field at fault and never contains a secret.
"""

from __future__ import annotations


class PluginError(Exception):
    """Base of every error a bot builder or an operator can cause and fix.

    `field` is the option or setting at fault (a JSON Pointer into the block's options
    without the leading slash, or an environment variable name), so a form can put the
    message under the right input.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class ConfigurationError(PluginError):
    """An operator setting (an environment variable) is missing or malformed."""
