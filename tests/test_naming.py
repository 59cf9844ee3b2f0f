"""Naming conventions: a lint beside validate(), with warnings a bot builder reads, never errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from quickbot_segment_plugin.block import SegmentBlock
from quickbot_segment_plugin.cli import main
from quickbot_segment_plugin.core.errors import ConfigurationError
from quickbot_segment_plugin.quality.naming import lint, lint_across_blocks

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def track(event: str = "Order Completed", *keys: str) -> dict[str, Any]:
    return {
        "action": "track",
        "event": event,
        "userId": "u",
        "properties": [{"key": key, "value": "x"} for key in keys],
    }


# (rule, passing options, failing options, the warning for the failing options)
CASES = [
    (
        "event_name_case",
        track("Order Completed"),
        track("order_completed"),
        {
            "path": "event",
            "message": "Event Name 'order_completed' does not follow Segment's Object Action naming in Title Case; "
            "use 'Order Completed'.",
            "rule": "event_name_case",
        },
    ),
    (
        "event_name_case",
        track("Signed Up"),
        track("Signup"),
        {
            "path": "event",
            "message": "Event Name 'Signup' does not follow Segment's Object Action naming in Title Case; name the "
            "object and the action, such as 'Lead Qualified'.",
            "rule": "event_name_case",
        },
    ),
    (
        "dynamic_event_name",
        track("Plan Viewed", "plan"),
        track("{{Plan}} Viewed"),
        {
            "path": "event",
            "message": "Event Name '{{Plan}} Viewed' is built from variables: every value becomes a separate event "
            "in Segment. Use a fixed name and send the variable as a property.",
            "rule": "dynamic_event_name",
        },
    ),
    (
        "property_key_case",
        track("Order Completed", "order_id", "firstName", "address.postalCode"),
        track("Order Completed", "orderId"),
        {
            "path": "properties/0/key",
            "message": "Key 'orderId' of property 1 is not snake_case, this workspace's style for property keys; "
            "use 'order_id'.",
            "rule": "property_key_case",
        },
    ),
    (
        "property_key_case",
        {"action": "identify", "userId": "u", "email": "a@b.io", "traits": [{"key": "firstName", "value": "x"}]},
        {"action": "identify", "userId": "u", "email": "a@b.io", "traits": [{"key": "First Name", "value": "x"}]},
        {
            "path": "traits/0/key",
            "message": "Key 'First Name' of trait 1 is not snake_case, this workspace's style for property keys; "
            "use 'firstName'.",
            "rule": "property_key_case",
        },
    ),
    (
        "case_duplicate_key",
        track("Order Completed", "plan", "plan_name"),
        track("Order Completed", "plan", "Plan"),
        {
            "path": "properties/1/key",
            "message": "Key 'Plan' of property 2 differs from 'plan' of property 1 only in case or separators; "
            "Segment keeps them as two different properties.",
            "rule": "case_duplicate_key",
        },
    ),
]


@pytest.mark.parametrize(
    ("rule", "good", "bad", "warning"), CASES, ids=[f"{case[0]}-{i}" for i, case in enumerate(CASES)]
)
def test_each_rule_passes_and_fails(
    rule: str, good: dict[str, Any], bad: dict[str, Any], warning: dict[str, str]
) -> None:
    assert lint(good) == []
    found = lint(bad)
    assert warning in found
    assert {item["rule"] for item in found} <= {rule, "property_key_case"}


def test_warnings_never_reach_validate() -> None:
    block = SegmentBlock()
    options = track("order_completed", "orderId", "OrderId")
    assert block.validate(options) == []  # the host contract: [] when the options work
    assert [item["rule"] for item in block.lint(options)] == [
        "event_name_case",
        "property_key_case",
        "property_key_case",
        "case_duplicate_key",
    ]


def test_options_that_do_not_validate_are_not_linted() -> None:
    assert lint({"action": "track", "userId": "u"}) == []
    assert lint("not options") == []


def test_legacy_options_are_reported_at_their_own_paths() -> None:
    legacy = {
        "action": "Track",
        "eventName": "plan viewed",
        "userId": "u",
        "properties": [{"id": "p", "key": "planName", "value": "x"}],
    }
    assert [(item["path"], item["rule"]) for item in lint(legacy)] == [
        ("eventName", "event_name_case"),
        ("properties/0/key", "property_key_case"),
    ]


def test_the_property_case_is_the_workspace_choice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    camel = track("Order Completed", "orderId")
    monkeypatch.setenv("QUICKBOT_SEGMENT_PROPERTY_CASE", "camelCase")
    assert lint(camel) == []
    assert lint(track("Order Completed", "order_id"))[0]["message"] == (
        "Key 'order_id' of property 1 is not camelCase, this workspace's style for property keys; use 'orderId'."
    )
    monkeypatch.setenv("QUICKBOT_SEGMENT_PROPERTY_CASE", "any")
    assert lint(track("Order Completed", "order_id", "orderTotal")) == []
    # A workspace's tracking plan may set its own style, over the operator's default.
    monkeypatch.setenv("QUICKBOT_SEGMENT_TRACKING_PLAN_DIR", str(tmp_path))
    plan = {
        "quickbot": {"property_case": "snake_case"},
        "rules": {"events": [{"name": "Order Completed", "rules": {}}]},
    }
    (tmp_path / "acme.json").write_text(json.dumps(plan))
    assert [item["rule"] for item in lint(camel, workspace_id="acme")] == ["property_key_case"]
    assert lint(camel, workspace_id="other") == []
    monkeypatch.setenv("QUICKBOT_SEGMENT_PROPERTY_CASE", "kebab")
    with pytest.raises(
        ConfigurationError, match="QUICKBOT_SEGMENT_PROPERTY_CASE must be one of snake_case, camelCase, any"
    ):
        lint(camel)


def test_an_attached_plan_flags_unplanned_event_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QUICKBOT_SEGMENT_TRACKING_PLAN", str(tmp_path / "plan.json"))
    plan = {
        "display_name": "Shop",
        "quickbot": {"mode": "block"},
        "rules": {"events": [{"name": "Order Completed", "rules": {}}]},
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    assert lint(track("Order Completed")) == []
    assert lint(track("Order Complete")) == [
        {
            "path": "event",
            "message": "Event Name 'Order Complete' is not in the tracking plan 'Shop' (did you mean 'Order Completed'?); "
            "its mode for unplanned events is block.",
            "rule": "unplanned_event",
        }
    ]


def test_keys_that_differ_only_in_case_across_blocks() -> None:
    blocks = [
        ("b1", track("Order Completed", "plan")),
        ("b2", track("Plan Viewed", "Plan")),
        ("b3", track("Plan Viewed", "plan")),
    ]
    assert lint_across_blocks(blocks) == [
        (
            "b2",
            {
                "path": "properties/0/key",
                "message": "Key 'Plan' of property 1 differs from 'plan' in block b1 only in case or separators; "
                "Segment keeps them as two different event properties.",
                "rule": "case_duplicate_key",
            },
        )
    ]
    # User traits and event properties are different things: the same key may differ there.
    identify = {"action": "identify", "userId": "u", "email": "a@b.io", "traits": [{"key": "Plan", "value": "x"}]}
    assert lint_across_blocks([("b1", track("Order Completed", "plan")), ("b2", identify)]) == []


def test_validate_command_prints_warnings_after_problems_and_exits_on_problems_only(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    flow = tmp_path / "flow.json"
    blocks = [
        {"id": "b0", "type": "segment", "options": track("order_completed", "plan")},
        {"id": "b1", "type": "segment", "options": {"action": "page", "userId": "u"}},
    ]
    flow.write_text(json.dumps({"workspace_id": "w", "blocks": blocks}))
    assert main(["validate", str(flow)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"{flow}: block b1/name: Page Name is required.",
        f"{flow}: block b0/event: warning: Event Name 'order_completed' does not follow Segment's Object Action "
        "naming in Title Case; use 'Order Completed'. [event_name_case]",
    ]
    assert "1 of 2 Segment block(s) valid." in captured.err
    assert "1 naming warning(s)." in captured.err

    flow.write_text(json.dumps({"workspace_id": "w", "blocks": blocks[:1]}))
    assert main(["validate", str(flow)]) == 0  # warnings alone never fail validation


def test_the_shipped_examples_follow_the_conventions(capsys: pytest.CaptureFixture[str]) -> None:
    for example in sorted(EXAMPLES.glob("*.json")):
        assert main(["validate", str(example)]) == 0
        assert "warning:" not in capsys.readouterr().out, example
