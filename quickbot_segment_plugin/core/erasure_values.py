"""Erasing one end user's identifiers from what stays after their own events are deleted.

Deleting a user's rows is not enough: their email can sit in another user's event (an invite,
batch-level `context.traits`), and the raw request the collector keeps for the debugger holds
every message and the batch's own context. The identifiers are the ids the operator gave plus
the identifying values found in the user's own messages (`IDENTIFYING_KEYS`); wherever they
occur in what is kept, they are replaced by `ERASED`, and the rest of the other user's data
stays as it was.

Short identifiers (under `MIN_FREE_TEXT_LENGTH` characters, such as a userId `42`) are replaced
only as the value of an identifying key: replacing every `42` in every event would destroy
other users' data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

ERASED: Final = "[erased]"
#: Keys whose values identify a person: collected from the forgotten user's messages, and replaced
#: wherever they hold one of the identifiers, whatever the identifier's length.
IDENTIFYING_KEYS: Final = frozenset({"userId", "anonymousId", "previousId", "groupId", "email", "phone", "username"})
#: Identifiers at least this long are replaced in any string, whole or as part of a longer text.
MIN_FREE_TEXT_LENGTH: Final = 5


@dataclass
class ErasureReport:
    """What one store erased: the user's own rows, and other rows rewritten without their identifiers."""

    path: str
    removed: list[dict[str, Any]] = field(default_factory=list)
    rewritten_events: int = 0
    rewritten_batches: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "removed": self.removed,
            "rewritten_events": self.rewritten_events,
            "rewritten_batches": self.rewritten_batches,
        }


def identifiers_of(messages: Iterable[object], user_id: str | None, anonymous_id: str | None) -> frozenset[str]:
    """The given ids and every identifying value in the user's own messages."""
    found = {value for value in (user_id, anonymous_id) if value}

    def walk(value: object) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if key in IDENTIFYING_KEYS and _scalar(item) is not None:
                    found.add(str(_scalar(item)))
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for message in messages:
        walk(message)
    return frozenset(identifier for identifier in found if identifier.strip())


def search_terms(identifiers: Iterable[str]) -> list[str]:
    """How each identifier appears in stored JSON text (ASCII escapes), to find candidate rows in SQL."""
    return sorted({json.dumps(identifier)[1:-1] for identifier in identifiers})


def scrub(value: Any, identifiers: frozenset[str]) -> tuple[Any, bool]:
    """`value` with every occurrence of the identifiers replaced by `ERASED`, and whether anything was."""
    long_ones = sorted((i for i in identifiers if len(i) >= MIN_FREE_TEXT_LENGTH), key=len, reverse=True)
    changed = False

    def text(item: str) -> str:
        nonlocal changed
        if item in identifiers and len(item) >= MIN_FREE_TEXT_LENGTH:
            changed = True
            return ERASED
        for identifier in long_ones:
            if identifier in item:
                changed = True
                item = item.replace(identifier, ERASED)
        return item

    def walk(item: Any, key: object = None) -> Any:
        nonlocal changed
        if key in IDENTIFYING_KEYS and _scalar(item) is not None and str(_scalar(item)) in identifiers:
            changed = True
            return ERASED
        if isinstance(item, str):
            return text(item)
        if isinstance(item, dict):
            return {text(name) if isinstance(name, str) else name: walk(inner, name) for name, inner in item.items()}
        if isinstance(item, list):
            return [walk(inner) for inner in item]
        return item

    result = walk(value)
    return result, changed


def _scalar(value: object) -> str | int | None:
    """A value that can be an id: text or a whole number (Segment stringifies numeric ids)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (str, int)):
        return value
    return None
