"""Checking an event against a compiled plan, and applying the plan's mode to what is found.

Every way the event breaks the plan is found first (the schemas, and keys or events the plan
does not list); the mode then decides, per violation, whether the event is sent as it is,
refused, or sent without the offending properties or traits.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any, Final

from .compiled import CallRule, CompiledPlan, SchemaCheck
from .errors import TrackingPlanError
from .fast_schema import Check, always
from .sentences import event_label, outcome_sentence, problem_of, subject_of, unplanned_keys
from .verdicts import MAX_VIOLATIONS_LOGGED, Decision, PlanVerdict, Violation

__all__ = ["enforce", "find_violations", "value_checks"]

# Where the values are that choose the rule a message is checked against (`CompiledPlan.rule_for`).
_CHOOSING_PATHS: Final = (("event",), ("context", "protocols"))


def find_violations(plan: CompiledPlan, message: Mapping[str, Any]) -> tuple[list[Violation], CallRule | None, bool]:
    """Every way `message` breaks `plan`: (violations, the rule used, whether the event is unplanned)."""
    rule, unplanned = plan.rule_for(message)
    violations: list[Violation] = []
    if unplanned:
        event = event_label(message)
        suggestion = difflib.get_close_matches(str(message.get("event", "")), plan.events.keys(), n=1, cutoff=0.75)
        hint = f" (did you mean {suggestion[0]!r}?)" if suggestion else ""
        violations.append(
            Violation("unplanned_event", ("event",), f"Event {event!r}", f"is not in the tracking plan{hint}")
        )
    schemas = [plan.common] if plan.common is not None else []
    if rule is not None:
        schemas.append(rule.schema)
        object_name = rule.object_name
        common = plan.common_declared.get(object_name, frozenset())
        given = message.get(object_name)
        # Set arithmetic first (in C): most events have no key outside the plan.
        if isinstance(given, Mapping) and rule.declared is not None and given.keys() - rule.declared - common:
            undeclared = tuple(key for key in given if not rule.is_declared(key, common))
            if undeclared:
                violations.append(unplanned_keys(object_name, undeclared, event_label(message), message))
    skip_extra_at = (rule.object_name,) if rule is not None else None
    for schema in schemas:
        violations.extend(_schema_violations(schema, message, skip_extra_at))
    return violations, rule, unplanned


def value_checks(plan: CompiledPlan, message: Mapping[str, Any], path: tuple[str, ...]) -> list[Check] | None:
    """What `find_violations` asks of the value at `path` of `message`, as tests of the value alone.

    For a message that `find_violations` clears, another with the same keys everywhere and the
    same values elsewhere is cleared too exactly when its value at `path` passes these: the
    plan's fast checks look at each value on its own (fast_schema.compile_check_at), and a value
    that chooses the rule must stay the same. None: the plan needs jsonschema, which promises
    no such thing.
    """
    checks: list[Check] = []
    if any(path[: len(choosing)] == choosing for choosing in _CHOOSING_PATHS):
        checks.append(_equal_to(_value_at(message, path)))
    rule, _ = plan.rule_for(message)
    for schema in (plan.common, rule.schema if rule is not None else None):
        if schema is None:
            continue
        check = schema.check_at(path)
        if check is None:
            return None
        if check is not always:
            checks.append(check)
    return checks


def _value_at(message: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = message
    for key in path:
        value = value[key]
    return value


def _equal_to(expected: Any) -> Check:
    kind = type(expected)
    return lambda value: type(value) is kind and value == expected


def enforce(plan: CompiledPlan, message: dict[str, Any]) -> PlanVerdict:
    """Apply the plan's mode to `message`; the message itself is returned when nothing is wrong."""
    violations, _, unplanned = find_violations(plan, message)
    if not violations:
        return PlanVerdict(message)
    # An unplanned event is handled as a whole by the mode for unplanned events.
    mode = plan.unplanned_events if unplanned else plan.mode
    verdict = PlanVerdict(message)
    if mode == "block":
        verdict.message = None
        for violation in violations:
            verdict.outcomes.append((violation, "refused", outcome_sentence(plan, violation, "refused", "block")))
        return _trimmed(verdict)
    if mode == "allow":
        for violation in violations:
            verdict.outcomes.append((violation, "sent", outcome_sentence(plan, violation, "sent", "allow")))
        return _trimmed(verdict)
    # omit: take out what can be taken out, check again, and send what is left.
    removals: dict[str, set[str]] = {}
    if unplanned:
        object_name = "properties"
        declared = plan.common_declared.get(object_name, frozenset())
        given = message.get(object_name)
        if isinstance(given, Mapping):
            extra = tuple(key for key in given if key not in declared)
            if extra:
                violations.append(unplanned_keys(object_name, extra, event_label(message), message))
    for violation in violations:
        for object_name, key in _removable_keys(violation):
            removals.setdefault(object_name, set()).add(key)
    trimmed = dict(message)
    for object_name, keys in removals.items():
        trimmed[object_name] = {k: v for k, v in message[object_name].items() if k not in keys}
    for violation in violations:
        decision: Decision = "removed" if _removable_keys(violation) else "sent"
        verdict.outcomes.append((violation, decision, outcome_sentence(plan, violation, decision, "omit")))
    remaining, _, _ = find_violations(plan, trimmed)
    for violation in remaining:
        if violation.rule in {"unplanned_event", "unplanned_property", "unplanned_trait"}:
            continue  # already reported above
        if any(violation.text == earlier.text for earlier, _, _ in verdict.outcomes):
            continue
        verdict.outcomes.append((violation, "sent", outcome_sentence(plan, violation, "sent", "omit")))
    verdict.message = trimmed
    return _trimmed(verdict)


