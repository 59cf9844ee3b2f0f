"""The errors a bot builder sees.

Every failure of a template, at save time or at render time, ends as a `TemplateError` in
the bot builder's words; one caused by an operator limit is a `TemplateLimitError` that
names the setting, so the message can say what to raise.
"""

from __future__ import annotations

from ..core import PluginError, shorten
from .limits import LIMIT_SETTINGS, TemplateLimits

_EXCERPT_CHARS = 120


class TemplateError(PluginError):
    """A template a bot builder wrote cannot be used, said in their words.

    `line` and `column` (1-based) locate the problem in the template when known. The message
    never carries a variable's value beyond a short excerpt, because values are user data.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(message, field=field)
        self.line = line
        self.column = column

    def located(self, line: int | None, column: int | None = None) -> TemplateError:
        """Attach a location, unless one is already known; returns the error itself."""
        if self.line is None and line is not None:
            self.line, self.column = line, column
        return self

    def __str__(self) -> str:
        """The message, then where it is: `.message` alone stays free of the location."""
        if self.line is None:
            return self.message
        where = f"line {self.line}" if self.column is None else f"line {self.line}, column {self.column}"
        return f"{self.message} ({where})"


class TemplateLimitError(TemplateError):
    """A template went over one of the operator's limits; `setting` names the variable."""

    def __init__(
        self,
        message: str,
        *,
        setting: str,
        limit: int,
        field: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(message, field=field, line=line, column=column)
        self.setting = setting
        self.limit = limit


def limit_error(limits: TemplateLimits, name: str, detail: str) -> TemplateLimitError:
    setting = LIMIT_SETTINGS[name]
    limit = getattr(limits, name)
    return TemplateLimitError(
        f"{detail} (The operator can change this limit with {setting}.)", setting=setting, limit=limit
    )


def one_line_excerpt(text: str) -> str:
    """`text` on one line, shortened: Jinja's messages and template names can be long and span lines."""
    return shorten(" ".join(text.split()), _EXCERPT_CHARS)
