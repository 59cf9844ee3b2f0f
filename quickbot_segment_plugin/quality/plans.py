"""Tracking plans: Segment Protocols plans, checked before an event is enqueued.

Segment's Protocols validates events after they reach Segment and reports violations there;
by then a bad event is in the workspace. A plan attached here is the same JSON (a JSON
Schema per track event, for identify traits, for group traits, and a common schema for every
call), checked in the bot, so the plan's mode can stop or trim an event before it is sent:

- `allow`: send it, and log each violation as a warning (Protocols' own default);
- `block`: do not send it; the block fails with the violations as errors;
- `omit`:  remove the properties (or traits) that are not in the plan or break it, send the
  rest; what cannot be removed (a missing required property) is logged and sent.

Unplanned track events (a name the plan does not list) follow the same modes (`omit` sends
the event without the properties the common schema does not declare); the plan may set a
different mode for them. A plan is read from `QUICKBOT_SEGMENT_TRACKING_PLAN_DIR/<workspace>.json`,
else from `QUICKBOT_SEGMENT_TRACKING_PLAN`; it is compiled once and cached by file path,
modification time and size, so an edited plan is picked up by the next event without a
restart, and a plan edited into something unusable leaves the last good version in force.

Accepted shapes, all loaded unchanged: the Config API plan (`{"display_name", "rules":
{"global", "events": [{"name", "version", "rules"}], "identify", "group", "identify_traits",
"group_traits"}}`, optionally wrapped as `{"tracking_plan": ...}`), and the Public API's list
of rules (`{"name", "rules": [{"type": "TRACK" | "IDENTIFY" | "GROUP" | "COMMON", "key",
"version", "jsonSchema"}]}`, or `{"data": {"rules": [...]}}`). Schemas are draft-07 (draft-04
and later drafts work too; `$schema` decides). The only addition Segment does not know is an
optional top-level `"quickbot": {"mode", "unplanned_events", "property_case"}` object.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Final, Literal

from ..core import LruCache, PluginError, excerpt, file_stem
from .cleaning import dotted_path, is_email_address
from .fast_schema import Check, compile_check
from .settings import QualityVariables

__all__ = [
    "MODES",
    "PLAN_DIR_ENV",
    "PLAN_PATH_ENV",
    "CompiledPlan",
    "PlanResolver",
    "PlanVerdict",
    "Resolution",
    "TrackingPlanError",
    "Violation",
    "compile_plan",
    "enforce",
    "event_label",
    "load_plan",
]

logger = logging.getLogger("quickbot_segment_plugin.tracking_plans")

PLAN_DIR_ENV: Final = "QUICKBOT_SEGMENT_TRACKING_PLAN_DIR"
PLAN_PATH_ENV: Final = "QUICKBOT_SEGMENT_TRACKING_PLAN"
Mode = Literal["allow", "block", "omit"]
MODES: Final[tuple[Mode, ...]] = ("allow", "block", "omit")
PROPERTY_CASES: Final = ("snake_case", "camelCase", "any")
MAX_PLAN_BYTES: Final = 5 * 1024 * 1024
MAX_VIOLATIONS_LOGGED: Final = 20
COMPILED_CACHE_SIZE: Final = 256
# A workspace id is a file name only when it cannot climb out of the directory.
_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))$")
OBJECT_NOUNS: Final = {"properties": "Property", "traits": "Trait", "context": "Context"}


class TrackingPlanError(PluginError):
    """A plan file cannot be read or compiled; the message names the file and the place in it."""


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


@dataclass(frozen=True)
class Violation:
    """One way an event breaks the plan, before the mode decides what becomes of it."""

    rule: str  # plan_<keyword> (plan_type, plan_required ...), unplanned_event, unplanned_property, unplanned_trait
    path: tuple[str | int, ...]
    subject: str  # "Property 'score' of 'Lead Qualified'"
    problem: str  # "must be a number, got 'high'"
    removable: tuple[str, str] | None = None  # (object, key) that omit mode can take out
    keys: tuple[str, ...] = ()  # the undeclared keys, for unplanned_property / unplanned_trait

    @property
    def text(self) -> str:
        return f"{self.subject} {self.problem}"


Decision = Literal["sent", "refused", "removed"]


@dataclass
class PlanVerdict:
    """What the plan's mode made of an event: the message to send (or None) and each violation."""

    message: dict[str, Any] | None
    outcomes: list[tuple[Violation, Decision, str]] = field(default_factory=list)  # violation, decision, sentence
    more: int = 0  # violations past MAX_VIOLATIONS_LOGGED, counted but not spelled out

    @property
    def refused(self) -> bool:
        return self.message is None


