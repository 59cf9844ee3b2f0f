"""The one table of yes/no words, shared by conditions, boolean items and operator settings.

A word means the same thing wherever a builder or an operator types it: `"n"` in a condition,
a boolean item or a `QUICKBOT_*` variable is always false. Words compare without case or
surrounding spaces; anything else is not a yes/no word (the caller decides what that means).
"""

from __future__ import annotations

from typing import Final

TRUE_WORDS: Final = frozenset({"true", "yes", "y", "on", "1"})
FALSE_WORDS: Final = frozenset({"false", "no", "n", "off", "0"})


def parse_truth(text: str) -> bool | None:
    """True or False for a yes/no word, None for any other text."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None
