"""The checks reduced to a compiled message's slots (execution/slot_checks.py) against the walks.

Once a block's message has passed privacy screening, cleaning and the tracking plan untouched,
the executor checks later messages of that block by their slot values alone. That may only
ever skip the walks when the walks would have found nothing: the differential test runs blocks
through one executor, which learns, and runs each call again through a fresh executor, which
walks, and compares what a bot builder sees (status, payload, every log line). The rest pin
down that the shortcut is really taken, and that a changed policy or plan file, a value that
chooses the plan's rule, and a plan outside the fast subset all send the message to the walks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from quickbot_segment_plugin.block import SegmentBlock
from quickbot_segment_plugin.execution.executor import Executor

CARD = "4111 1111 1111 1111"
PHONE = "+33 6 12 34 56 78"
EVENT = "Lead Qualified"
FAST_PLAN_PROPERTIES = {
    "plan": {"type": "string", "enum": ["free", "premium"]},
    "score": {"type": "number", "minimum": 0},
    "step": {"type": "integer"},
    "email": {"type": "string", "format": "email"},
    "city": {"type": "string", "maxLength": 10},
    "answered": {"type": "string", "format": "date-time"},
    "flag": {"type": "boolean"},
}


def plan_document(properties: dict[str, Any], event_name: str = EVENT, **extra: Any) -> dict[str, Any]:
    """A plan in Segment's Config API form: one event, and a common schema on the context."""
    return {
        "display_name": "Test plan",
        "rules": {
            "events": [
                {
                    "name": event_name,
                    "version": 1,
                    "rules": {
                        "type": "object",
                        "properties": {
                            "properties": {
                                "type": "object",
                                "properties": properties,
                                "additionalProperties": {"type": ["string", "number", "boolean"]},
                                **extra,
                            }
                        },
                    },
                },
                {"name": "Other Event", "version": 1, "rules": {"type": "object"}},
            ],
            "global": {
                "type": "object",
                "properties": {
                    "userId": {"type": "string", "maxLength": 12},
                    "context": {
                        "type": "object",
                        "properties": {
                            "traits": {"type": "object", "additionalProperties": {"maxLength": 8}},
                            "quickbot": {
                                "type": "object",
                                "properties": {"botId": {"maxLength": 6}},
                                "required": ["botId"],
                            },
                        },
                    },
                },
            },
        },
    }


# workspace -> (tracking plan or None, privacy policy or None)
WORKSPACES: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]] = {
    "ws-fast-plan": (plan_document(FAST_PLAN_PROPERTIES), None),
    # `anyOf` is outside fast_schema's subset: jsonschema alone decides, so nothing can be learned.
    "ws-slow-plan": (plan_document({"plan": {"anyOf": [{"enum": ["free"]}, {"enum": ["premium"]}]}}), None),
    "ws-no-plan": (None, None),
    "ws-strict-privacy": (
        None,
        {"deny_keys": ["step"], "detectors": {"card": "refuse", "phone": "drop", "iban": "mask"}},
    ),
}


