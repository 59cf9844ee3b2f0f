"""The sentences a bot builder reads about a violation: what broke the plan, and what became of the event.

Each names the field as the builder knows it (`Property 'score' of 'Lead Qualified'`) and says
what the plan expects in plain words rather than JSON Schema keywords, quoting a value only as
a short excerpt.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from ...core import excerpt
from ..cleaning import dotted_path
from .compiled import CompiledPlan
from .verdicts import Decision, Violation

__all__ = ["OBJECT_NOUNS", "event_label", "outcome_sentence", "problem_of", "subject_of", "unplanned_keys"]

OBJECT_NOUNS: Final = {"properties": "Property", "traits": "Trait", "context": "Context"}


def outcome_sentence(plan: CompiledPlan, violation: Violation, decision: Decision, mode: str) -> str:
    """The violation, then what the mode did with the event, then which plan and mode said so."""
    where = f"tracking plan {plan.name!r}, mode {mode}"
    if decision == "refused":
        return f"{violation.text}; the event was not sent ({where})."
    if decision == "removed":
        what = "they were" if len(violation.keys) > 1 else "it was"
        return f"{violation.text}; {what} removed before sending ({where})."
    if mode == "omit":
        return f"{violation.text}; sent anyway, as omit mode only removes properties and traits ({where})."
    return f"{violation.text}; sent anyway ({where})."


def event_label(message: Mapping[str, Any]) -> str:
    """How a message is named to the bot builder: a track by its event name, any other call by its type."""
    kind = str(message.get("type", ""))
    return str(message.get("event", "")) if kind == "track" else kind


def subject_of(path: tuple[str | int, ...], message: Mapping[str, Any]) -> str:
    """What broke the plan, named as the builder names it: a property or trait by its key, of which event."""
    if not path:
        return "The event"
    head = path[0]
    owner = f" of {message.get('event')!r}" if message.get("type") == "track" and head == "properties" else ""
    if head in OBJECT_NOUNS and isinstance(head, str):
        if len(path) == 1:
            return f"The {head}{owner}"
        return f"{OBJECT_NOUNS[head]} {dotted_path(path[1:])!r}{owner}"
    return f"Field {dotted_path(path)!r}"


def unplanned_keys(object_name: str, keys: tuple[str, ...], event: str, message: Mapping[str, Any]) -> Violation:
    """One violation for all the undeclared keys of an event: one sentence, and omit mode removes them together."""
    noun = OBJECT_NOUNS[object_name]
    plural = {"Property": "Properties", "Trait": "Traits"}[noun] if len(keys) > 1 else noun
    listed = ", ".join(repr(key) for key in keys)
    owner = f" of {event!r}" if message.get("type") == "track" else ""
    verb = "are" if len(keys) > 1 else "is"
    rule = "unplanned_property" if object_name == "properties" else "unplanned_trait"
    return Violation(rule, (object_name,), f"{plural} {listed}{owner}", f"{verb} not in the tracking plan", keys=keys)


_TYPE_WORDS = {
    "string": "text",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true or false",
    "object": "an object",
    "array": "a list",
    "null": "null",
}


def problem_of(error: Any) -> str:
    """What the plan expects, from one jsonschema error, in words rather than keywords."""
    keyword = error.validator
    expected = error.validator_value
    got = _describe(error.instance)
    if keyword == "type":
        types = expected if isinstance(expected, list) else [expected]
        words = " or ".join(_TYPE_WORDS.get(str(name), str(name)) for name in types)
        return f"must be {words}, got {got}"
    if keyword == "enum":
        return f"must be one of {', '.join(_short(value) for value in expected)}; got {got}"
    if keyword == "const":
        return f"must be {_short(expected)}, got {got}"
    if keyword == "pattern":
        return f"must match the pattern {expected!r}, got {got}"
    if keyword == "format":
        return f"must be a valid {expected} value, got {got}"
    if keyword in {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}:
        words = {
            "minimum": "at least",
            "exclusiveMinimum": "more than",
            "maximum": "at most",
            "exclusiveMaximum": "less than",
        }[keyword]
        return f"must be {words} {expected!r}, got {got}"
    if keyword in {"minLength", "maxLength"}:
        words = "at least" if keyword == "minLength" else "at most"
        return f"must be {words} {expected} characters long, got {got}"
    if keyword in {"minItems", "maxItems"}:
        words = "at least" if keyword == "minItems" else "at most"
        return f"must have {words} {expected} items"
    if keyword == "additionalProperties":
        return "has keys the tracking plan does not allow"
    return f"breaks the tracking plan ({error.message[:200]})"


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _short(value)
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _short(value: Any, limit: int = 40) -> str:
    """A plan's value (an enum member, a const) as the plan writes it, in JSON; text is quoted and cut by `excerpt`."""
    if not isinstance(value, str):
        return json.dumps(value)[:limit]
    return excerpt(value, limit)
