"""A compiled plan: one rule per call the plan describes, and which rule a message is checked against."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from .fast_schema import Check, compile_check_at

__all__ = ["MODES", "CallRule", "CompiledPlan", "Mode", "SchemaCheck"]

Mode = Literal["allow", "block", "omit"]
MODES: Final[tuple[Mode, ...]] = ("allow", "block", "omit")


@dataclass(frozen=True)
class SchemaCheck:
    """One schema of a plan: jsonschema's validator, and the fast check of fast_schema.py when the
    schema stays inside its subset (None otherwise)."""

    validator: Any
    fast: Check | None

    def errors(self, message: Mapping[str, Any]) -> list[Any]:
        if self.fast is not None and self.fast(message):
            return []
        return list(self.validator.iter_errors(message))

    def check_at(self, path: tuple[str, ...]) -> Check | None:
        """The fast check's test of the value at `path` (fast_schema.compile_check_at); None
        when the schema has no fast check."""
        if self.fast is None:
            return None
        validator = self.validator
        return compile_check_at(validator.schema, path, type(validator).VALIDATORS, validator.format_checker)


@dataclass(frozen=True)
class CallRule:
    """The schema for one kind of call (a track event, identify, group) and what it declares."""

    key: str  # the event name, or "identify" / "group"
    version: int
    schema: SchemaCheck
    object_name: str  # "properties" or "traits": where unplanned keys are looked for
    declared: frozenset[str] | None  # None: the schema allows any key (`additionalProperties`)
    patterns: tuple[re.Pattern[str], ...] = ()

    def is_declared(self, key: str, common: frozenset[str]) -> bool:
        if self.declared is None or key in self.declared or key in common:
            return True
        return any(pattern.search(key) for pattern in self.patterns)


@dataclass(frozen=True)
class CompiledPlan:
    name: str
    path: str
    mode: Mode
    unplanned_events: Mode
    property_case: str | None
    events: Mapping[str, tuple[CallRule, ...]]  # by event name, oldest version first
    identify: CallRule | None
    group: CallRule | None
    common: SchemaCheck | None  # the common (global) schema
    common_declared: Mapping[str, frozenset[str]]  # object name -> keys the common schema declares

    def rule_for(self, message: Mapping[str, Any]) -> tuple[CallRule | None, bool]:
        """(the rule for this call, whether the call is an unplanned track event)."""
        kind = message.get("type")
        if kind == "track":
            versions = self.events.get(str(message.get("event", "")))
            if not versions:
                return None, True
            return _pick_version(versions, message), False
        if kind == "identify":
            return self.identify, False
        if kind == "group":
            return self.group, False
        return None, False

    @property
    def event_names(self) -> list[str]:
        return sorted(self.events)


def _pick_version(versions: tuple[CallRule, ...], message: Mapping[str, Any]) -> CallRule:
    """Protocols' rule: `context.protocols.event_version` when it names a version, else the oldest."""
    context = message.get("context")
    protocols = context.get("protocols") if isinstance(context, Mapping) else None
    wanted = protocols.get("event_version") if isinstance(protocols, Mapping) else None
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        for rule in versions:
            if rule.version == wanted:
                return rule
    return versions[0]
