"""Values quoted in sentences: shortened, so a message stays one readable line whatever it quotes.

Values are often user data; a message shows enough of one to recognise it and no more.
"""

from __future__ import annotations

from typing import Any


def shorten(text: str, limit: int, mark: str = "…") -> str:
    """`text` cut to at most `limit` characters, `mark` showing where it was cut."""
    return text if len(text) <= limit else text[: limit - len(mark)] + mark


def excerpt(text: str, limit: int = 40) -> str:
    """`text` quoted and shortened to `limit` characters: how a value is quoted in a sentence."""
    return repr(shorten(text, limit))


def describe(value: Any, limit: int = 40) -> str:
    """A JSON value named for a bot builder: its kind, and text or a number as it is (shortened)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the yes/no value {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return excerpt(value, limit)
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"
