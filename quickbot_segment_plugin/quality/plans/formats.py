"""The plan documents the block reads: Segment's two shapes of a tracking plan, and the block's own settings.

Accepted shapes, all loaded unchanged: the Config API plan (`{"display_name", "rules":
{"global", "events": [{"name", "version", "rules"}], "identify", "group", "identify_traits",
"group_traits"}}`, optionally wrapped as `{"tracking_plan": ...}`), and the Public API's list
of rules (`{"name", "rules": [{"type": "TRACK" | "IDENTIFY" | "GROUP" | "COMMON", "key",
"version", "jsonSchema"}]}`, or `{"data": {"rules": [...]}}`). Schemas are draft-07 (draft-04
and later drafts work too; `$schema` decides). The only addition Segment does not know is an
optional top-level `"quickbot": {"mode", "unplanned_events", "property_case"}` object.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from .compiled import MODES, CallRule, CompiledPlan, Mode
from .errors import TrackingPlanError
from .schema_checks import Schema, schema_check

__all__ = ["PROPERTY_CASES", "compile_plan"]

logger = logging.getLogger("quickbot_segment_plugin.tracking_plans")

PROPERTY_CASES: Final = ("snake_case", "camelCase", "any")


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
        common=schema_check(common_schema, f"{source}: common schema") if common_schema is not None else None,
        common_declared={obj: _declared_keys(common_schema, obj)[0] or frozenset() for obj in ("properties", "traits")}
        if common_schema is not None
        else {"properties": frozenset(), "traits": frozenset()},
    )


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
    return CallRule(key, version, schema_check(schema, where), object_name, declared, patterns)


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