# --- loading -----------------------------------------------------------------------------


_compiled: LruCache[tuple[str, int, int], CompiledPlan] = LruCache(COMPILED_CACHE_SIZE)


def load_plan(path: str | os.PathLike[str]) -> CompiledPlan:
    """The compiled plan in `path`, from the process-wide cache while the file is unchanged."""
    resolved = os.path.abspath(os.fspath(path))
    try:
        stat = os.stat(resolved)
    except OSError as error:
        raise TrackingPlanError(
            f"cannot read the tracking plan {resolved}: {error.strerror}", field=PLAN_PATH_ENV
        ) from None
    return _load_stat(resolved, stat.st_mtime_ns, stat.st_size)


def _load_stat(path: str, mtime_ns: int, size: int) -> CompiledPlan:
    key = (path, mtime_ns, size)
    plan = _compiled.get(key)
    if plan is not None:
        return plan
    if size > MAX_PLAN_BYTES:
        raise TrackingPlanError(f"the tracking plan {path} is larger than {MAX_PLAN_BYTES // (1024 * 1024)} MB")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TrackingPlanError(f"cannot read the tracking plan {path}: {error}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise TrackingPlanError(
            f"the tracking plan {path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None
    plan = compile_plan(document, source=path)
    _compiled.put(key, plan)
    return plan


def compile_plan(document: Any, *, source: str = "<tracking plan>") -> CompiledPlan:
    """Compile a plan document (either Segment shape); TrackingPlanError names what is wrong."""
    if not isinstance(document, Mapping):
        raise TrackingPlanError(f"the tracking plan {source} must be a JSON object")
    settings = document.get("quickbot", {})
    for wrapper in ("tracking_plan", "trackingPlan", "data"):
        inner = document.get(wrapper)
        if isinstance(inner, Mapping) and "rules" in inner:
            document = inner
            break
    name = str(document.get("display_name") or document.get("name") or Path(source).stem)
    mode, unplanned, case = _plan_settings(settings, source)
    rules = document.get("rules")
    if isinstance(rules, Mapping):
        parts = _config_api_rules(rules, source)
    elif isinstance(rules, list):
        parts = _public_api_rules(rules, source)
    else:
        raise TrackingPlanError(
            f"the tracking plan {source} has no rules: expected 'rules' as an object (Config API) "
            "or a list (Public API)"
        )
    common_schema, event_schemas, identify_schema, group_schema = parts
    events: dict[str, list[CallRule]] = {}
    for event_name, version, schema in event_schemas:
        rule = _call_rule(schema, event_name, version, "properties", f"{source}: event {event_name!r}")
        events.setdefault(event_name, []).append(rule)
    return CompiledPlan(
        name=name,
        path=source,
        mode=mode,
        unplanned_events=unplanned,
        property_case=case,
        events={key: tuple(sorted(rules_, key=lambda r: r.version)) for key, rules_ in events.items()},
        identify=_call_rule(identify_schema, "identify", 1, "traits", f"{source}: identify")
        if identify_schema is not None
        else None,
        group=_call_rule(group_schema, "group", 1, "traits", f"{source}: group") if group_schema is not None else None,
        common=_schema_check(common_schema, f"{source}: common schema") if common_schema is not None else None,
        common_declared={obj: _declared_keys(common_schema, obj)[0] or frozenset() for obj in ("properties", "traits")}
        if common_schema is not None
        else {"properties": frozenset(), "traits": frozenset()},
    )


Schema = Mapping[str, Any]


def _config_api_rules(
    rules: Mapping[str, Any], source: str
) -> tuple[Schema | None, list[tuple[str, int, Schema]], Schema | None, Schema | None]:
    events = []
    for index, event in enumerate(rules.get("events") or []):
        where = f"{source}: rules.events[{index}]"
        if not isinstance(event, Mapping) or not isinstance(event.get("name"), str) or not event["name"]:
            raise TrackingPlanError(f"{where} needs a 'name'")
        events.append((event["name"], _version(event.get("version"), where), _schema(event.get("rules", {}), where)))
    identify = _first_schema(rules, ("identify", "identify_traits"), source)
    group = _first_schema(rules, ("group", "group_traits"), source)
    common = rules.get("global")
    return (_schema(common, f"{source}: rules.global") if common is not None else None), events, identify, group


def _first_schema(rules: Mapping[str, Any], names: Iterable[str], source: str) -> Schema | None:
    # `identify_traits` / `group_traits` are lists in the Config API (empty in every plan Segment
    # returns); a schema object there is taken as the identify / group schema.
    for name in names:
        value = rules.get(name)
        if isinstance(value, Mapping) and value:
            return _schema(value, f"{source}: rules.{name}")
    return None


def _public_api_rules(
    rules: list[Any], source: str
) -> tuple[Schema | None, list[tuple[str, int, Schema]], Schema | None, Schema | None]:
    common = identify = group = None
    events = []
    for index, rule in enumerate(rules):
        where = f"{source}: rules[{index}]"
        if not isinstance(rule, Mapping):
            raise TrackingPlanError(f"{where} must be an object")
        kind = str(rule.get("type", "")).upper()
        schema = _schema(rule.get("jsonSchema", rule.get("json_schema", {})), where)
        if kind == "TRACK":
            if not isinstance(rule.get("key"), str) or not rule["key"]:
                raise TrackingPlanError(f"{where} is a TRACK rule without a 'key' (the event name)")
            events.append((rule["key"], _version(rule.get("version"), where), schema))
        elif kind == "COMMON":
            common = schema
        elif kind == "IDENTIFY":
            identify = schema
        elif kind == "GROUP":
            group = schema
        elif kind in {"PAGE", "SCREEN"}:
            logger.info(
                "%s: %s rules are not checked by the Segment block (track, identify, group, common are)", where, kind
            )
        else:
            raise TrackingPlanError(f"{where} has type {rule.get('type')!r}; expected TRACK, IDENTIFY, GROUP or COMMON")
    return common, events, identify, group


def _plan_settings(settings: Any, source: str) -> tuple[Mode, Mode, str | None]:
    if not isinstance(settings, Mapping):
        raise TrackingPlanError(f'{source}: \'quickbot\' must be an object such as {{"mode": "block"}}')
    mode = settings.get("mode", "allow")
    if mode not in MODES:
        raise TrackingPlanError(f"{source}: quickbot.mode must be one of allow, block, omit; got {mode!r}")
    unplanned = settings.get("unplanned_events", mode)
    if unplanned not in MODES:
        raise TrackingPlanError(
            f"{source}: quickbot.unplanned_events must be one of allow, block, omit; got {unplanned!r}"
        )
    case = settings.get("property_case")
    if case is not None and case not in PROPERTY_CASES:
        raise TrackingPlanError(
            f"{source}: quickbot.property_case must be one of {', '.join(PROPERTY_CASES)}; got {case!r}"
        )
    return mode, unplanned, case


def _version(value: Any, where: str) -> int:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise TrackingPlanError(f"{where}: 'version' must be a whole number, got {value!r}")
    return value


def _schema(value: Any, where: str) -> Schema:
    if isinstance(value, bool):
        return {} if value else {"not": {}}
    if not isinstance(value, Mapping):
        raise TrackingPlanError(f"{where} must be a JSON Schema object")
    return value


def _call_rule(schema: Schema, key: str, version: int, object_name: str, where: str) -> CallRule:
    declared, patterns = _declared_keys(schema, object_name)
    return CallRule(key, version, _schema_check(schema, where), object_name, declared, patterns)


def _declared_keys(schema: Schema, object_name: str) -> tuple[frozenset[str] | None, tuple[re.Pattern[str], ...]]:
    """Keys the schema plans for `properties` / `traits`; None when it explicitly allows any."""
    inner = schema.get("properties", {}).get(object_name) if isinstance(schema.get("properties"), Mapping) else None
    if not isinstance(inner, Mapping):
        return frozenset(), ()
    extra = inner.get("additionalProperties")
    if extra is not None and extra is not False:
        return None, ()  # the plan says any other key is fine: nothing is unplanned
    declared = inner.get("properties")
    keys = frozenset(declared) if isinstance(declared, Mapping) else frozenset()
    patterns = []
    for pattern in inner.get("patternProperties") or {}:
        try:
            patterns.append(re.compile(pattern))
        except re.error:
            continue  # check_schema reports a broken pattern
    return keys, tuple(patterns)


def _schema_check(schema: Schema, where: str) -> SchemaCheck:
    # Imported here, not at module import: jsonschema reads its meta-schemas from disk when
    # imported, and the host contract forbids I/O when the plugin loads.
    from jsonschema import Draft7Validator
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    cls = validator_for(schema, default=Draft7Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as error:
        at = "/".join(str(part) for part in error.absolute_path)
        raise TrackingPlanError(
            f"{where} is not a valid JSON Schema ({error.message}{' at ' + at if at else ''})"
        ) from None
    checker = _formats()
    return SchemaCheck(cls(schema, format_checker=checker), compile_check(schema, cls.VALIDATORS, checker))


def _is_date_time(instance: object) -> bool:
    if not isinstance(instance, str):
        return True  # `format` only constrains strings
    match = _RFC3339.fullmatch(instance)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(group) for group in match.groups()[:6])
    try:
        datetime(year, month, day, hour, minute, min(second, 59))  # RFC 3339 allows a leap second
    except ValueError:
        return False
    return True


def _is_email(instance: object) -> bool:
    return not isinstance(instance, str) or is_email_address(instance)


@cache
def _formats() -> Any:
    """The formats Segment's editor writes ("date-time" for its "Date time" type, "email") are
    checked without optional packages; other known formats use jsonschema's own checks."""
    from jsonschema import FormatChecker

    checker = FormatChecker()
    checker.checks("date-time")(_is_date_time)
    checker.checks("email")(_is_email)
    return checker


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


# --- resolving a workspace's plan ----------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """The plan for a workspace now: `plan` (or None), a `warning` to log, or an `error`."""

    plan: CompiledPlan | None = None
    warning: str | None = None
    error: TrackingPlanError | None = None


_NO_PLAN: Final = Resolution()


class PlanResolver:
    """Finds each workspace's plan file and keeps its compiled plan while the file is unchanged.

    Settings are read once, when the resolver is made; the plan file is looked at (one `stat`)
    on every event, so an edit is in force from the next event.
    """

    def __init__(self, plan_dir: str | None, default_path: str | None) -> None:
        self.plan_dir = os.path.abspath(plan_dir) if plan_dir else None
        self.default_path = os.path.abspath(default_path) if default_path else None
        self._lock = threading.Lock()
        # path -> (stat key, last good plan or None, what to answer for that file as it is)
        self._state: dict[str, tuple[tuple[int, int], CompiledPlan | None, Resolution]] = {}
        self._candidates: dict[str | None, tuple[str, ...]] = {}
        self._reported: set[str] = set()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PlanResolver:
        variables = QualityVariables.from_env(environ)
        return cls(variables.tracking_plan_dir or None, variables.tracking_plan or None)

    @property
    def enabled(self) -> bool:
        return self.plan_dir is not None or self.default_path is not None

    def for_workspace(self, workspace_id: str | None) -> Resolution:
        if not self.enabled:
            return _NO_PLAN
        found = self._stat_for(workspace_id)
        if found is None:
            return _NO_PLAN
        if isinstance(found, Resolution):
            return found
        path, stat_key = found
        state = self._state.get(path)  # one dict read: the common case takes no lock
        if state is not None and state[0] == stat_key:
            return state[2]
        last_good = state[1] if state is not None else None
        plan: CompiledPlan | None
        try:
            plan = _load_stat(path, *stat_key)
            resolution = Resolution(plan=plan)
        except TrackingPlanError as failure:
            logger.error("tracking plan %s cannot be used: %s", path, failure)
            plan = last_good
            resolution = _failed(failure, last_good)
        with self._lock:
            self._state[path] = (stat_key, plan, resolution)
        return resolution

    def path_for(self, workspace_id: str | None) -> str | None:
        """The workspace's own plan file in the plan directory (`workspace_files` encodes the id)."""
        stem = file_stem(workspace_id or "")
        if self.plan_dir is None or stem is None:
            return None
        return os.path.join(self.plan_dir, f"{stem}.json")

    def describe(self, workspace_id: str | None) -> str:
        """Which plan file applies to the workspace, in a sentence for `validate` and `privacy check`."""
        if not self.enabled:
            return f"no tracking plan ({PLAN_DIR_ENV} and {PLAN_PATH_ENV} are not set)"
        found = self._stat_for(workspace_id)
        if isinstance(found, Resolution):
            return f"the tracking plan cannot be used: {found.error}"
        if found is not None:
            return f"{found[0]} applies"
        own = self.path_for(workspace_id)
        return f"no tracking plan ({own} does not exist)" if own else "no tracking plan"

    def _stat_for(self, workspace_id: str | None) -> tuple[str, tuple[int, int]] | Resolution | None:
        """The first plan file that exists; an error `Resolution` when the configured directory
        cannot say whether the workspace has one: a plan must never be skipped for none."""
        for path in self._candidates_for(workspace_id):
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                if path != self.default_path and self.plan_dir is not None and not os.path.isdir(self.plan_dir):
                    return self._unusable(f"the tracking plan directory {self.plan_dir} does not exist")
                continue
            except OSError as error:
                return self._unusable(f"{path}: cannot be read ({error.strerror or error})")
            return path, (stat.st_mtime_ns, stat.st_size)
        if workspace_id and self.plan_dir is not None and self.path_for(workspace_id) is None:
            return self._unusable(f"the workspace id {workspace_id!r} cannot be mapped to a plan file name")
        return None

    def _unusable(self, problem: str) -> Resolution:
        """Logged once per problem (every event gets it in its result)."""
        with self._lock:
            first = problem not in self._reported
            if first:
                if len(self._reported) >= 10_000:
                    self._reported.clear()
                self._reported.add(problem)
        if first:
            logger.error("tracking plan cannot be used: %s; events are refused", problem)
        return Resolution(error=TrackingPlanError(problem))

    def _candidates_for(self, workspace_id: str | None) -> tuple[str, ...]:
        candidates = self._candidates.get(workspace_id)
        if candidates is None:
            found = []
            own = self.path_for(workspace_id)
            if own is not None:
                found.append(own)
            if self.default_path is not None:
                found.append(self.default_path)
            candidates = tuple(found)
            with self._lock:
                if len(self._candidates) >= 100_000:
                    self._candidates.clear()  # a bound, not a policy: rebuilt on the next event
                self._candidates[workspace_id] = candidates
        return candidates


def _failed(error: TrackingPlanError, last_good: CompiledPlan | None) -> Resolution:
    if last_good is None:
        return Resolution(error=error)
    return Resolution(
        plan=last_good,
        warning=f"The tracking plan file was changed but cannot be used ({error}); "
        "its previous version is still applied.",
    )


# --- checking an event --------------------------------------------------------------------


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
                violations.append(_unplanned_keys(object_name, undeclared, event_label(message), message))
    skip_extra_at = (rule.object_name,) if rule is not None else None
    for schema in schemas:
        violations.extend(_schema_violations(schema, message, skip_extra_at))
    return violations, rule, unplanned


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
            verdict.outcomes.append((violation, "refused", _sentence(plan, violation, "refused", "block")))
        return _trimmed(verdict)
    if mode == "allow":
        for violation in violations:
            verdict.outcomes.append((violation, "sent", _sentence(plan, violation, "sent", "allow")))
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
                violations.append(_unplanned_keys(object_name, extra, event_label(message), message))
    for violation in violations:
        for object_name, key in _removable_keys(violation):
            removals.setdefault(object_name, set()).add(key)
    trimmed = dict(message)
    for object_name, keys in removals.items():
        trimmed[object_name] = {k: v for k, v in message[object_name].items() if k not in keys}
    for violation in violations:
        decision: Decision = "removed" if _removable_keys(violation) else "sent"
        verdict.outcomes.append((violation, decision, _sentence(plan, violation, decision, "omit")))
    remaining, _, _ = find_violations(plan, trimmed)
    for violation in remaining:
        if violation.rule in {"unplanned_event", "unplanned_property", "unplanned_trait"}:
            continue  # already reported above
        if any(violation.text == earlier.text for earlier, _, _ in verdict.outcomes):
            continue
        verdict.outcomes.append((violation, "sent", _sentence(plan, violation, "sent", "omit")))
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


def _sentence(plan: CompiledPlan, violation: Violation, decision: Decision, mode: str) -> str:
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


def _subject(path: tuple[str | int, ...], message: Mapping[str, Any]) -> str:
    if not path:
        return "The event"
    head = path[0]
    owner = f" of {message.get('event')!r}" if message.get("type") == "track" and head == "properties" else ""
    if head in OBJECT_NOUNS and isinstance(head, str):
        if len(path) == 1:
            return f"The {head}{owner}"
        return f"{OBJECT_NOUNS[head]} {dotted_path(path[1:])!r}{owner}"
    return f"Field {dotted_path(path)!r}"


def _unplanned_keys(object_name: str, keys: tuple[str, ...], event: str, message: Mapping[str, Any]) -> Violation:
    noun = OBJECT_NOUNS[object_name]
    plural = {"Property": "Properties", "Trait": "Traits"}[noun] if len(keys) > 1 else noun
    listed = ", ".join(repr(key) for key in keys)
    owner = f" of {event!r}" if message.get("type") == "track" else ""
    verb = "are" if len(keys) > 1 else "is"
    rule = "unplanned_property" if object_name == "properties" else "unplanned_trait"
    return Violation(rule, (object_name,), f"{plural} {listed}{owner}", f"{verb} not in the tracking plan", keys=keys)


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
                        _subject(full, message),
                        "is required by the tracking plan and is missing",
                    )
                )
            continue
        removable = None
        if len(path) >= 2 and path[0] in {"properties", "traits"} and isinstance(path[1], str):
            removable = (str(path[0]), path[1])
        violations.append(
            Violation(f"plan_{_rule_name(keyword)}", path, _subject(path, message), _problem(error), removable)
        )
    # jsonschema repeats a `required` error per schema branch; keep each sentence once.
    unique: dict[str, Violation] = {}
    for violation in violations:
        unique.setdefault(violation.text, violation)
    return list(unique.values())


def _rule_name(keyword: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", keyword).lower()  # minLength -> min_length


_TYPE_WORDS = {
    "string": "text",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true or false",
    "object": "an object",
    "array": "a list",
    "null": "null",
}


def _problem(error: Any) -> str:
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
