"""Tracking plans, end to end: a Protocols plan file -> execute -> the real library -> the collector.

Each mode (allow, block, omit) is shown on a planned event that breaks the plan and on an
unplanned event, with the log lines a bot builder reads and what the collector received.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from support import WORKSPACE

from quickbot_segment_plugin.block import SegmentBlock
from quickbot_segment_plugin.cli import main
from quickbot_segment_plugin.quality.plans.enforcement import enforce
from quickbot_segment_plugin.quality.plans.errors import TrackingPlanError
from quickbot_segment_plugin.quality.plans.formats import compile_plan
from quickbot_segment_plugin.quality.plans.lookup import PlanResolver, load_plan

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DRAFT_07 = "http://json-schema.org/draft-07/schema#"

# A plan exactly as Segment's Config API returns one ("Get Tracking Plan"), draft-07 schemas,
# with the empty `identify_traits` / `group_traits` lists Segment includes. Kept as JSON text so
# the test proves the file loads unchanged.
SEGMENT_CONFIG_API_PLAN = """
{
  "name": "workspaces/myworkspace/tracking-plans/rs_123",
  "display_name": "Kicks App",
  "rules": {
    "identify_traits": [],
    "group_traits": [],
    "events": [
      {
        "name": "Order Completed",
        "description": "Who bought what",
        "version": 1,
        "rules": {
          "$schema": "http://json-schema.org/draft-07/schema#",
          "type": "object",
          "properties": {
            "context": {},
            "traits": {},
            "properties": {
              "required": ["product", "price", "amount"],
              "type": "object",
              "properties": {
                "product": {"type": ["string"]},
                "amount": {"type": ["number"]},
                "price": {"type": ["number"]}
              }
            }
          }
        }
      }
    ],
    "global": {
      "$schema": "http://json-schema.org/draft-07/schema#",
      "type": "object",
      "properties": {
        "context": {
          "required": ["library"],
          "type": "object",
          "properties": {"library": {"type": ["object"]}}
        },
        "traits": {},
        "properties": {}
      }
    },
    "identify": {
      "$schema": "http://json-schema.org/draft-07/schema#",
      "type": "object",
      "properties": {
        "traits": {
          "type": "object",
          "properties": {
            "occupation": {"type": ["string"]},
            "age": {"type": ["number"]},
            "name": {"type": ["string"]}
          },
          "required": ["name"]
        },
        "properties": {},
        "context": {}
      }
    },
    "group": {
      "$schema": "http://json-schema.org/draft-07/schema#",
      "type": "object",
      "properties": {
        "properties": {},
        "context": {},
        "traits": {
          "properties": {"company": {"type": ["object"]}},
          "required": ["company"],
          "type": "object"
        }
      }
    }
  },
  "create_time": "2019-02-05T01:21:25Z",
  "update_time": "2019-02-05T01:21:25Z"
}
"""

ORDER = {
    "action": "track",
    "event": "Order Completed",
    "userId": "u-1",
    "properties": [
        {"key": "product", "value": "{{Product}}"},
        {"key": "price", "value": "{{Price}}"},
        {"key": "amount", "value": "{{Amount}}"},
    ],
}
GOOD_ORDER = {"Product": "Air Max", "Price": 120, "Amount": 2}


def _plan_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, mode: str | None = None) -> Path:
    directory = tmp_path / "plans"
    directory.mkdir(exist_ok=True)
    if mode is not None:
        document = json.loads(text)
        document["quickbot"] = {"mode": mode}
        text = json.dumps(document)
    (directory / f"{WORKSPACE}.json").write_text(text)
    monkeypatch.setenv("QUICKBOT_SEGMENT_TRACKING_PLAN_DIR", str(directory))
    return directory


def _run(block: SegmentBlock, token: str, options: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    return block.execute(options, {"workspace_id": WORKSPACE, "credentials": token, "variables": variables})


def _messages(result: dict[str, Any]) -> list[str]:
    return [entry["message"] for entry in result["logs"]]


def _received(block: SegmentBlock, collector: Any, expected: int) -> list[dict[str, Any]]:
    block.shutdown(10.0)
    if expected:
        assert collector.wait_for(expected, timeout=10.0)
    messages: list[dict[str, Any]] = collector.messages()
    assert len(messages) == expected
    return messages


# --- a plan as Segment documents it loads unchanged --------------------------------------------


def test_segment_config_api_plan_loads_unchanged_and_checks_each_call(tmp_path: Path) -> None:
    path = tmp_path / "kicks.json"
    path.write_text(SEGMENT_CONFIG_API_PLAN)
    plan = load_plan(path)
    assert (plan.name, plan.mode, plan.unplanned_events) == ("Kicks App", "allow", "allow")
    assert plan.event_names == ["Order Completed"]
    library = {"library": {"name": "analytics-python", "version": "2.4.0"}}
    good = {
        "type": "track",
        "event": "Order Completed",
        "properties": {"product": "Air Max", "price": 120, "amount": 2},
        "context": library,
    }
    assert enforce(plan, good).outcomes == []
    bad_identify = {"type": "identify", "traits": {"age": "old", "email": "a@b.io"}, "context": library}
    assert [sentence for _, _, sentence in enforce(plan, bad_identify).outcomes] == [
        "Trait 'email' is not in the tracking plan; sent anyway (tracking plan 'Kicks App', mode allow).",
        "Trait 'age' must be a number, got 'old'; sent anyway (tracking plan 'Kicks App', mode allow).",
        "Trait 'name' is required by the tracking plan and is missing; sent anyway (tracking plan 'Kicks App', mode allow).",
    ]
    no_library = {"type": "group", "traits": {"company": {"name": "Acme"}}, "context": {}}
    assert [violation.rule for violation, _, _ in enforce(plan, no_library).outcomes] == ["plan_required"]


def test_segment_public_api_rules_load_unchanged() -> None:
    rules = {
        "data": {
            "rules": [
                {
                    "type": "COMMON",
                    "version": 1,
                    "jsonSchema": {"$schema": DRAFT_07, "type": "object", "required": ["context"]},
                },
                {
                    "type": "TRACK",
                    "key": "Lead Qualified",
                    "version": 1,
                    "jsonSchema": {
                        "$schema": DRAFT_07,
                        "type": "object",
                        "properties": {
                            "properties": {
                                "type": "object",
                                "properties": {"score": {"type": "integer"}},
                                "required": ["score"],
                            }
                        },
                    },
                },
                {
                    "type": "IDENTIFY",
                    "version": 1,
                    "jsonSchema": {
                        "$schema": DRAFT_07,
                        "type": "object",
                        "properties": {"traits": {"type": "object", "properties": {"email": {"format": "email"}}}},
                    },
                },
            ]
        }
    }
    plan = compile_plan(rules)
    assert plan.event_names == ["Lead Qualified"] and plan.identify is not None and plan.common is not None
    track = {"type": "track", "event": "Lead Qualified", "properties": {"score": "8"}, "context": {}}
    [(violation, decision, sentence)] = enforce(plan, track).outcomes
    assert (violation.rule, decision) == ("plan_type", "sent")
    assert sentence.startswith("Property 'score' of 'Lead Qualified' must be a whole number, got '8'")


def test_the_shipped_example_plan_covers_every_event_of_the_example_flow(
    block: SegmentBlock, token: str, local_segment: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUICKBOT_SEGMENT_TRACKING_PLAN_DIR", str(EXAMPLES / "tracking-plans"))
    flow = json.loads((EXAMPLES / "onboarding-flow.json").read_text())
    plan = load_plan(EXAMPLES / "tracking-plans" / "demo-workspace.json")
    assert plan.mode == "block"
    statuses = []
    for step in flow["blocks"]:
        context = {"workspace_id": flow["workspace_id"], "credentials": None, "variables": flow["variables"]}
        result = block.execute(step["options"], {**context, "dry_run": True})
        statuses.append(result["status"])
        assert not [entry for entry in result["logs"] if entry["details"].get("tracking_plan")], result["logs"]
    assert statuses == ["dry_run"] * 6 + ["skipped"]


# --- the three modes, end to end ---------------------------------------------------------------


def test_allow_mode_sends_the_event_and_logs_each_violation(
    block: SegmentBlock, token: str, local_segment: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plan_dir(tmp_path, monkeypatch, SEGMENT_CONFIG_API_PLAN, mode="allow")
    result = _run(block, token, ORDER, {"Product": "Air Max", "Price": "cheap", "Amount": 2})
    assert result["status"] == "queued"
    assert _messages(result) == [
        "Property 'price' of 'Order Completed' must be a number, got 'cheap'; sent anyway "
        "(tracking plan 'Kicks App', mode allow)."
    ]
    entry = result["logs"][0]
    assert entry["level"] == "warning"
    assert entry["details"] == {"field": "properties/1/value", "rule": "plan_type", "tracking_plan": "Kicks App"}
    [stored] = _received(block, local_segment, 1)
    assert stored["properties"] == {"product": "Air Max", "price": "cheap", "amount": 2}


def test_block_mode_stops_the_event_and_fails_the_block_with_the_violations(
    block: SegmentBlock, token: str, local_segment: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plan_dir(tmp_path, monkeypatch, SEGMENT_CONFIG_API_PLAN, mode="block")
    refused_before = block.counters.get(WORKSPACE, "quality:refused:plan_required:Order Completed")
    result = _run(block, token, ORDER, {"Product": "Air Max", "Price": "cheap"})
    assert result["status"] == "failed"
    assert "payload" not in result
    assert _messages(result) == [
        "The property 'amount' is empty because the variable 'Amount' is not set; it was not sent.",
        "Property 'amount' of 'Order Completed' is required by the tracking plan and is missing; the event was "
        "not sent (tracking plan 'Kicks App', mode block).",
        "Property 'price' of 'Order Completed' must be a number, got 'cheap'; the event was not sent "
        "(tracking plan 'Kicks App', mode block).",
    ]
    assert [entry["level"] for entry in result["logs"]] == ["warning", "error", "error"]
    assert block.counters.get(WORKSPACE, "quality:refused:plan_required:Order Completed") == refused_before + 1
    good = _run(block, token, ORDER, GOOD_ORDER)
    assert good["status"] == "queued" and good["logs"] == []
    [stored] = _received(block, local_segment, 1)
    assert stored["messageId"] == good["message_id"]


def test_omit_mode_removes_what_breaks_the_plan_and_sends_the_rest(
    block: SegmentBlock, token: str, local_segment: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plan_dir(tmp_path, monkeypatch, SEGMENT_CONFIG_API_PLAN, mode="omit")
    options = {**ORDER, "properties": [*ORDER["properties"], {"key": "coupon", "value": "SPRING"}]}
    result = _run(block, token, options, {"Product": "Air Max", "Price": "cheap", "Amount": 2})
    assert result["status"] == "queued"
    assert _messages(result) == [
        "Property 'coupon' of 'Order Completed' is not in the tracking plan; it was removed before sending "
        "(tracking plan 'Kicks App', mode omit).",
        "Property 'price' of 'Order Completed' must be a number, got 'cheap'; it was removed before sending "
        "(tracking plan 'Kicks App', mode omit).",
        "Property 'price' of 'Order Completed' is required by the tracking plan and is missing; sent anyway, as "
        "omit mode only removes properties and traits (tracking plan 'Kicks App', mode omit).",
    ]
    assert result["payload"]["properties"] == {"product": "Air Max", "amount": 2}
    [stored] = _received(block, local_segment, 1)
    assert stored["properties"] == {"product": "Air Max", "amount": 2}


@pytest.mark.parametrize(
    ("mode", "status", "arrives", "sentence"),
    [
        ("allow", "queued", {"product": "Air Max"}, "sent anyway (tracking plan 'Kicks App', mode allow)."),
        ("block", "failed", None, "the event was not sent (tracking plan 'Kicks App', mode block)."),
        ("omit", "queued", {}, "sent anyway, as omit mode only removes properties and traits"),
    ],
)
def test_an_unplanned_event_follows_the_mode(
    block: SegmentBlock,
    token: str,
    local_segment: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    status: str,
    arrives: dict[str, Any] | None,
    sentence: str,
) -> None:
    _plan_dir(tmp_path, monkeypatch, SEGMENT_CONFIG_API_PLAN, mode=mode)
    options = {**ORDER, "event": "Order Complete", "properties": [{"key": "product", "value": "Air Max"}]}
    result = _run(block, token, options, {})
    assert result["status"] == status
    first = _messages(result)[0]
    assert first.startswith("Event 'Order Complete' is not in the tracking plan (did you mean 'Order Completed'?); ")
    assert sentence in first
    assert result["logs"][0]["details"]["field"] == "event"
    if mode == "omit":
        assert _messages(result)[1] == (
            "Property 'product' of 'Order Complete' is not in the tracking plan; it was removed before sending "
            "(tracking plan 'Kicks App', mode omit)."
        )
    stored = _received(block, local_segment, 0 if arrives is None else 1)
    if arrives is not None:
        assert stored[0]["event"] == "Order Complete" and stored[0]["properties"] == arrives


def test_unplanned_events_can_have_their_own_mode(tmp_path: Path) -> None:
    document = {**json.loads(SEGMENT_CONFIG_API_PLAN), "quickbot": {"mode": "allow", "unplanned_events": "block"}}
    plan = compile_plan(document)
    verdict = enforce(plan, {"type": "track", "event": "Whatever", "properties": {}, "context": {"library": {}}})
    assert verdict.refused
    planned = {"type": "track", "event": "Order Completed", "properties": {"product": 1}, "context": {"library": {}}}
    assert not enforce(plan, planned).refused


def test_dry_run_shows_violations_without_counting_them(
    block: SegmentBlock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plan_dir(tmp_path, monkeypatch, SEGMENT_CONFIG_API_PLAN, mode="block")
    name = "quality:violations:plan_type:Order Completed"
    before = block.counters.get(WORKSPACE, name)
    options = {**ORDER}
    context = {"workspace_id": WORKSPACE, "variables": {**GOOD_ORDER, "Price": "x"}, "dry_run": True}
    result = block.execute(options, context)
    assert result["status"] == "failed"
    assert "must be a number, got 'x'; the event was not sent" in _messages(result)[0]
    assert block.counters.get(WORKSPACE, name) == before


# --- where plans come from, and how they change ------------------------------------------------


def test_an_edited_plan_is_used_from_the_next_event(
    block: SegmentBlock, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = _plan_dir(tmp_path, monkeypatch, SEGMENT_CONFIG_API_PLAN, mode="allow")
    assert _run(block, token, ORDER, {**GOOD_ORDER, "Price": "x"})["status"] == "queued"
    path = directory / f"{WORKSPACE}.json"
    document = {**json.loads(SEGMENT_CONFIG_API_PLAN), "quickbot": {"mode": "block"}}
    path.write_text(json.dumps(document))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a later edit, whatever the clock
    assert _run(block, token, ORDER, {**GOOD_ORDER, "Price": "x"})["status"] == "failed"


def test_a_broken_edit_keeps_the_last_good_plan_and_says_so(
    block: SegmentBlock, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = _plan_dir(tmp_path, monkeypatch, SEGMENT_CONFIG_API_PLAN, mode="block")
    assert _run(block, token, ORDER, GOOD_ORDER)["status"] == "queued"
    path = directory / f"{WORKSPACE}.json"
    path.write_text('{"rules": {"events": [')
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    result = _run(block, token, ORDER, {**GOOD_ORDER, "Price": "x"})
    assert result["status"] == "failed"  # still checked, in block mode, by the previous version
    assert result["logs"][0]["level"] == "warning"
    assert result["logs"][0]["message"].startswith(
        "The tracking plan file was changed but cannot be used (the tracking plan "
    )
    assert "is not valid JSON (line 1, column 23" in result["logs"][0]["message"]
    assert result["logs"][0]["message"].endswith("its previous version is still applied.")


def test_a_plan_that_never_loaded_refuses_events_naming_the_problem(
    block: SegmentBlock, token: str, local_segment: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = json.loads(SEGMENT_CONFIG_API_PLAN)
    bad["rules"]["events"][0]["rules"]["properties"]["properties"]["type"] = "thing"
    _plan_dir(tmp_path, monkeypatch, json.dumps(bad))
    result = _run(block, token, ORDER, GOOD_ORDER)
    assert result["status"] == "failed"
    [entry] = result["logs"]
    assert entry["details"] == {"rule": "plan_unusable"}
    assert entry["message"].startswith("The tracking plan of this workspace cannot be used (")
    assert (
        "event 'Order Completed' is not a valid JSON Schema ('thing' is not valid under any of the given schemas"
        in (entry["message"])
    )
    assert entry["message"].endswith("the event was not sent. Fix the plan file, or remove it to send without a plan.")
    _received(block, local_segment, 0)


def test_the_default_plan_applies_to_workspaces_without_their_own(tmp_path: Path) -> None:
    own_dir = tmp_path / "plans"
    own_dir.mkdir()
    (own_dir / "acme.json").write_text(json.dumps({"display_name": "Acme", "rules": {"events": []}}))
    default = tmp_path / "default.json"
    default.write_text(SEGMENT_CONFIG_API_PLAN)
    resolver = PlanResolver(str(own_dir), str(default))
    assert resolver.for_workspace("acme").plan.name == "Acme"  # type: ignore[union-attr]
    assert resolver.for_workspace("other").plan.name == "Kicks App"  # type: ignore[union-attr]
    # A workspace id is never a path: one that could leave the directory gets the default plan.
    (tmp_path / "secret.json").write_text(json.dumps({"display_name": "Outside", "rules": {}}))
    assert resolver.for_workspace("../secret").plan.name == "Kicks App"  # type: ignore[union-attr]
    assert PlanResolver(None, None).for_workspace("acme").plan is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"rules": 3}, "has no rules"),
        ({"rules": {"events": [{"rules": {}}]}}, "rules.events[0] needs a 'name'"),
        (
            {"quickbot": {"mode": "strict"}, "rules": {}},
            "quickbot.mode must be one of allow, block, omit; got 'strict'",
        ),
        ({"rules": [{"type": "ALIAS"}]}, "has type 'ALIAS'; expected TRACK, IDENTIFY, GROUP or COMMON"),
        ({"rules": {"events": [{"name": "E", "version": "2"}]}}, "'version' must be a whole number, got '2'"),
    ],
)
def test_plan_mistakes_are_named(document: dict[str, Any], message: str) -> None:
    with pytest.raises(TrackingPlanError, match=message.replace("[", r"\[").replace("(", r"\(")):
        compile_plan(document, source="plan.json")


def test_event_versions_follow_protocols(tmp_path: Path) -> None:
    def version(n: int, required: list[str]) -> dict[str, Any]:
        schema = {"type": "object", "properties": {"properties": {"type": "object", "required": required}}}
        return {"name": "Order Completed", "version": n, "rules": {"$schema": DRAFT_07, **schema}}

    plan = compile_plan({"rules": {"events": [version(2, ["subtotal"]), version(1, [])]}})
    base = {"type": "track", "event": "Order Completed", "properties": {}}
    assert enforce(plan, {**base, "context": {}}).outcomes == []  # no version: the oldest
    v2 = enforce(plan, {**base, "context": {"protocols": {"event_version": 2}}})
    assert [violation.rule for violation, _, _ in v2.outcomes] == ["plan_required"]
    assert enforce(plan, {**base, "context": {"protocols": {"event_version": 3}}}).outcomes == []


def test_stats_show_quality_counters_by_rule_and_event(
    block: SegmentBlock,
    token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _plan_dir(tmp_path, monkeypatch, SEGMENT_CONFIG_API_PLAN, mode="block")
    _run(block, token, ORDER, {**GOOD_ORDER, "Price": "cheap", "Product": " Air Max "})
    flusher = block.dead_letters().store.start_counter_flusher(block.counters)  # as a server does
    block.shutdown(5.0)
    flusher.stop(flush=True)  # flushes the counters into the store
    assert main(["stats"]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()]
    assert "Data quality (violations found, values cleaned, events refused; by rule and event):" in out
    assert ["WORKSPACE", "KIND", "RULE", "EVENT", "COUNT"] in lines

    def count(kind: str, rule: str) -> int:
        # The process-wide counters also hold earlier tests' events; the store got all of them.
        total = block.counters.get(WORKSPACE, f"quality:{kind}:{rule}:Order Completed")
        assert total >= 1
        return total

    for kind, rule in [("violations", "plan_type"), ("refused", "plan_type"), ("cleaned", "trim")]:
        assert [WORKSPACE, kind, rule, "Order", "Completed", str(count(kind, rule))] in lines
    assert main(["stats", "--json"]) == 0
    quality = json.loads(capsys.readouterr().out)["quality"]
    row = {"workspace_id": WORKSPACE, "kind": "refused", "rule": "plan_type", "event": "Order Completed"}
    assert {**row, "count": count("refused", "plan_type")} in quality
