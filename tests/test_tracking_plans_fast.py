"""The fast plan check never says "valid" where jsonschema finds a violation.

A plan's schemas are compiled twice: into jsonschema validators (the reference, which explains
violations) and into plain-Python checks for the subset Protocols plans use. Hypothesis
generates schemas from that subset, and outside it, with instances that hit their keys.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from quickbot_segment_plugin.quality.plans.errors import TrackingPlanError
from quickbot_segment_plugin.quality.plans.formats import compile_plan

KEYS = st.sampled_from(["a", "b", "score", "email", "when"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(-5, 5, allow_nan=False)
    | st.sampled_from(
        [
            "",
            "x",
            "abc",
            "12",
            "zoe@example.com",
            "not mail",
            "2026-01-31T12:00:00Z",
            "2026-02-30T12:00:00Z",
            "2026-01-31",
            "1.2.3.4",
        ]
    )
)
NUMBERS = st.integers(-3, 3) | st.floats(-3, 3, allow_nan=False)
TYPES = st.sampled_from(["string", "number", "integer", "boolean", "null", "object", "array"])

keyword = st.one_of(
    st.fixed_dictionaries({"type": TYPES | st.lists(TYPES, min_size=1, max_size=3, unique=True)}),
    st.fixed_dictionaries({"enum": st.lists(SCALARS, min_size=1, max_size=4)}),
    st.fixed_dictionaries({"const": SCALARS}),
    st.fixed_dictionaries({"pattern": st.sampled_from(["^[a-z]+$", "b", r"^\d{2}$", "@"])}),
    st.fixed_dictionaries({"minimum": NUMBERS}),
    st.fixed_dictionaries({"maximum": NUMBERS}),
    st.fixed_dictionaries({"exclusiveMinimum": NUMBERS}),
    st.fixed_dictionaries({"exclusiveMaximum": NUMBERS}),
    st.fixed_dictionaries({"minLength": st.integers(0, 4)}),
    st.fixed_dictionaries({"maxLength": st.integers(0, 4)}),
    st.fixed_dictionaries({"format": st.sampled_from(["date-time", "email", "date", "ipv4", "uri", "made-up"])}),
    st.fixed_dictionaries({"description": st.text(max_size=5)}),
    # outside the subset: must go to jsonschema, and still agree
    st.fixed_dictionaries({"multipleOf": st.sampled_from([2, 0.5])}),
    st.fixed_dictionaries({"not": st.fixed_dictionaries({"type": TYPES})}),
)
leaf = st.lists(keyword, min_size=0, max_size=3).map(lambda parts: {k: v for part in parts for k, v in part.items()})


def _composite(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("object"), "properties": st.dictionaries(KEYS, inner, max_size=3)},
            optional={
                "required": st.lists(KEYS, min_size=1, max_size=3, unique=True),
                "additionalProperties": st.booleans() | inner,
            },
        ),
        st.fixed_dictionaries(
            {"items": inner}, optional={"minItems": st.integers(0, 2), "maxItems": st.integers(0, 3)}
        ),
        st.fixed_dictionaries({"anyOf": st.lists(inner, min_size=1, max_size=2)}),
        st.fixed_dictionaries({"patternProperties": st.fixed_dictionaries({"^s": inner})}),
    )


schemas = st.recursive(leaf | st.booleans(), _composite, max_leaves=10)
instances = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4), max_leaves=12
)
DRAFTS = st.sampled_from(
    [
        "http://json-schema.org/draft-07/schema#",
        "http://json-schema.org/draft-06/schema#",
        "http://json-schema.org/draft-04/schema#",
        "https://json-schema.org/draft/2020-12/schema",
    ]
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas, instance=instances, draft=DRAFTS)
def test_fast_check_agrees_with_jsonschema(schema: Any, instance: Any, draft: str) -> None:
    root = {"$schema": draft, **schema} if isinstance(schema, dict) else schema
    try:
        plan = compile_plan({"rules": {"global": root}})
    except TrackingPlanError:
        assume(False)  # not a valid schema in this draft (a boolean schema in draft-04 ...)
        return
    check = plan.common
    assert check is not None
    valid = check.validator.is_valid(instance)
    if check.fast is None:
        return  # outside the subset: jsonschema alone decides
    fast = check.fast(instance)
    if fast:
        assert valid, "the fast check passed an instance jsonschema rejects"
    elif valid:
        # The one deliberate difference: a float with no fraction where an integer is expected.
        assert "integer" in repr(root) and ".0" in repr(instance)


@settings(max_examples=200, deadline=None)
@given(instance=instances)
def test_schemas_made_in_segments_editor_use_the_fast_path(instance: Any) -> None:
    editor_schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "context": {},
            "traits": {},
            "properties": {
                "type": "object",
                "properties": {
                    "product": {"description": "What was bought", "type": ["string"]},
                    "price": {"type": ["number", "null"], "minimum": 0},
                    "size": {"type": "string", "enum": ["S", "M", "L"]},
                    "sku": {"type": "string", "pattern": "^[A-Z]{3}-\\d+$"},
                    "bought_at": {"type": "string", "format": "date-time"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["product"],
            },
        },
        "required": ["properties"],
    }
    plan = compile_plan({"rules": {"events": [{"name": "Order Completed", "rules": editor_schema}]}})
    rule = plan.events["Order Completed"][0].schema
    assert rule.fast is not None
    event = {"type": "track", "event": "Order Completed", "properties": instance}
    assert rule.fast(event) == rule.validator.is_valid(event)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas, batch=st.lists(instances, min_size=2, max_size=6), draft=DRAFTS)
def test_a_check_used_for_many_events_keeps_agreeing_with_jsonschema(schema: Any, batch: list[Any], draft: str) -> None:
    """The checks remember answers for text values; a remembered answer must be the right one."""
    root = {"$schema": draft, **schema} if isinstance(schema, dict) else schema
    try:
        plan = compile_plan({"rules": {"global": root}})
    except TrackingPlanError:
        assume(False)
        return
    check = plan.common
    assert check is not None
    if check.fast is None:
        return
    for instance in batch + batch[::-1]:
        if check.fast(instance):
            assert check.validator.is_valid(instance), "a remembered answer passed an invalid value"


def test_remembered_answers_stay_right_past_the_bound() -> None:
    """More distinct texts than are kept: every answer is still the pattern's."""
    plan = compile_plan(
        {"rules": {"global": {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[a-z]+$"}}}}}
    )
    fast = plan.common.fast if plan.common is not None else None
    assert fast is not None
    for number in range(700):
        word = "".join(chr(ord("a") + int(digit)) for digit in str(number))
        for _ in range(2):  # the second answer is the remembered one
            assert fast({"code": word}) is True
            assert fast({"code": f"{word}{number}"}) is False, number
