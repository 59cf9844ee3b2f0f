"""The block's main job, end to end: options + variables -> execute -> the real Segment library
-> real HTTP -> the embedded collector on 127.0.0.1."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import WORKSPACE, WRITE_KEY

from quickbot_segment_plugin.block import SegmentBlock

pytestmark = pytest.mark.integration

SERVER_FIELDS = {"receivedAt", "sentAt", "originalTimestamp", "timestamp", "writeKey"}

VARIABLES: dict[str, Any] = {
    "User ID": "user-1042",
    "Session ID": "anon-7f3a",
    "First name": "Zoë",
    "Email": "zoe@example.com",
    "Plan": "premium",
    "Age": 34,
    "Interests": ["pricing", "api"],
    "City": "Lyon",
    "Score": 8,
}


def run(block: SegmentBlock, options: dict[str, Any], token: str | None, **context: Any) -> dict[str, Any]:
    full_context = {"workspace_id": WORKSPACE, "credentials": token, "variables": VARIABLES, **context}
    result = block.execute(options, full_context)
    json.dumps(result)  # everything crossing the boundary is plain JSON
    return result


def delivered(block: SegmentBlock, collector: Any, count: int) -> list[dict[str, Any]]:
    block.shutdown(10.0)
    assert collector.wait_for(count, timeout=10.0)
    return collector.messages()


def without_server_fields(message: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in message.items() if key not in SERVER_FIELDS}


def assert_arrived_as_reported(stored: dict[str, Any], result: dict[str, Any]) -> None:
    payload = result["payload"]
    assert without_server_fields(stored) == without_server_fields(payload)
    assert stored.get("originalTimestamp", stored["timestamp"]) == payload["timestamp"]


# The product documentation's "Actions Reference", one case per action, plus group and screen.
ACTION_CASES = [
    (
        {
            "action": "identify",
            "userId": "{{User ID}}",
            "email": "{{Email}}",
            "traits": [{"key": "firstName", "value": "{{First name}}"}, {"key": "plan", "value": "{{Plan}}"}],
        },
        {
            "type": "identify",
            "userId": "user-1042",
            "traits": {"firstName": "Zoë", "plan": "premium", "email": "zoe@example.com"},
        },
    ),
    (
        {"action": "alias", "userId": "{{User ID}}", "previousId": "{{Session ID}}"},
        {"type": "alias", "userId": "user-1042", "previousId": "anon-7f3a"},
    ),
    (
        {
            "action": "track",
            "event": "Order Completed",
            "userId": "{{User ID}}",
            "properties": [{"key": "plan", "value": "{{Plan}}"}, {"key": "score", "value": "{{Score}}"}],
        },
        {
            "type": "track",
            "event": "Order Completed",
            "userId": "user-1042",
            "properties": {"plan": "premium", "score": 8},
        },
    ),
    (
        {
            "action": "page",
            "name": "Pricing",
            "category": "Docs",
            "userId": "{{User ID}}",
            "properties": [{"key": "url", "value": "https://example.com/pricing"}],
        },
        {
            "type": "page",
            "name": "Pricing",
            "category": "Docs",
            "userId": "user-1042",
            "properties": {"url": "https://example.com/pricing", "category": "Docs"},
        },
    ),
    (
        {
            "action": "group",
            "groupId": "acme",
            "userId": "{{User ID}}",
            "traits": [{"key": "name", "value": "Acme"}],
        },
        {"type": "group", "groupId": "acme", "userId": "user-1042", "traits": {"name": "Acme"}},
    ),
    (
        {"action": "screen", "name": "Checkout", "category": "Shop", "anonymousId": "{{Session ID}}"},
        {"type": "screen", "name": "Checkout", "category": "Shop", "anonymousId": "anon-7f3a"},
    ),
]


@pytest.mark.parametrize(("options", "expected"), ACTION_CASES, ids=[case[0]["action"] for case in ACTION_CASES])
def test_each_action_arrives_with_the_expected_fields(
    block: SegmentBlock, token: str, local_segment: Any, options: dict[str, Any], expected: dict[str, Any]
) -> None:
    result = run(block, options, token, bot_id="bot-1", session_id="s-1", block_id="b-1")
    assert result["status"] == "queued", result["logs"]
    [stored] = delivered(block, local_segment, 1)
    for key, value in expected.items():
        assert stored[key] == value, key
    assert stored["messageId"] == result["message_id"]
    assert stored["context"]["quickbot"] == {"botId": "bot-1", "sessionId": "s-1", "blockId": "b-1"}
    assert stored["context"]["library"]["name"] == "analytics-python"
    assert_arrived_as_reported(stored, result)


def test_typebot_style_options_are_delivered_like_version_1(
    block: SegmentBlock, token: str, local_segment: Any
) -> None:
    legacy = {
        "action": "Track",
        "eventName": "Plan Viewed",
        "userId": "{{User ID}}",
        "properties": [{"id": "p1", "key": "plan", "value": "{{Plan}}"}],
        "credentialsId": "cred-1",
    }
    result = run(block, legacy, token)
    assert result["status"] == "queued"
    assert any("upgraded" in entry["message"] for entry in result["logs"])
    [stored] = delivered(block, local_segment, 1)
    assert (stored["type"], stored["event"], stored["properties"]) == (
        "track",
        "Plan Viewed",
        {"plan": "premium"},
    )


def test_typed_values_nested_keys_and_email_override(block: SegmentBlock, token: str, local_segment: Any) -> None:
    options = {
        "action": "identify",
        "userId": "{{User ID}}",
        "email": "{{Email}}",
        "traits": [
            {"key": "age", "value": "{{Age}}"},
            {"key": "interests", "value": "{{Interests}}"},
            {"key": "ageText", "value": "{{Age}} years"},
            {"key": "vip", "value": "yes", "type": "boolean"},
            {"key": "visits", "value": "12", "type": "number"},
            {"key": "prefs", "value": '{"lang": "fr"}', "type": "json"},
            {"key": "createdAt", "value": "2026-01-31T12:00:00Z", "type": "datetime"},
            {"key": "address.city", "value": "{{City}}"},
            {"key": "address.country", "value": "FR"},
            {"key": "email", "value": "ignored@example.com"},
        ],
        "context": [{"key": "locale", "value": "fr-FR"}, {"key": "page.url", "value": "https://example.com"}],
        "integrations": {"All": True, "Mixpanel": False},
    }
    result = run(block, options, token)
    assert result["status"] == "queued", result["logs"]
    [stored] = delivered(block, local_segment, 1)
    assert stored["traits"] == {
        "age": 34,
        "interests": ["pricing", "api"],
        "ageText": "34 years",
        "vip": True,
        "visits": 12,
        "prefs": {"lang": "fr"},
        "createdAt": "2026-01-31T12:00:00+00:00",
        "address": {"city": "Lyon", "country": "FR"},
        "email": "zoe@example.com",
    }
    assert stored["context"]["locale"] == "fr-FR"
    assert stored["context"]["page"] == {"url": "https://example.com"}
    assert stored["integrations"] == {"All": True, "Mixpanel": False}


def test_timestamp_template_sets_the_event_time(block: SegmentBlock, token: str, local_segment: Any) -> None:
    options = {"action": "track", "event": "Signed Up", "userId": "u", "timestamp": "{{When}}"}
    result = block.execute(
        options,
        {"workspace_id": WORKSPACE, "credentials": token, "variables": {"When": "2026-03-01T08:30:00+02:00"}},
    )
    assert result["payload"]["timestamp"] == "2026-03-01T08:30:00.000+02:00"
    [stored] = delivered(block, local_segment, 1)
    assert stored.get("originalTimestamp", stored["timestamp"]) == "2026-03-01T08:30:00.000+02:00"


@pytest.mark.parametrize("falsy", ["", "false", "0", "no", "off", "False", " NO "])
def test_a_false_condition_skips_the_block(block: SegmentBlock, token: str, local_segment: Any, falsy: str) -> None:
    options = {"action": "track", "event": "E", "userId": "u", "condition": "{{Consent}}"}
    result = block.execute(options, {"workspace_id": WORKSPACE, "credentials": token, "variables": {"Consent": falsy}})
    assert result["status"] == "skipped"
    assert result["logs"][0]["level"] == "info"
    assert "condition" in result["logs"][0]["message"]
    block.shutdown(5.0)
    assert local_segment.count() == 0


def test_an_expression_condition(block: SegmentBlock, token: str) -> None:
    options = {"action": "track", "event": "E", "userId": "u", "condition": "{{ Score > 5 }}"}
    assert run(block, options, token)["status"] == "queued"
    low = block.execute(options, {"workspace_id": WORKSPACE, "credentials": token, "variables": {"Score": 3}})
    assert low["status"] == "skipped"


def test_missing_variables_are_named(block: SegmentBlock, token: str) -> None:
    options = {
        "action": "identify",
        "userId": "{{User ID}}",
        "email": "{{Email}}",
        "traits": [{"key": "plan", "value": "{{Plan}}"}],
    }
    result = block.execute(options, {"workspace_id": WORKSPACE, "credentials": token, "variables": {"User ID": "u"}})
    assert result["status"] == "failed"
    messages = [entry["message"] for entry in result["logs"]]
    assert "Email is empty because the variable 'Email' is not set, and Email is required." in messages
    assert "The trait 'plan' is empty because the variable 'Plan' is not set; it was not sent." in messages


def test_an_empty_optional_value_is_dropped_with_a_warning(block: SegmentBlock, token: str, local_segment: Any) -> None:
    options = {
        "action": "track",
        "event": "E",
        "userId": "u",
        "properties": [{"key": "answer", "value": "{{Answer}}"}, {"key": "kept", "value": "x"}],
    }
    result = block.execute(options, {"workspace_id": WORKSPACE, "credentials": token, "variables": {"Answer": ""}})
    assert result["status"] == "queued"
    assert [entry["level"] for entry in result["logs"]] == ["warning"]
    [stored] = delivered(block, local_segment, 1)
    assert stored["properties"] == {"kept": "x"}


def test_a_missing_user_id_with_an_anonymous_id_still_sends(block: SegmentBlock, token: str) -> None:
    options = {"action": "track", "event": "E", "userId": "{{User ID}}", "anonymousId": "{{Session ID}}"}
    result = block.execute(
        options, {"workspace_id": WORKSPACE, "credentials": token, "variables": {"Session ID": "anon-1"}}
    )
    assert result["status"] == "queued"
    assert result["payload"]["anonymousId"] == "anon-1"
    assert "userId" not in result["payload"]
    assert result["logs"][0]["message"] == "User ID is empty because the variable 'User ID' is not set."


def test_no_identity_at_all_fails_naming_both(block: SegmentBlock, token: str) -> None:
    options = {"action": "track", "event": "E", "userId": "{{User ID}}"}
    result = block.execute(options, {"workspace_id": WORKSPACE, "credentials": token, "variables": {}})
    assert result["status"] == "failed"
    assert result["logs"][-1]["message"] == (
        "User ID is empty because the variable 'User ID' is not set; Anonymous ID is empty; "
        "Segment needs a User ID or an Anonymous ID."
    )


def test_a_type_that_does_not_convert_fails_naming_the_item(block: SegmentBlock, token: str) -> None:
    options = {
        "action": "track",
        "event": "E",
        "userId": "u",
        "properties": [{"key": "n", "value": "{{Plan}}", "type": "number"}],
    }
    result = run(block, options, token)
    assert result["status"] == "failed"
    assert result["logs"][-1]["message"] == "The property 'n' must be a number: 'premium' is not a number."
    assert result["logs"][-1]["details"]["field"] == "properties/0/value"


def test_dry_run_returns_the_payload_and_sends_nothing(block: SegmentBlock, local_segment: Any) -> None:
    options = {"action": "track", "event": "E", "userId": "{{User ID}}"}
    result = block.execute(options, {"workspace_id": WORKSPACE, "variables": VARIABLES, "dry_run": True})
    assert result["status"] == "dry_run"
    assert result["payload"]["userId"] == "user-1042"
    assert result["payload"]["messageId"] == result["message_id"]
    block.shutdown(5.0)
    assert local_segment.count() == 0


def test_same_execution_id_is_sent_once_with_a_stable_message_id(
    block: SegmentBlock, token: str, local_segment: Any
) -> None:
    options = {"action": "track", "event": "E", "userId": "u"}
    first = run(block, options, token, execution_id="exec-1")
    second = run(block, options, token, execution_id="exec-1")
    other = run(block, options, token, execution_id="exec-2")
    assert first["status"] == second["status"] == other["status"] == "queued"
    assert first["message_id"] == second["message_id"] != other["message_id"]
    assert second["logs"][0]["details"]["duplicate"] is True
    assert first["message_id"] == str(
        uuid.uuid5(uuid.UUID("6f1d2c3e-8a47-5b0e-9c1a-2f7e4d9b0a61"), f"{WORKSPACE}\x1fexec-1")
    )
    assert len(first["message_id"]) <= 100
    stored = delivered(block, local_segment, 2)
    assert sorted(message["messageId"] for message in stored) == sorted([first["message_id"], other["message_id"]])


def test_a_message_over_32_kb_fails_naming_the_largest_field(block: SegmentBlock, token: str) -> None:
    options = {
        "action": "track",
        "event": "E",
        "userId": "u",
        "properties": [{"key": "transcript", "value": "{{Transcript}}"}, {"key": "small", "value": "x"}],
    }
    result = block.execute(
        options, {"workspace_id": WORKSPACE, "credentials": token, "variables": {"Transcript": "é" * 20_000}}
    )
    assert result["status"] == "failed"
    message = result["logs"][-1]["message"]
    assert "over Segment's 32 KB limit" in message
    assert "properties.transcript" in message


def test_a_retry_of_an_execution_that_was_not_queued_is_tried_again_not_called_a_duplicate(
    block: SegmentBlock, token: str
) -> None:
    """Only an execution that reached the queue makes its retries duplicates."""
    options = {"action": "track", "event": "E", "userId": "u", "properties": [{"key": "t", "value": "{{T}}"}]}
    too_big = {"T": "é" * 20_000}  # under the template limit, over 32 KB as JSON
    first = run(block, options, token, execution_id="exec-big", variables=too_big)
    retry = run(block, options, token, execution_id="exec-big", variables=too_big)
    assert first["status"] == retry["status"] == "failed"
    assert not any(entry["details"].get("duplicate") for entry in retry["logs"])
    fixed = run(block, options, token, execution_id="exec-big", variables={"T": "short"})
    assert fixed["status"] == "queued"
    assert not any(entry["details"].get("duplicate") for entry in fixed["logs"])


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        (None, "No Segment credentials"),
        ("", "No Segment credentials"),
        ("qbseg.v1.garbage", "could not be used"),
    ],
)
def test_bad_or_missing_credentials_fail_clearly(block: SegmentBlock, credentials: Any, expected: str) -> None:
    result = block.execute(
        {"action": "track", "event": "E", "userId": "u"},
        {"workspace_id": WORKSPACE, "credentials": credentials, "variables": {}},
    )
    assert result["status"] == "failed"
    assert expected in result["logs"][-1]["message"]


def test_a_token_from_another_workspace_is_refused(block: SegmentBlock, token: str) -> None:
    result = block.execute(
        {"action": "track", "event": "E", "userId": "u"}, {"workspace_id": "other", "credentials": token}
    )
    assert result["status"] == "failed"
    assert WRITE_KEY not in json.dumps(result)


def test_variables_are_never_rendered_twice(block: SegmentBlock, token: str) -> None:
    options = {
        "action": "track",
        "event": "E",
        "userId": "u",
        "properties": [{"key": "said", "value": "{{Answer}}"}],
    }
    payload = "{{ 7 * 7 }} {% for x in range(3) %}x{% endfor %}"
    result = block.execute(options, {"workspace_id": WORKSPACE, "credentials": token, "variables": {"Answer": payload}})
    assert result["payload"]["properties"]["said"] == payload


variable_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=5,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    variables=st.dictionaries(st.sampled_from(["User ID", "Email", "Plan", "Age", "When", "x"]), variable_values),
    value=st.text(max_size=60),
    value_type=st.none() | st.sampled_from(["string", "number", "boolean", "datetime", "json"]),
)
def test_execute_never_raises_whatever_the_variables(
    encryption_key: str, variables: dict[str, Any], value: str, value_type: str | None
) -> None:
    item: dict[str, Any] = {"key": "k", "value": value}
    if value_type:
        item["type"] = value_type
    options = {
        "action": "identify",
        "userId": "{{User ID}}",
        "email": "{{Email}}",
        "timestamp": "{{When}}",
        "traits": [item, {"key": "age", "value": "{{Age}}"}],
    }
    result = BLOCK.execute(options, {"workspace_id": WORKSPACE, "variables": variables, "dry_run": True})
    assert result["status"] in {"dry_run", "failed"}
    json.dumps(result)
    if result["status"] == "failed":
        assert any(entry["level"] == "error" for entry in result["logs"])
    # The catch-all turns a bug of ours into a "failed" result too: that must never be the reason.
    assert not any("failed unexpectedly" in entry["message"] for entry in result["logs"]), result["logs"]


BLOCK = SegmentBlock()


def test_a_list_over_the_item_cap_fails_naming_the_list(block: SegmentBlock, token: str) -> None:
    many = [{"key": f"k{i}", "value": "{{Plan}}"} for i in range(201)]
    result = run(block, {"action": "track", "event": "E", "userId": "{{User ID}}", "properties": many}, token)
    assert result["status"] == "failed"
    assert "Properties can hold at most 200 items; it has 201." in result["logs"][-1]["message"]
    assert result["logs"][-1]["details"] == {"field": "properties"}