def _removable_keys(violation: Violation) -> list[tuple[str, str]]:
    if violation.keys:
        return [(violation.path[0], key) for key in violation.keys if isinstance(violation.path[0], str)]
    return [violation.removable] if violation.removable is not None else []


def _trimmed(verdict: PlanVerdict) -> PlanVerdict:
    if len(verdict.outcomes) > MAX_VIOLATIONS_LOGGED:
        verdict.more = len(verdict.outcomes) - MAX_VIOLATIONS_LOGGED
    return verdict


def _schema_violations(
    schema: SchemaCheck, message: Mapping[str, Any], skip_extra_at: tuple[str, ...] | None
) -> list[Violation]:
    violations = []
    try:
        errors = schema.errors(message)
    except Exception as failure:  # an unresolvable $ref, a pattern Python cannot run: the plan's fault
        raise TrackingPlanError(f"it cannot check this event: {failure}") from None
    for error in errors:
        path = tuple(error.absolute_path)
        keyword = str(error.validator)
        if keyword == "additionalProperties" and skip_extra_at is not None and path == skip_extra_at:
            continue  # the same finding as the unplanned keys, already reported
        if keyword == "required":
            missing = [
                name
                for name in error.validator_value
                if isinstance(error.instance, Mapping) and name not in error.instance
            ]
            for name in missing:
                full = (*path, name)
                violations.append(
                    Violation(
                        "plan_required",
                        full,
                        subject_of(full, message),
                        "is required by the tracking plan and is missing",
                    )
                )
            continue
        removable = None
        if len(path) >= 2 and path[0] in {"properties", "traits"} and isinstance(path[1], str):
            removable = (str(path[0]), path[1])
        violations.append(
            Violation(f"plan_{_rule_name(keyword)}", path, subject_of(path, message), problem_of(error), removable)
        )
    # jsonschema repeats a `required` error per schema branch; keep each sentence once.
    unique: dict[str, Violation] = {}
    for violation in violations:
        unique.setdefault(violation.text, violation)
    return list(unique.values())


def _rule_name(keyword: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", keyword).lower()  # minLength -> min_length
