"""The one table of yes/no words, shared by conditions, boolean items and operator settings.

A bot builder's variable holding "n" must mean the same thing in a condition (skip the
block) and in a boolean trait (send `false`), and an operator who writes
`QUICKBOT_SEGMENT_GZIP=no` must be understood the same way. docs/bot-builders/truthy-values.md
prints this table; change both together.

- true: true, yes, y, on, 1
- false: false, no, n, off, 0
- no value: empty text, none, null (and a variable that is not set). A condition with no
  value is false; a boolean item with no value is left out of the event (with a warning),
  as an empty item is; a setting with no value keeps its default.

Words compare without case and surrounding spaces.
"""

from __future__ import annotations

import enum
from typing import Any, Final

TRUE_WORDS: Final = frozenset({"true", "yes", "y", "on", "1"})
FALSE_WORDS: Final = frozenset({"false", "no", "n", "off", "0"})
NO_VALUE_WORDS: Final = frozenset({"", "none", "null"})

#: How the words are listed in messages, in the table's order.
TRUE_LIST: Final = "true, yes, y, on, 1"
FALSE_LIST: Final = "false, no, n, off, 0"


class Truth(enum.Enum):
    TRUE = "true"
    FALSE = "false"
    NO_VALUE = "no value"
    OTHER = "other"  # a word not in the table (or a value that is not a yes/no)


def truth_of(value: Any) -> Truth:
    """Where `value` falls in the table; numbers other than 0/1, lists and objects are OTHER."""
    if value is None:
        return Truth.NO_VALUE
    if isinstance(value, bool):
        return Truth.TRUE if value else Truth.FALSE
    if isinstance(value, (int, float)):
        if value == 1:
            return Truth.TRUE
        if value == 0:
            return Truth.FALSE
        return Truth.OTHER
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return Truth.TRUE
        if word in FALSE_WORDS:
            return Truth.FALSE
        if word in NO_VALUE_WORDS:
            return Truth.NO_VALUE
    return Truth.OTHER


def condition_is_true(value: Any) -> bool:
    """A condition sends the event unless its value is a false word or has no value.

    Any other value counts as true: `{{ Email }}` as a condition means "Email is set".
    Numbers follow Python's rule (0 is false), and so do lists and objects (empty is false).
    """
    truth = truth_of(value)
    if truth is Truth.OTHER:
        return bool(value) if not isinstance(value, str) else True
    return truth is Truth.TRUE


def parse_truth(text: str) -> bool | None:
    """True or False for a yes/no word; None for no value and for any other text."""
    truth = truth_of(text)
    return None if truth in (Truth.NO_VALUE, Truth.OTHER) else truth is Truth.TRUE
