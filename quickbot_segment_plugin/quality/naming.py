"""Naming conventions, as an editor-time lint: warnings, never errors.

Segment's advice for clean data is mostly about names: event names in Object Action Title
Case ('Order Completed'), one case style for property keys, no event names built from
variables (each value becomes its own event, and a workspace fills with 'Viewed Pricing',
'Viewed pricing', 'Viewed PRICING'), and no keys that differ only in case ('plan' and 'Plan'
are two columns in every warehouse). None of these stops a flow from working, so they are
reported by `lint()` beside `validate()`, which keeps its contract of returning `[]` for
options that work.

The property key style is the workspace's: its tracking plan's `quickbot.property_case`, else
`QUICKBOT_SEGMENT_PROPERTY_CASE` (snake_case by default; camelCase; any). Segment's reserved
names (`firstName`, `createdAt`, `address.postalCode` ...) are exempt: destinations map them
by exactly those names. Context keys are Segment's own vocabulary and are not linted.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import ValidationError

from ..core import ConfigurationError, env_str
from ..options import OPTIONS_ADAPTER, ActionOptions, UpgradedOptions, upgrade
from ..templating import is_template
from .plans import PROPERTY_CASES, CompiledPlan, PlanResolver

__all__ = ["PROPERTY_CASE_ENV", "RESERVED_NAMES", "lint", "lint_across_blocks"]

PROPERTY_CASE_ENV: Final = "QUICKBOT_SEGMENT_PROPERTY_CASE"
DEFAULT_PROPERTY_CASE: Final = "snake_case"

# Segment's spec: reserved identify and group traits (with address and company members),
# reserved track properties, and page properties. Destinations read these names verbatim.
RESERVED_NAMES: Final = frozenset(
    {
        "address", "age", "avatar", "birthday", "company", "createdAt", "description", "email",
        "firstName", "gender", "id", "lastName", "name", "phone", "title", "username", "website",
        "city", "country", "postalCode", "state", "street",
        "industry", "employee_count", "plan", "employees",
        "revenue", "currency", "value",
        "path", "referrer", "search", "url", "keywords", "category",
    }
)  # fmt: skip

_RESERVED_BY_FOLD: Final = {re.sub(r"[^0-9a-z]", "", name.lower()): name for name in RESERVED_NAMES}

_CASE_PATTERNS: Final = {
    "snake_case": re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$"),
    "camelCase": re.compile(r"^[a-z][a-zA-Z0-9]*$"),
}
_TITLE_WORD = re.compile(r"^[A-Z0-9][^\s_]*$")
# Where a trait or property key is used: identify traits describe a user, group traits a group,
# and track/page/screen properties an event; keys are compared within each.
_KEY_SPACES: Final = {"identify": "user traits", "group": "group traits"}
_NOUNS: Final = {"traits": "trait", "properties": "property"}

Warning = dict[str, str]


def lint(options: Any, workspace_id: str | None = None, *, environ: Mapping[str, str] | None = None) -> list[Warning]:
    """Naming warnings for one block: `[{"path", "message", "rule"}]`, `[]` when all is well.

    Options that do not validate give `[]`: `validate()` reports what is wrong with them.
    """
    parsed = _parse(options)
    if parsed is None:
        return []
    model, upgraded = parsed
    plan, plan_warnings = _workspace_plan(workspace_id, environ)
    case = _property_case(plan, environ)
    warnings = list(plan_warnings)
    if model.action == "track":
        warnings.extend(_event_name_warnings(model.event, plan))
    for list_name, noun in _NOUNS.items():
        items = getattr(model, list_name, None) or []
        seen: dict[str, tuple[int, str]] = {}
        for index, item in enumerate(items):
            key = item.key.strip()
            path = f"{list_name}/{index}/key"
            label = f"{noun} {index + 1}"
            bad_case = _case_warning(key, case)
            if bad_case is not None:
                warnings.append(_warning(path, f"Key {key!r} of {label} {bad_case}", "property_key_case"))
            folded = _fold(key)
            if folded in seen and seen[folded][1] != key:
                other_index, other = seen[folded]
                warnings.append(
                    _warning(
                        path,
                        f"Key {key!r} of {label} differs from {other!r} of {noun} {other_index + 1} only in case "
                        f"or separators; Segment keeps them as two different {list_name}.",
                        "case_duplicate_key",
                    )
                )
            else:
                seen.setdefault(folded, (index, key))
    return [{**warning, "path": upgraded.given_path(warning["path"])} for warning in warnings]


def lint_across_blocks(blocks: Sequence[tuple[str, Any]]) -> list[tuple[str, Warning]]:
    """Keys that differ only in case between blocks of one flow: `[(block id, warning)]`.

    One block cannot see the others, so `lint()` misses 'plan' in one block and 'Plan' in
    the next; a flow file (`quickbot-segment validate`) can.
    """
    first_seen: dict[tuple[str, str], tuple[str, str]] = {}  # (key space, folded) -> (block, key)
    found: list[tuple[str, Warning]] = []
    for block_id, options in blocks:
        parsed = _parse(options)
        if parsed is None:
            continue
        model, upgraded = parsed
        for list_name, noun in _NOUNS.items():
            space = _KEY_SPACES.get(model.action, "event properties")
            for index, item in enumerate(getattr(model, list_name, None) or []):
                key = item.key.strip()
                earlier = first_seen.setdefault((space, _fold(key)), (block_id, key))
                if earlier[0] != block_id and earlier[1] != key:
                    message = (
                        f"Key {key!r} of {noun} {index + 1} differs from {earlier[1]!r} in block {earlier[0]} only "
                        f"in case or separators; Segment keeps them as two different {space}."
                    )
                    path = upgraded.given_path(f"{list_name}/{index}/key")
                    found.append((block_id, _warning(path, message, "case_duplicate_key")))
    return found


def _parse(options: Any) -> tuple[ActionOptions, UpgradedOptions] | None:
    if not isinstance(options, Mapping):
        return None
    upgraded = upgrade(options)
    try:
        return OPTIONS_ADAPTER.validate_python(upgraded.options), upgraded
    except ValidationError:
        return None


def _workspace_plan(
    workspace_id: str | None, environ: Mapping[str, str] | None
) -> tuple[CompiledPlan | None, list[Warning]]:
    resolution = PlanResolver.from_env(environ).for_workspace(workspace_id)
    if resolution.error is not None:
        return None, [_warning("", f"The tracking plan cannot be used: {resolution.error}.", "plan_unusable")]
    return resolution.plan, []


def _property_case(plan: CompiledPlan | None, environ: Mapping[str, str] | None) -> str:
    if plan is not None and plan.property_case is not None:
        return plan.property_case
    raw = env_str(PROPERTY_CASE_ENV, DEFAULT_PROPERTY_CASE, environ)
    for style in PROPERTY_CASES:
        if raw.lower() == style.lower():
            return style
    raise ConfigurationError(
        f"{PROPERTY_CASE_ENV} must be one of {', '.join(PROPERTY_CASES)}, got {raw!r}.", field=PROPERTY_CASE_ENV
    )


def _event_name_warnings(event: str, plan: CompiledPlan | None) -> list[Warning]:
    name = event.strip()
    if is_template(name):
        return [
            _warning(
                "event",
                f"Event Name {name!r} is built from variables: every value becomes a separate event in Segment. "
                "Use a fixed name and send the variable as a property.",
                "dynamic_event_name",
            )
        ]
    warnings = []
    words = name.split(" ")
    if len(words) < 2 or not all(_TITLE_WORD.match(word) for word in words):
        suggestion = _title_case(name)
        advice = (
            f"use {suggestion!r}"
            if len(suggestion.split()) >= 2
            else "name the object and the action, such as 'Lead Qualified'"
        )
        warnings.append(
            _warning(
                "event",
                f"Event Name {name!r} does not follow Segment's Object Action naming in Title Case; {advice}.",
                "event_name_case",
            )
        )
    if plan is not None and name not in plan.events:
        close = difflib.get_close_matches(name, plan.events.keys(), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        warnings.append(
            _warning(
                "event",
                f"Event Name {name!r} is not in the tracking plan {plan.name!r}{hint}; its mode for unplanned "
                f"events is {plan.unplanned_events}.",
                "unplanned_event",
            )
        )
    return warnings


def _case_warning(key: str, case: str) -> str | None:
    pattern = _CASE_PATTERNS.get(case)
    if pattern is None:
        return None
    bad_parts = [part for part in key.split(".") if part not in RESERVED_NAMES and not pattern.match(part)]
    if not bad_parts:
        return None
    fixed = ".".join(_fixed_part(part, case) for part in key.split("."))
    advice = f"; use {fixed!r}" if fixed and fixed != key else ""
    return f"is not {case}, this workspace's style for property keys{advice}."


def _fixed_part(part: str, case: str) -> str:
    """The key part in `case`, or Segment's reserved name it spells differently ('First Name' -> 'firstName')."""
    if part in RESERVED_NAMES:
        return part
    return _RESERVED_BY_FOLD.get(_fold(part)) or _to_case(part, case)


def _words(text: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", spaced)
    return [word for word in re.split(r"[^A-Za-z0-9]+", spaced) if word]


def _to_case(text: str, case: str) -> str:
    words = [word.lower() for word in _words(text)]
    if case == "snake_case":
        return "_".join(words)
    return words[0] + "".join(word.capitalize() for word in words[1:]) if words else ""


def _title_case(text: str) -> str:
    return " ".join(word[0].upper() + word[1:] for word in _words(text))


def _fold(key: str) -> str:
    return re.sub(r"[^0-9a-z.]", "", key.lower())


def _warning(path: str, message: str, rule: str) -> Warning:
    return {"path": path, "message": message, "rule": rule}
