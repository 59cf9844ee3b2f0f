"""The hot-path cost of the privacy policy on `execute`, measured against privacy off in one run.

    python benchmarks/bench_privacy.py [--events 20000]

(a) `execute` of a track block (real delivery to a loopback receiver in a child process) with 5 properties and a
    free-text answer, in blocks made side by side: `QUICKBOT_SEGMENT_PRIVACY=off` (the
    baseline), the default policy (denylist + IBAN/card/SSN detectors; nothing to change in
    this event, but the answer has digits, so the detectors run), and the default policy on
    an answer holding a card number (the masking path). Rounds are interleaved so drift hits
    every side alike.
(b) `PrivacyGate.screen` alone per event, on the same two messages.
Prints a table and writes benchmarks/results/privacy.json. Ratios against the first column
are the point; absolute microseconds depend on the machine.
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

from quickbot_segment_plugin.core.results import ResultLog
from quickbot_segment_plugin.privacy.gate import PrivacyGate

OPTIONS = {
    "action": "track",
    "event": "Question Answered",
    "userId": "{{User ID}}",
    "properties": [
        {"key": "plan", "value": "{{Plan}}"},
        {"key": "score", "value": "{{Score}}"},
        {"key": "source", "value": "chatbot"},
        {"key": "question", "value": "How many seats do you need?"},
        {"key": "answer", "value": "{{Answer}}"},
    ],
    "context": [{"key": "locale", "value": "fr-FR"}],
}
PLAIN = {"User ID": "user-1042", "Plan": "premium", "Score": 8, "Answer": "About 25 seats for our team of 3 sites"}
WITH_CARD = {**PLAIN, "Answer": "Just charge my card 4111 1111 1111 1111 for 25 seats"}


def measure(events: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory, ReceiverProcess(0.0) as receiver:
        use_local_segment(receiver.url, directory)
        plain = {"workspace_id": WORKSPACE, "variables": PLAIN, "bot_id": "b"}
        carded = {**plain, "variables": WITH_CARD}
        sides = {
            "privacy off": block_under({"QUICKBOT_SEGMENT_PRIVACY": "off"}, OPTIONS, plain),
            "default policy": block_under({"QUICKBOT_SEGMENT_PRIVACY": None}, OPTIONS, plain),
            "default policy, card masked": block_under({"QUICKBOT_SEGMENT_PRIVACY": None}, OPTIONS, carded),
        }
        masked = sides["default policy, card masked"][0].execute(OPTIONS, {**carded, "dry_run": True})
        assert masked["payload"]["properties"]["answer"].startswith("Just charge my card **** **** **** 1111")
        samples = execute_rounds(sides, OPTIONS, events)
        off_block = sides["privacy off"][0]
        plain_message = off_block.execute(OPTIONS, {**plain, "dry_run": True})["payload"]
        card_message = off_block.execute(OPTIONS, {**carded, "dry_run": True})["payload"]
        for block, _ in sides.values():
            block.shutdown(10)
        gate = PrivacyGate(environ={})
        screen_plain = timed_us(lambda: gate.screen(plain_message, WORKSPACE, ResultLog()), events)
        # The same event without the free-text answer and question: what most track events look like.
        short = {
            **plain_message,
            "properties": {k: plain_message["properties"][k] for k in ("plan", "score", "source")},
        }
        screen_short = timed_us(lambda: gate.screen(short, WORKSPACE, ResultLog()), events)
        screen_card = timed_us(lambda: gate.screen(card_message, WORKSPACE, ResultLog()), events)

    baseline = statistics.median(samples["privacy off"])
    return {
        "events": events,
        "execute_us": {
            name: {
                "median": statistics.median(values),
                "p99": p99(values),
                "ratio_to_baseline": statistics.median(values) / baseline,
                "added_us_per_event": statistics.median(values) - baseline,
            }
            for name, values in samples.items()
        },
        "screen_us": {
            "three_properties_no_text": {"median": statistics.median(screen_short), "p99": p99(screen_short)},
            "no_personal_data": {"median": statistics.median(screen_plain), "p99": p99(screen_plain)},
            "card_masked": {"median": statistics.median(screen_card), "p99": p99(screen_card)},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    result = measure(args.events)
    print(f"execute with the privacy policy ({args.events} events per side, track block, 5 properties + free text)")
    print(f"{'execute':<30}{'median us':>11}{'p99 us':>10}{'ratio':>8}{'added us':>10}")
    for name, values in result["execute_us"].items():
        print(
            f"{name:<30}{values['median']:>11.1f}{values['p99']:>10.1f}{values['ratio_to_baseline']:>8.2f}"
            f"{values['added_us_per_event']:>10.1f}"
        )
    print(f"\n{'screen alone (PrivacyGate.screen)':<30}{'median us':>11}{'p99 us':>10}")
    for name, values in result["screen_us"].items():
        print(f"{name.replace('_', ' '):<30}{values['median']:>11.1f}{values['p99']:>10.1f}")
    out = Path(__file__).resolve().parent / "results" / "privacy.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
