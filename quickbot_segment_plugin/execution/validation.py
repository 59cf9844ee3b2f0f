"""Editor-time checking of a block's options: problems with a path and a sentence.

The editor puts each message under the field its path points to, and bot builders are not
programmers, so a pydantic error dump is never shown: every error type a user can cause is
turned into a sentence that uses the field's label ("Event Name is required."). Checks that
need no network but more than the schema (one of User ID / Anonymous ID, template syntax,
static timestamps and typed values) run here too, so a flow is right before it is published.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..core import PLUGIN_CONTEXT, key_path
from ..options import (
    ACTION_TITLES,
    ITEM_LIST_FIELDS,
    ITEM_NOUNS,
    MODELS_BY_ACTION,
    OPTIONS_ADAPTER,
    ActionOptions,
    ConversionError,
    UpgradedOptions,
    convert,
    field_title,
    parse_datetime,
    templated_fields,
    upgrade,
)
from ..privacy import MAX_CATEGORIES, parse_categories
from ..templating import TemplateEngine, TemplateError, default_engine, is_template


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the options: `path` is a JSON Pointer without the leading slash."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


@dataclass
class CheckedOptions:
    """The outcome of checking: the model when the options are usable, and every problem found."""

    options: ActionOptions | None
    problems: list[Problem]
    upgraded: UpgradedOptions | None = None


def check_options(raw: object, engine: TemplateEngine | None = None) -> CheckedOptions:
    if not isinstance(raw, Mapping):
        return CheckedOptions(None, [Problem("", f"Options must be an object, got {_json_type(raw)}.")])
    upgraded = upgrade(raw)
    try:
        model = OPTIONS_ADAPTER.validate_python(upgraded.options)
    except ValidationError as error:
        problems = [
            Problem(upgraded.given_path(path), message)
            for path, message in _describe(error, upgraded.options.get("action"))
        ]
        return CheckedOptions(None, _dedupe(problems), upgraded)
    problems = [
        Problem(upgraded.given_path(p.path), p.message) for p in _semantic_problems(model, engine or default_engine())
    ]
    return CheckedOptions(model if not problems else None, problems, upgraded)


def _semantic_problems(model: ActionOptions, engine: TemplateEngine) -> list[Problem]:
    problems: list[Problem] = []
    action = model.action
    if action != "alias" and model.identity_missing():
        problems.append(
            Problem(
                "userId",
                "User ID or Anonymous ID is required: fill in one of them (either can be a {{variable}}).",
            )
        )
    for name in templated_fields(type(model)):
        source = getattr(model, name)
        problems.extend(_template_problems(engine, source, name, field_title(action, name)))
    timestamp = model.timestamp
    if timestamp.strip() and not is_template(timestamp):
        try:
            parse_datetime(timestamp)
        except ConversionError as error:
            problems.append(Problem("timestamp", f"Timestamp: {error}."))
    problems.extend(_consent_problems(model))
    for list_name in ITEM_LIST_FIELDS:
        items = getattr(model, list_name, None)
        if not items:
            continue
        noun = ITEM_NOUNS[list_name]
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            base = f"{list_name}/{index}"
            label = f"{noun} {index + 1} ({item.key.strip()!r})"
            problems.extend(_template_problems(engine, item.value, f"{base}/value", f"Value of {label}"))
            if item.type and item.value.strip() and not is_template(item.value):
                try:
                    convert(item.value, item.type)
                except ConversionError as error:
                    problems.append(Problem(f"{base}/value", f"Value of {label}: {error}."))
            key = item.key.strip()
            if key in seen:
                problems.append(
                    Problem(
                        f"{base}/key",
                        f"Key of {label} repeats {noun} {seen[key] + 1}; only one value can be sent per key.",
                    )
                )
            else:
                seen[key] = index
            parts = key_path(key)
            if "" in parts:
                problems.append(Problem(f"{base}/key", f"Key of {label} has an empty part between dots."))
            elif list_name == "context" and parts[0] in PLUGIN_CONTEXT:
                problems.append(
                    Problem(
                        f"{base}/key",
                        f"Key of {label}: context.{parts[0]} is written by the plugin itself "
                        f"({', '.join(f'context.{name}' for name in sorted(PLUGIN_CONTEXT))}); choose another key.",
                    )
                )
    return problems


def _consent_problems(model: ActionOptions) -> list[Problem]:
    """Categories without a consent variable would skip every conversation: say so at save time."""
    categories = parse_categories(model.consentCategories)
    if not categories:
        return []
    if not model.consent.strip():
        return [
            Problem(
                "consent",
                "Consent is empty, but Consent categories are set: choose the variable that holds the end "
                "user's consent, or the block is skipped in every conversation.",
            )
        ]
    if len(categories) > MAX_CATEGORIES:
        return [Problem("consentCategories", f"Consent categories: at most {MAX_CATEGORIES} categories.")]
    return []


def _template_problems(engine: TemplateEngine, source: str, path: str, label: str) -> list[Problem]:
    if not is_template(source):
        return []
    try:
        engine.check(source)
    except TemplateError as error:
        return [Problem(path, f"{label}: {error}")]  # str() appends "(line L, column C)" when known
    return []


def _describe(error: ValidationError, action: object) -> list[tuple[str, str]]:
    action_id = action if isinstance(action, str) and action in MODELS_BY_ACTION else None
    described = []
    for item in error.errors(include_url=False):
        loc = list(item["loc"])
        if loc and action_id is not None and loc[0] == action_id:
            loc = loc[1:]  # pydantic prefixes the discriminator's tag
        if loc and loc[-1] == "none":
            continue  # the `None` branch of an optional field: noise beside the real error
        if loc and isinstance(loc[-1], str) and loc[-1].startswith("literal["):
            loc = loc[:-1]  # the union branch pydantic tried, not a place in the options
        path = "/".join(str(part) for part in loc)
        described.append((path, _sentence(item, loc, action_id)))
    return described


def _sentence(item: Mapping[str, Any], loc: Sequence[Any], action: str | None) -> str:
    kind = item["type"]
    ctx = item.get("ctx") or {}
    if kind in {"union_tag_invalid", "union_tag_not_found"}:
        choices = ", ".join(f"{key} ({title})" for key, title in ACTION_TITLES.items())
        if kind == "union_tag_not_found":
            return f"Action is required: choose one of {choices}."
        return f"Action {ctx.get('tag')!r} is not a Segment action; choose one of {choices}."
    label = _label(loc, action)
    given = item.get("input")
    if kind == "missing":
        return f"{label} is required."
    if kind in {"string_too_short", "string_pattern_mismatch"}:
        return f"{label} cannot be empty."
    if kind == "string_too_long":
        return f"{label} is too long (at most {ctx.get('max_length')} characters)."
    if kind == "string_type":
        return f"{label} must be text, not {_json_type(given)}."
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        owner = f"the {ACTION_TITLES[action]} action" if action and len(loc) == 1 else "this item"
        return f"{name!r} is not a setting of {owner}; remove it."
    if kind == "list_type":
        return f"{label} must be a list of key/value items, not {_json_type(given)}."
    if kind in {"model_type", "dict_type", "model_attributes_type"}:
        return f"{label} must be an object, not {_json_type(given)}."
    if kind in {"bool_type", "bool_parsing"}:
        return f"{label} must be true or false, not {_json_type(given)}."
    if kind == "literal_error":
        return f"{label} must be one of {ctx.get('expected')}, not {given!r}."
    return f"{label}: {item['msg']}."


def _label(loc: Sequence[Any], action: str | None) -> str:
    if not loc:
        return "Options"
    head = str(loc[0])
    if head in ITEM_LIST_FIELDS and len(loc) >= 2 and isinstance(loc[1], int):
        noun = ITEM_NOUNS[head]
        if len(loc) == 2:
            return f"{noun.capitalize()} {loc[1] + 1}"
        return f"{field_title(action, str(loc[2]))} of {noun} {loc[1] + 1}"
    if head == "integrations" and len(loc) >= 2:
        return f"Integration {loc[1]!r}"
    return field_title(action, head)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[Problem] = set()
    unique = []
    for problem in problems:
        if problem not in seen:
            seen.add(problem)
            unique.append(problem)
    return unique