@pytest.fixture
def workspaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    plans, policies = tmp_path / "plans", tmp_path / "privacy"
    plans.mkdir()
    policies.mkdir()
    for workspace, (plan, policy) in WORKSPACES.items():
        if plan is not None:
            (plans / f"{workspace}.json").write_text(json.dumps(plan))
        if policy is not None:
            (policies / f"{workspace}.privacy.json").write_text(json.dumps(policy))
    monkeypatch.setenv("QUICKBOT_SEGMENT_TRACKING_PLAN_DIR", str(plans))
    monkeypatch.setenv("QUICKBOT_SEGMENT_PRIVACY_DIR", str(policies))
    yield


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many executions ran the checks' walks (the executor's `_checked`, which still runs)."""
    calls: list[int] = []
    walk = Executor._checked

    def counted(self: Executor, *args: Any, **kwargs: Any) -> Any:
        calls.append(id(self))
        return walk(self, *args, **kwargs)

    monkeypatch.setattr(Executor, "_checked", counted)
    return calls


def run(block: SegmentBlock, options: dict[str, Any], workspace: str, variables: dict[str, Any]) -> dict[str, Any]:
    """A dry run, as the editor's Test run makes one, with the send time left out of the payload.

    The host's bot id is taken from the variable "Bot" (none when it is not set); its session id
    is always there, so a missing bot id leaves `context.quickbot` without `botId`.
    """
    context = {
        "workspace_id": workspace,
        "variables": variables,
        "execution_id": "e-1",
        "bot_id": variables.get("Bot"),
        "session_id": "s-1",
    }
    result = block.execute(options, {**context, "dry_run": True})
    if "payload" in result:
        result["payload"] = {key: value for key, value in result["payload"].items() if key != "timestamp"}
    return result


NAMES = ["User ID", "Plan", "Score", "Step", "Email", "City", "When", "Event", "Flag"]
# Each key, and the variable a real block would put there (its values pass the fast plan).
KEYS = {
    "plan": "Plan",
    "score": "Score",
    "step": "Step",
    "email": "Email",
    "city": "City",
    "answered": "When",
    "revenue": "Score",
    "currency": "City",
    "address.city": "City",
    "other": "City",
    "flag": "Flag",
}
STATIC_VALUES = ["premium", "web", "8", "-1", "2026-01-31T12:00:00Z", "EUR", " padded ", "tour-de-france"]


@st.composite
def item(draw: st.DrawFn) -> dict[str, Any]:
    key = draw(st.sampled_from(sorted(KEYS)))
    value = draw(
        st.one_of(
            st.just(f"{{{{{KEYS[key]}}}}}"),
            st.just(f"{{{{{KEYS[key]}}}}}"),
            st.sampled_from(NAMES).map(lambda name: f"{{{{{name}}}}}"),
            st.sampled_from(STATIC_VALUES),
        )
    )
    typed = draw(st.sampled_from([None, None, None, "string", "number", "boolean", "datetime"]))
    return {"key": key, "value": value, **({"type": typed} if typed else {})}


items = st.lists(item(), max_size=5, unique_by=lambda item: item["key"])
traits = st.lists(
    st.fixed_dictionaries({"key": st.sampled_from(["traits.name", "traits.city", "protocols.event_version"])}).map(
        lambda item: {**item, "value": "{{City}}" if item["key"] != "protocols.event_version" else "{{Step}}"}
    ),
    max_size=2,
    unique_by=lambda item: item["key"],
)


@st.composite
def options_strategy(draw: st.DrawFn) -> dict[str, Any]:
    action = draw(st.sampled_from(["track", "track", "identify", "page"]))
    options: dict[str, Any] = {"action": action, "userId": draw(st.sampled_from(["{{User ID}}", "user-1"]))}
    if action == "track":
        options["event"] = draw(st.sampled_from([EVENT, EVENT, "{{Event}}"]))
        options["properties"] = draw(items)
    elif action == "identify":
        options["email"] = draw(st.sampled_from(["{{Email}}", "ann@example.com"]))
        options["traits"] = draw(items)
    else:
        options["name"] = "Pricing"
        options["category"] = draw(st.sampled_from(["", "{{City}}", "Docs"]))
        options["properties"] = draw(items)
    options["context"] = draw(traits)
    return options


CLEAN_VALUES = {
    "User ID": st.sampled_from(["user-1042", "u-7", "anon-3"]),
    "Plan": st.sampled_from(["premium", "free"]),
    "Score": st.sampled_from([8, 3.5, 0, "12"]),
    "Step": st.sampled_from([1, 3, "2"]),
    "Email": st.sampled_from(["ann@example.com", "bo@example.org"]),
    "City": st.sampled_from(["Lyon", "Paris", "EUR"]),
    "When": st.sampled_from(["2026-01-31T12:00:00Z", "2026-02-01T08:30:00+01:00"]),
    "Event": st.sampled_from([EVENT, EVENT, "Other Event"]),
    "Bot": st.sampled_from(["bot-1", "bot-2", "", None]),
    "Flag": st.sampled_from([True, False]),
}
# Each a value some check has something to say about, somewhere: a detector, cleaning, the plan.
awkward_values = st.one_of(
    st.sampled_from([CARD, PHONE, f"call {PHONE}", "ann@EXAMPLE.com", " padded", "", "  ", "gold", "eur"]),
    st.sampled_from(["Saint-Étienne-du-Rouvray", "not a date", "4111111111111111", "Unplanned Event", "bot-123456"]),
    st.sampled_from([4111111111111111, -3, 10**12, True, 1, 0, 2.5, "12345678901", "1", "2"]),
    st.integers(min_value=-(10**9), max_value=10**9),
    st.text(max_size=10),
)
clean_variables = st.fixed_dictionaries(CLEAN_VALUES)
# A later conversation: the first one with a few values changed, so that most of them differ
# in a slot or two, as conversations through one block do.
changes = st.lists(
    st.sampled_from(sorted(CLEAN_VALUES)).flatmap(
        lambda name: st.tuples(st.just(name), st.one_of(CLEAN_VALUES[name], awkward_values))
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    options=options_strategy(),
    workspace=st.sampled_from(sorted(WORKSPACES)),
    first=clean_variables,
    later=st.lists(changes, min_size=1, max_size=4),
)
def test_a_learned_block_says_what_the_walks_say(
    workspaces: None,
    walks: list[int],
    options: dict[str, Any],
    workspace: str,
    first: dict[str, Any],
    later: list[list[tuple[str, Any]]],
) -> None:
    learning = SegmentBlock()
    walks.clear()
    for variables in (first, *({**first, **dict(changed)} for changed in later)):
        expected = run(SegmentBlock(), options, workspace, variables)  # a fresh block walks
        assert run(learning, options, workspace, variables) == expected
    # Both reach the walks on the same conditions, except where the learning block took the shortcut.
    learned_walks = walks.count(id(learning.executor()))
    shortcuts = len(walks) - 2 * learned_walks
    assert shortcuts >= 0
    event(f"shortcuts taken: {min(shortcuts, 2)}{'+' if shortcuts > 2 else ''}")


HEAVY = {
    "action": "track",
    "event": EVENT,
    "userId": "{{User ID}}",
    "properties": [
        {"key": "plan", "value": "{{Plan}}"},
        {"key": "score", "value": "{{Score}}", "type": "number"},
        {"key": "source", "value": "chatbot"},
        {"key": "answered", "value": "2026-01-31T12:00:00Z"},
        {"key": "city", "value": "{{City}}"},
        {"key": "flag", "value": "{{Flag}}"},
    ],
    "context": [{"key": "traits.name", "value": "{{City}}"}],
}
CLEAN = {"User ID": "user-1042", "Plan": "premium", "Score": 8, "City": "Lyon", "Bot": "bot-1", "Flag": True}


@pytest.mark.parametrize("workspace", sorted(WORKSPACES))
def test_every_workspace_of_these_tests_sends_a_clean_block(workspaces: None, workspace: str) -> None:
    result = run(SegmentBlock(), HEAVY, workspace, CLEAN)
    assert result["status"] == "dry_run" and len(result["logs"]) == 1, result["logs"]


def test_a_clean_block_is_walked_once_then_checked_by_its_slots(workspaces: None, walks: list[int]) -> None:
    block = SegmentBlock()
    first = run(block, HEAVY, "ws-fast-plan", CLEAN)
    assert len(walks) == 1
    for user in ("user-1", "user-2", "user-3"):
        result = run(block, HEAVY, "ws-fast-plan", {**CLEAN, "User ID": user})
        assert result["payload"]["userId"] == user
        assert result["logs"] == first["logs"]  # the dry run's one line
    assert len(walks) == 1


@pytest.mark.parametrize(
    ("workspace", "changed", "log_part"),
    [
        ("ws-fast-plan", {"Plan": "gold"}, "tracking plan"),  # the plan's enum
        ("ws-fast-plan", {"City": "Saint-Étienne"}, "tracking plan"),  # maxLength, in properties and context
        ("ws-fast-plan", {"User ID": "a-very-long-user-id"}, "tracking plan"),  # the common schema, top level
        ("ws-fast-plan", {"Score": -3}, "tracking plan"),
        ("ws-fast-plan", {"Flag": 1}, "tracking plan"),  # 1 is not true, though a dict cannot tell them apart
        ("ws-fast-plan", {"Bot": "bot-123456"}, "tracking plan"),  # a host id the plan limits
        ("ws-fast-plan", {"Bot": ""}, "required"),  # and requires: an empty id leaves it out
        ("ws-fast-plan", {"Bot": None}, "required"),
        ("ws-no-plan", {"City": CARD}, "payment card"),  # a detector
        ("ws-no-plan", {"Score": 4111111111111111}, "payment card"),  # a number scanned as text
        ("ws-strict-privacy", {"City": PHONE}, "phone number"),
        ("ws-no-plan", {"City": " Lyon "}, "spaces"),  # cleaning
    ],
)
def test_a_slot_value_a_check_objects_to_is_walked_and_explained(
    workspaces: None, walks: list[int], workspace: str, changed: dict[str, Any], log_part: str
) -> None:
    block = SegmentBlock()
    run(block, HEAVY, workspace, CLEAN)  # walked, and learned from
    run(block, HEAVY, workspace, CLEAN)  # checked by its slots, whose answers are remembered
    result = run(block, HEAVY, workspace, {**CLEAN, **changed})
    assert len(walks) == 2
    assert any(log_part in entry["message"] for entry in result["logs"]), result["logs"]
    assert result == run(SegmentBlock(), HEAVY, workspace, {**CLEAN, **changed})


@pytest.mark.parametrize(
    ("options", "learned_from", "changed", "log_part"),
    [
        # A value only in the context, which privacy scans below `traits`.
        (
            {
                "action": "track",
                "event": EVENT,
                "userId": "u-1",
                "context": [{"key": "traits.name", "value": "{{City}}"}],
            },
            {"City": "Lyon"},
            {"City": CARD},
            "payment card",
        ),
        # A page's category, left out while empty, then sent in `properties` too, where privacy scans it.
        (
            {"action": "page", "name": "Pricing", "userId": "u-1", "category": "{{City}}"},
            {"City": ""},
            {"City": CARD},
            "payment card",
        ),
        # Consent that adds `context.consent` is stamped by screening.
        ({**HEAVY, "consent": "{{Consent}}"}, {"Consent": "yes"}, {"Consent": {"Analytics": True}}, None),
    ],
)
def test_what_the_first_message_lacked_is_still_checked(
    workspaces: None,
    options: dict[str, Any],
    learned_from: dict[str, Any],
    changed: dict[str, Any],
    log_part: str | None,
) -> None:
    block = SegmentBlock()
    first = run(block, options, "ws-no-plan", {**CLEAN, **learned_from})
    assert first["status"] == "dry_run" and len(first["logs"]) == 1, first["logs"]
    result = run(block, options, "ws-no-plan", {**CLEAN, **changed})
    assert result == run(SegmentBlock(), options, "ws-no-plan", {**CLEAN, **changed})
    if log_part is not None:
        assert any(log_part in entry["message"] for entry in result["logs"]), result["logs"]
    else:
        assert result["payload"]["context"]["consent"] == {"categoryPreferences": {"Analytics": True}}


def test_a_dynamic_event_name_is_checked_against_its_own_rule(workspaces: None, walks: list[int]) -> None:
    options = {**HEAVY, "event": "{{Event}}"}
    block = SegmentBlock()
    run(block, options, "ws-fast-plan", {**CLEAN, "Event": EVENT})
    unplanned = run(block, options, "ws-fast-plan", {**CLEAN, "Event": "Unplanned Event"})
    assert any("not in the tracking plan" in entry["message"] for entry in unplanned["logs"])
    assert len(walks) == 2


def test_an_edited_policy_or_plan_file_is_walked_again(
    workspaces: None, walks: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = SegmentBlock()
    run(block, HEAVY, "ws-fast-plan", CLEAN)
    run(block, HEAVY, "ws-fast-plan", CLEAN)
    assert len(walks) == 1
    (tmp_path / "privacy" / "ws-fast-plan.privacy.json").write_text(json.dumps({"deny_keys": ["city"]}))
    result = run(block, HEAVY, "ws-fast-plan", CLEAN)
    assert "city" not in result["payload"]["properties"]
    assert len(walks) == 2
    document = plan_document({**FAST_PLAN_PROPERTIES, "score": {"type": "number", "minimum": 10}})
    (tmp_path / "plans" / "ws-fast-plan.json").write_text(json.dumps(document))
    result = run(block, HEAVY, "ws-fast-plan", CLEAN)
    assert any("tracking plan" in entry["message"] for entry in result["logs"])
    assert len(walks) == 3


def test_a_plan_outside_the_fast_subset_is_always_walked(workspaces: None, walks: list[int]) -> None:
    block = SegmentBlock()
    for _ in range(3):
        run(block, HEAVY, "ws-slow-plan", CLEAN)
    assert len(walks) == 3
