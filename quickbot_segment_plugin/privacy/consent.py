"""End-user consent: no consent, no event; the consent state travels in `context.consent`.

A block with a Consent option reads the end user's consent from a variable each time it
runs. Segment's Consent Management wants every event stamped with the consent state as
`context.consent.categoryPreferences` (category id -> true/false), and enforces it per
destination; the block adds its own rule on top: an event whose required categories
(`consentCategories`) are not all granted is not sent at all, and the block is skipped with
an info log, exactly as a false condition skips it.

What the consent variable may hold (the shapes CMPs and bot flows produce):
- an object of category -> true/false (`{"Analytics": true, "Advertising": false}`), or one
  wrapping it as `{"categoryPreferences": {...}}`; "yes"/"no" strings count as true/false;
- a list of the granted categories, or a comma-separated text of them (`analytics, marketing`);
- yes/no (true, 1, granted, accepted, opt-in / false, 0, denied, declined, opt-out): all or
  none of the required categories.
Category names compare without case. No categories required: the event needs some consent
(yes, or at least one category granted). Empty, not set, or unreadable: no consent.
An empty `categoryPreferences` is never sent: Segment reads it as "every category false".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

from ..templating import TemplateError

if TYPE_CHECKING:
    from ..core import ResultLog
    from ..execution import BlockPlan

__all__ = ["ConsentDecision", "consent_decision", "parse_categories", "read_consent"]

GRANTED_WORDS: Final = frozenset(
    {"yes", "y", "true", "1", "on", "granted", "accepted", "accept", "agree", "agreed", "opt-in", "optin"}
)
DENIED_WORDS: Final = frozenset(
    {"no", "n", "false", "0", "off", "denied", "declined", "decline", "refused", "opt-out", "optout", "none"}
)
MAX_CATEGORIES: Final = 50
_SPLIT = re.compile(r"[,;\n]+")


@dataclass(frozen=True)
class ConsentDecision:
    allowed: bool
    # What goes into context.consent.categoryPreferences; None: nothing to add.
    preferences: dict[str, bool] | None


@lru_cache(maxsize=1024)
def parse_categories(text: str) -> tuple[str, ...]:
    """`analytics, marketing` -> ("analytics", "marketing"), without duplicates, order kept."""
    seen: dict[str, str] = {}
    for part in _SPLIT.split(text):
        name = part.strip()
        if name and name.lower() not in seen:
            seen[name.lower()] = name
    return tuple(seen.values())


@dataclass(frozen=True)
class _State:
    everything: bool | None  # yes/no answers; None when categories were given
    categories: dict[str, bool]


def read_consent(value: Any) -> _State | None:
    """The consent state in a variable's value; None when there is none (or it is unreadable)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return _State(value, {})
    if isinstance(value, (int, float)):
        return _State(value != 0, {}) if value in (0, 1) else None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        lowered = text.lower()
        if lowered in GRANTED_WORDS:
            return _State(True, {})
        if lowered in DENIED_WORDS:
            return _State(False, {})
        if text[0] in "{[":
            try:
                return read_consent(json.loads(text))
            except ValueError:
                return None
        return _State(None, {name: True for name in parse_categories(text)})
    if isinstance(value, Mapping):
        inner = value.get("categoryPreferences", value)
        if not isinstance(inner, Mapping):
            return None
        categories: dict[str, bool] = {}
        for name, granted in list(inner.items())[:MAX_CATEGORIES]:
            flag = _flag(granted)
            if flag is None:
                return None
            categories[str(name)] = flag
        return _State(None, categories) if categories else None
    if isinstance(value, (list, tuple)):
        names = [str(item).strip() for item in value if isinstance(item, (str, int)) and str(item).strip()]
        return _State(None, {name: True for name in names[:MAX_CATEGORIES]})
    return None


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in GRANTED_WORDS:
            return True
        if lowered in DENIED_WORDS:
            return False
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    return None


def consent_decision(plan: BlockPlan, variables: Mapping[str, Any], log: ResultLog) -> ConsentDecision | None:
    """None when the block asks nothing about consent; else whether to send, and what to stamp."""
    required = parse_categories(getattr(plan.options, "consentCategories", ""))
    if plan.consent is None:
        if not required:
            return None
        log.info(
            "Skipped: this block needs consent for "
            f"{_names(required)}, but its Consent field is empty, so no consent was recorded.",
            field="consent",
            consent="missing",
        )
        return ConsentDecision(False, None)
    try:
        rendered = plan.consent.template.render(variables)
    except TemplateError as error:
        log.warning(
            f"Skipped: Consent could not be rendered ({error.message}), so no consent was recorded.",
            field="consent",
            consent="missing",
        )
        return ConsentDecision(False, None)
    state = read_consent(rendered.value)
    if state is None:
        why = (
            f"the variable(s) {', '.join(repr(name) for name in rendered.missing)} are not set"
            if rendered.missing
            else "it is empty or not a consent state"
        )
        log.info(f"Skipped: no consent was recorded for this conversation ({why}).", field="consent", consent="missing")
        return ConsentDecision(False, None)
    preferences, granted = _evaluate(state, required)
    if not granted:
        wanted = f"consent for {_names(required)}" if required else "consent"
        log.info(
            f"Skipped: the end user has not given {wanted} ({plan.consent.source!r}).",
            field="consent",
            consent="denied",
        )
        return ConsentDecision(False, preferences)
    return ConsentDecision(True, preferences)


def _evaluate(state: _State, required: tuple[str, ...]) -> tuple[dict[str, bool] | None, bool]:
    if state.everything is not None:
        preferences = {name: state.everything for name in required}
        return (preferences or None), state.everything
    by_lower = {name.lower(): flag for name, flag in state.categories.items()}
    preferences = dict(state.categories)
    for name in required:
        if name.lower() not in by_lower:
            preferences[name] = False
    if required:
        granted = all(by_lower.get(name.lower(), False) for name in required)
    else:
        granted = any(state.categories.values())
    return (preferences or None), granted


def _names(categories: tuple[str, ...]) -> str:
    return ", ".join(repr(name) for name in categories)
