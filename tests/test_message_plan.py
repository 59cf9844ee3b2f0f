"""The compiled message (execution/message_plan.py) against the general path it stands in for.

`MessagePlan.build` may only ever give the message `render_parts` + `build_message` give, with
nothing logged; everywhere else it must step aside (None) so the general path can explain.
The differential test generates options and variables over every action, kind of template,
item type and awkward value, and compares the two paths' JSON text byte for byte; the rest
pin down that the fast path is really taken where it should be, and that what it queues is
in the library's final form.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from quickbot_segment_plugin.core import ResultLog, build_message
from quickbot_segment_plugin.delivery.final import final_message, vouched_message
from quickbot_segment_plugin.execution.message_plan import MessagePlan, compile_message
from quickbot_segment_plugin.execution.plan import BlockPlan, RenderFailure, compile_plan, render_parts
from quickbot_segment_plugin.execution.validation import check_options
from quickbot_segment_plugin.options import REQUIRED_FIELDS, templated_fields
from quickbot_segment_plugin.options.models import MODELS_BY_ACTION
from quickbot_segment_plugin.templating import default_engine

MESSAGE_ID = "0b6f7c1e-3f1a-4b7e-9d2a-5c8e1f0a2b3c"
HOST = {"workspace_id": "ws", "bot_id": "bot-1", "session_id": "s-9", "block_id": ""}
NAMES = ["User ID", "Plan", "Score", "Email", "Flag", "City", "Blank"]


def plan_of(options: dict[str, Any]) -> BlockPlan | None:
    checked = check_options(options, default_engine())
    if checked.options is None:
        return None
    return compile_plan(checked.options, default_engine())


def general(plan: BlockPlan, variables: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    log = ResultLog()
    try:
        message = build_message(render_parts(plan, variables, MESSAGE_ID, log), HOST)
    except RenderFailure:
        return None, log.entries
    return message, log.entries


def text_without_time(message: dict[str, Any]) -> str:
    """The JSON text, key order included; the send time is the one part the two calls differ in."""
    return json.dumps({name: value for name, value in message.items() if name != "timestamp"})


# Weighted towards what the compiled message answers for (plain text, one variable, `{{Name}}`
# text), so most examples compare two messages rather than watch the fast path step aside.
templates = st.one_of(
    st.sampled_from(NAMES).map(lambda name: f"{{{{{name}}}}}"),
    st.sampled_from(
        ["Lead Qualified", "  padded  ", "", "   ", "none", "8", "true", "2026-01-02T03:04:05Z", '{"a": 1}']
    ),
    st.sampled_from(NAMES).map(lambda name: f"Hi {{{{{name}}}}}!"),
    st.sampled_from(NAMES).map(lambda name: f"{{{{{name}}}}}-{{{{Plan}}}}"),
    st.sampled_from(NAMES).map(lambda name: f"{{{{ {name} | upper }}}}"),
)
values = st.one_of(
    st.sampled_from(["user-1042", "Zoë", "8", "4.5", "yes", "n", "none", "null", "2026-01-02", "a@b.co", "", "  "]),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), max_size=2),
)
plain_values = st.one_of(
    st.sampled_from(["user-1042", "Zoë", "8", "4.5", "yes", "n", "none", "2026-01-02", "a@b.co"]),
    st.sampled_from(["", "   ", " padded ", "Zoë\t", "\n8 "]),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(min_size=1, max_size=8),
)
# Half the time every variable is set to plain text, a number or a yes/no: the compiled message's
# ground; the other half anything at all, unset included.
variables_strategy = st.one_of(
    st.fixed_dictionaries(dict.fromkeys(NAMES, plain_values)),
    st.fixed_dictionaries({}, optional=dict.fromkeys(NAMES, values)),
)
plain_templates = st.one_of(
    st.sampled_from(NAMES).map(lambda name: f"{{{{{name}}}}}"),
    st.sampled_from(["Lead Qualified", "8", "true", "n", "2026-01-02T03:04:05Z"]),
    st.sampled_from(NAMES).map(lambda name: f"Hi {{{{{name}}}}}!"),
)
KEYS = ["plan", "score", "a", "a.b", "address.city", "address.zip", "email", "category"]
TYPES = ["string", "number", "boolean", "datetime", "json"]


def item_lists(values: st.SearchStrategy[str]) -> st.SearchStrategy[list[dict[str, Any]]]:
    item = st.fixed_dictionaries(
        {"key": st.sampled_from(KEYS)}, optional={"value": values, "type": st.sampled_from(TYPES)}
    )
    return st.lists(item, max_size=5, unique_by=lambda item: item["key"])


items = item_lists(templates)
plain_items = item_lists(plain_templates)


@st.composite
def options_strategy(draw: st.DrawFn) -> dict[str, Any]:
    action = draw(st.sampled_from(sorted(REQUIRED_FIELDS)))
    model = MODELS_BY_ACTION[action]
    plain = draw(st.booleans())  # only templates the compiled message covers
    options: dict[str, Any] = {"action": action}
    for name in templated_fields(model):
        if name not in ("condition", "consent", "timestamp") and draw(st.booleans()):
            options[name] = draw(plain_templates if plain else templates)
    for name in (*REQUIRED_FIELDS[action], "userId"):
        options.setdefault(name, draw(plain_templates if plain else templates))
    for list_name in ("traits", "properties", "context"):
        if list_name in model.model_fields and draw(st.booleans()):
            options[list_name] = [{"value": "x", **item} for item in draw(plain_items if plain else items)]
    if draw(st.booleans()):
        options["integrations"] = draw(st.dictionaries(st.sampled_from(["All", "Mixpanel"]), st.booleans(), max_size=2))
    return options


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(options=options_strategy(), variables=variables_strategy)
def test_the_compiled_message_is_the_general_paths_message_whenever_it_answers(
    options: dict[str, Any], variables: dict[str, Any]
) -> None:
    plan = plan_of(options)
    if plan is None:
        event("refused by validation")
        return  # options that validation refuses never reach either path
    compiled = compile_message(plan)
    if compiled is None:
        event("no compiled message")
        return
    fast = compiled.build(variables, MESSAGE_ID, HOST)
    message, logs = general(plan, variables)
    event("compiled message" if fast is not None else "general path")
    if fast is None:
        return  # the general path runs, and says whatever there is to say
    assert logs == [], "the compiled message answered where the general path had something to tell"
    assert message is not None
    assert text_without_time(fast) == text_without_time(message)
    assert list(fast) == list(message)  # the send time sits where the general path puts it too


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(options=options_strategy(), variables=variables_strategy)
def test_every_compiled_message_is_in_the_librarys_final_form(
    options: dict[str, Any], variables: dict[str, Any]
) -> None:
    """The pool queues compiled messages without proving their form: the proof must hold for each."""
    plan = plan_of(options)
    compiled = compile_message(plan) if plan is not None else None
    fast = compiled.build(variables, MESSAGE_ID, HOST) if compiled is not None else None
    if fast is None:
        return
    proved = final_message(fast)
    assert proved is not None, f"not in final form: {fast}"
    vouched = vouched_message(fast)
    assert vouched.message == proved.message and vouched.size >= proved.size == len(json.dumps(fast))
    assert vouched.message is not fast and vouched.message == json.loads(vouched.text)


TRACK = {
    "action": "track",
    "event": "Lead Qualified",
    "userId": "{{User ID}}",
    "properties": [
        {"key": "plan", "value": "{{Plan}}"},
        {"key": "score", "value": "{{Score}}", "type": "number"},
        {"key": "source", "value": "chatbot"},
        {"key": "address.city", "value": "Lyon {{City}}"},
        {"key": "extra", "value": "{{Extra}}", "type": "json"},
    ],
    "context": [{"key": "campaign.name", "value": "spring"}],
    "integrations": {"All": True},
}
TRACK_VARIABLES = {"User ID": "user-1042", "Plan": "premium", "Score": "8", "City": "centre", "Extra": "42"}


def compiled(options: dict[str, Any]) -> MessagePlan:
    plan = plan_of(options)
    assert plan is not None
    message_plan = compile_message(plan)
    assert message_plan is not None, "these options should compile to a message"
    return message_plan


@pytest.mark.parametrize(
    ("options", "variables"),
    [
        (TRACK, TRACK_VARIABLES),
        ({"action": "identify", "userId": "{{User ID}}", "email": "{{Email}}"}, {"User ID": "u", "Email": "a@b.co"}),
        ({"action": "page", "name": "Pricing", "category": "{{Plan}}", "anonymousId": "a"}, {"Plan": "docs"}),
        ({"action": "alias", "userId": "{{User ID}}", "previousId": "anon-1"}, {"User ID": "u"}),
        ({"action": "group", "groupId": "acme", "userId": "u", "traits": [{"key": "seats", "value": "5"}]}, {}),
    ],
)
def test_typical_blocks_take_the_compiled_path(options: dict[str, Any], variables: dict[str, Any]) -> None:
    fast = compiled(options).build(variables, MESSAGE_ID, HOST)
    plan = plan_of(options)
    assert plan is not None
    message, logs = general(plan, variables)
    assert fast is not None and message is not None and logs == []
    assert text_without_time(fast) == text_without_time(message)


@pytest.mark.parametrize(
    ("variables", "why"),
    [
        ({**TRACK_VARIABLES, "User ID": None}, "an unset user id is worth a warning"),
        ({**TRACK_VARIABLES, "Score": "eight"}, "a number item that does not convert is an error"),
        ({**TRACK_VARIABLES, "Plan": "   "}, "an empty item is dropped with a warning"),
        ({**TRACK_VARIABLES, "City": 7}, "a number inside text needs the sandbox's conversion"),
        ({**TRACK_VARIABLES, "Plan": {"tier": "gold"}}, "an object value needs the work budget"),
        ({**TRACK_VARIABLES, "Plan": float("nan")}, "orjson would send NaN as null"),
        ({**TRACK_VARIABLES, "Plan": float("-inf")}, "orjson would send -Infinity as null"),
        ({**TRACK_VARIABLES, "Extra": "[1, NaN]"}, "a json item's NaN: orjson would send null"),
        ({**TRACK_VARIABLES, "Extra": '{"tier": "gold"}'}, "a json item's object takes the general path"),
    ],
)
def test_anything_worth_saying_goes_to_the_general_path(variables: dict[str, Any], why: str) -> None:
    assert compiled(TRACK).build(variables, MESSAGE_ID, HOST) is None, why


@pytest.mark.parametrize(
    "options",
    [
        {**TRACK, "timestamp": "{{When}}"},
        {**TRACK, "event": "{{ Event | upper }}"},
        {**TRACK, "properties": [{"key": "a", "value": "1"}, {"key": "a.b", "value": "2"}]},
        {**TRACK, "properties": [{"key": "a", "value": "   "}]},
        {**TRACK, "properties": [{"key": "a", "value": '{"nested": true}', "type": "json"}]},
    ],
)
def test_options_the_compiled_message_does_not_cover_have_none(options: dict[str, Any]) -> None:
    plan = plan_of(options)
    assert plan is not None
    assert compile_message(plan) is None


def test_static_parts_are_not_shared_between_messages() -> None:
    """A host may edit the payload it got back; the next conversation's message must not see it."""
    message_plan = compiled(TRACK)
    first = message_plan.build(TRACK_VARIABLES, MESSAGE_ID, HOST)
    assert first is not None
    first["properties"]["address"]["city"] = "edited"
    first["context"]["campaign"]["name"] = "edited"
    first["integrations"]["All"] = False
    second = message_plan.build(TRACK_VARIABLES, MESSAGE_ID, HOST)
    assert second is not None
    assert second["properties"]["address"] == {"city": "Lyon centre"}
    assert second["context"]["campaign"] == {"name": "spring"}
    assert second["integrations"] == {"All": True}


