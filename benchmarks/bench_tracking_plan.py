"""The hot-path cost of data quality: cleaning and a 20-event tracking plan, measured in one run.

    python benchmarks/bench_tracking_plan.py [--events 20000]

(a) `execute` of a track block (real delivery to a loopback receiver in a child process) in three blocks made
    side by side: cleaning off and no plan (the path before data quality), cleaning on and no
    plan (the default), cleaning on with a 20-event Protocols plan in `allow` mode that the
    event satisfies. Timing rounds are interleaved so drift hits every side alike.
(b) the plan check alone (`quality.plans.enforcement.enforce`) per event: a valid event, and an event
    with two violations (the slower path that builds messages).
Prints a table and writes benchmarks/results/tracking_plan.json. Ratios against the first
column are the point; absolute microseconds depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WORKSPACE, block_under, execute_rounds, p99, timed_us, use_local_segment
from receiver import ReceiverProcess

from quickbot_segment_plugin.core.counters import Counters
from quickbot_segment_plugin.core.results import ResultLog
from quickbot_segment_plugin.quality.gate import QualityGate
from quickbot_segment_plugin.quality.plans.enforcement import enforce
from quickbot_segment_plugin.quality.plans.lookup import load_plan

OPTIONS = {
    "action": "track",
    "event": "Lead Qualified",
    "userId": "{{User ID}}",
    "properties": [
        {"key": "plan", "value": "{{Plan}}"},
        {"key": "score", "value": "{{Score}}"},
        {"key": "source", "value": "chatbot"},
        {"key": "email_opt_in", "value": "yes", "type": "boolean"},
        {"key": "answered_at", "value": "2026-01-31T12:00:00Z", "type": "datetime"},
    ],
    "context": [{"key": "locale", "value": "fr-FR"}],
}
VARIABLES = {"User ID": "user-1042", "Plan": "premium", "Score": 8}
DRAFT_07 = "http://json-schema.org/draft-07/schema#"


def twenty_event_plan(more_properties: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Config API plan of 20 events with 5 typed properties each (plus `more_properties`), and common."""
    names = [
        "Lead Qualified", "Lead Unqualified", "Chat Started", "Chat Ended", "Question Answered",
        "Question Skipped", "Plan Viewed", "Pricing Viewed", "Demo Requested", "Demo Booked",
        "Signup Started", "Signup Completed", "Order Started", "Order Completed", "Coupon Applied",
        "Feedback Submitted", "Agent Requested", "Agent Joined", "Newsletter Subscribed", "Bot Rated",
    ]  # fmt: skip
    properties = {
        "plan": {"type": "string", "enum": ["free", "premium", "enterprise"]},
        "score": {"type": "integer", "minimum": 0, "maximum": 10},
        "source": {"type": "string", "pattern": "^[a-z_]+$"},
        "email_opt_in": {"type": "boolean"},
        "answered_at": {"type": "string", "format": "date-time"},
        **(more_properties or {}),
    }
    events = [
        {
            "name": name,
            "version": 1,
            "rules": {
                "$schema": DRAFT_07,
                "type": "object",
                "properties": {
                    "context": {},
                    "traits": {},
                    "properties": {"type": "object", "properties": properties, "required": ["score", "source"]},
                },
                "required": ["properties"],
            },
        }
        for name in names
    ]
    common = {
        "$schema": DRAFT_07,
        "type": "object",
        "properties": {
            "context": {"type": "object", "properties": {"library": {"type": "object"}}, "required": ["library"]},
            "traits": {},
            "properties": {},
        },
        "required": ["context"],
    }
    return {"display_name": "Benchmark plan", "rules": {"global": common, "events": events}}


def measure(events: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as plans, ReceiverProcess(0.0) as receiver:
        use_local_segment(receiver.url, plans)
        plan_path = Path(plans) / f"{WORKSPACE}.json"
        plan_path.write_text(json.dumps(twenty_event_plan()))
        base = {"workspace_id": WORKSPACE, "variables": VARIABLES, "bot_id": "b"}
        sides = {
            "cleaning off, no plan": block_under(
                {"QUICKBOT_SEGMENT_CLEANING": "off", "QUICKBOT_SEGMENT_TRACKING_PLAN_DIR": None}, OPTIONS, base
            ),
            "cleaning on, no plan": block_under({"QUICKBOT_SEGMENT_TRACKING_PLAN_DIR": None}, OPTIONS, base),
            "cleaning on, 20-event plan": block_under({"QUICKBOT_SEGMENT_TRACKING_PLAN_DIR": plans}, OPTIONS, base),
        }
        samples = execute_rounds(sides, OPTIONS, events)
        for block, _ in sides.values():
            block.shutdown(10)

        plan = load_plan(plan_path)
        payload = sides["cleaning on, no plan"][0].execute(OPTIONS, {**base, "dry_run": True})["payload"]
        bad = {**payload, "properties": {**payload["properties"], "score": 42, "source": "Chat Bot"}}
        assert not enforce(plan, payload).outcomes and len(enforce(plan, bad).outcomes) == 2
        check_valid = timed_us(lambda: enforce(plan, payload), events)
        # Cleaning alone, as every event without a plan pays it: the gate with no plan configured.
        gate = QualityGate(Counters(), environ={})
        cleaning = timed_us(lambda: gate.check(payload, WORKSPACE, ResultLog()), events)
        check_invalid = timed_us(lambda: enforce(plan, bad), events // 4)

    baseline = statistics.median(samples["cleaning off, no plan"])
    return {
        "events": events,
        "plan_events": 20,
        "execute_us": {
            name: {
                "median": statistics.median(values),
                "p99": p99(values),
                "ratio_to_baseline": statistics.median(values) / baseline,
            }
            for name, values in samples.items()
        },
        "plan_check_us": {
            "valid_event": {"median": statistics.median(check_valid), "p99": p99(check_valid)},
            "two_violations": {"median": statistics.median(check_invalid), "p99": p99(check_invalid)},
            "cleaning_only_no_plan": {"median": statistics.median(cleaning), "p99": p99(cleaning)},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    result = measure(args.events)
    print(f"execute with data quality ({args.events} events per side, track block with 5 properties)")
    print(f"{'execute':<34}{'median us':>11}{'p99 us':>10}{'ratio':>8}")
    for name, values in result["execute_us"].items():
        print(f"{name:<34}{values['median']:>11.1f}{values['p99']:>10.1f}{values['ratio_to_baseline']:>8.2f}")
    print(f"\n{'alone (enforce; QualityGate.check)':<34}{'median us':>11}{'p99 us':>10}")
    for name, values in result["plan_check_us"].items():
        print(f"{name.replace('_', ' '):<34}{values['median']:>11.1f}{values['p99']:>10.1f}")
    out = Path(__file__).resolve().parent / "results" / "tracking_plan.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