def test_options_edited_in_place_are_compiled_again() -> None:
    """A host may keep one options object and edit it: the plan found by identity must follow."""
    from quickbot_segment_plugin.block import SegmentBlock

    block = SegmentBlock()
    options: dict[str, Any] = {"action": "track", "event": "First", "userId": "u", "properties": []}
    context = {"workspace_id": "ws", "variables": {}, "dry_run": True}
    for _ in range(3):  # seen twice in a row: now found by identity
        assert block.execute(options, context)["payload"]["event"] == "First"
    options["event"] = "Second"
    assert block.execute(options, context)["payload"]["event"] == "Second"
    options["properties"].append({"key": "plan", "value": "{{Plan}}"})
    assert block.execute(options, {**context, "variables": {"Plan": "pro"}})["payload"]["properties"] == {"plan": "pro"}
    options["event"] = ""
    result = block.execute(options, context)
    assert result["status"] == "failed" and result["logs"][0]["details"]["field"] == "event"
    options["event"] = "Third"
    options["properties"][0]["value"] = 7  # not text: validation refuses it, whatever was remembered
    assert block.execute(options, context)["status"] == "failed"
    options["properties"][0]["value"] = "{{Plan}}"
    options["integrations"] = {"All": True}
    for _ in range(3):
        assert block.execute(options, context)["status"] == "dry_run"
    options["integrations"]["All"] = 1  # equal to True in Python, refused by validation
    result = block.execute(options, context)
    assert result["status"] == "failed" and "not a number" in result["logs"][0]["message"]
