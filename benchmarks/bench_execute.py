"""`execute` against the raw segment-analytics-python client, measured in the same run.

    python benchmarks/bench_execute.py [--events 20000] [--latency-ms 0] [--runs 5]

Two blocks, each against the raw `Client.track()` of the very message the block sends:
"light" (a track with a `{{User ID}}` user id and three properties, two of them templates)
and "heavy" (ten properties, typed ones among them, nested traits in the context, a 20-event
tracking plan and the default privacy policy). For each, in every run:

(a) latency: `execute` against the raw `track` enqueue, wall clock per call, in interleaved
    rounds; both go to a client whose consumer is running, so both include the same kind of
    background contention. Also the caller thread's CPU per call (no GIL waits in it).
(b) end to end: events per second from the first call to the last event received, for N
    events through `execute` and through the raw client with the same batch settings, and
    the CPU the whole process spent per delivered event (delivery threads included).
Each block is also timed with cleaning, privacy and the plan off, to show what those checks cost.
The whole measurement is repeated `--runs` times (fresh receiver and clients each time) and
the spread of every ratio is reported: on a shared machine one run can be off.
Prints a table and writes benchmarks/results/execute.json. Ratios, not absolute numbers, are
the point: both sides run on the same machine at the same moment.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tracking_plan import twenty_event_plan
from common import (
    HEAVY_OPTIONS,
    HEAVY_VARIABLES,
    TRACK_OPTIONS,
    TRACK_VARIABLES,
    WORKSPACE,
    WRITE_KEY,
    block_under,
    cpu_us_per_call,
    p99,
    process_cpu_seconds,
    timed_us,
    use_local_segment,
)
from receiver import ReceiverProcess
from segment.analytics import Client

from quickbot_segment_plugin.block import SegmentBlock

SETTINGS = {"upload_size": 100, "upload_interval": 0.05, "max_queue_size": 100_000, "gzip": True, "timeout": 15}
BLOCKS = {"light": (TRACK_OPTIONS, TRACK_VARIABLES), "heavy": (HEAVY_OPTIONS, HEAVY_VARIABLES)}
# The heavy block's other five properties, so that its event satisfies the plan with nothing to log.
HEAVY_PLAN_PROPERTIES = {
    "step": {"type": "integer", "minimum": 1},
    "channel": {"type": "string", "enum": ["web", "whatsapp", "messenger"]},
    "campaign": {"type": "string", "maxLength": 64},
    "variant": {"type": "string", "enum": ["A", "B"]},
    "locale": {"type": "string", "pattern": "^[a-z]{2}-[A-Z]{2}$"},
}


def _raw_client(url: str) -> Any:
    import atexit

    client = Client(WRITE_KEY, host=url, **SETTINGS)
    atexit.unregister(client.join)
    return client


def _raw_track(client: Any, payload: dict[str, Any]) -> None:
    client.track(
        user_id=payload["userId"],
        event=payload["event"],
        properties=payload["properties"],
        context=dict(payload["context"]),
        timestamp=datetime.now(UTC),
        integrations={},
        message_id=None,
    )


def _warm(block: SegmentBlock, options: dict[str, Any], context: dict[str, Any]) -> None:
    for _ in range(200):  # plan cache, credential cache, client creation, connection
        block.execute(options, context)
    block.pool().flush(60)


def _end_to_end(send: Any, count: int, receiver: ReceiverProcess) -> tuple[float, float]:
    """(events per second until all arrived, CPU microseconds of this process per event)."""
    receiver.reset()
    start, cpu = time.monotonic(), process_cpu_seconds()
    for _ in range(count):
        send()
    rate = count / (receiver.wait_for(count, 300) - start)
    return rate, (process_cpu_seconds() - cpu) / count * 1e6


def measure_block(name: str, events: int, latency_ms: float) -> dict[str, Any]:
    options, variables = BLOCKS[name]
    # The receiver runs in its own process, as Segment does: in this one, its parsing would
    # take the GIL from the thread being timed and show up as the plugin's latency.
    with tempfile.TemporaryDirectory() as directory, ReceiverProcess(latency_ms / 1000) as receiver:
        use_local_segment(
            receiver.url,
            directory,
            BATCH_SIZE=str(SETTINGS["upload_size"]),
            FLUSH_INTERVAL=str(SETTINGS["upload_interval"]),
            MAX_QUEUE_SIZE=str(SETTINGS["max_queue_size"]),
            GZIP="true",
        )
        plans = Path(directory) / "plans"
        plans.mkdir()
        (plans / f"{WORKSPACE}.json").write_text(json.dumps(twenty_event_plan(HEAVY_PLAN_PROPERTIES)))
        base = {"workspace_id": WORKSPACE, "variables": variables, "bot_id": "b"}
        defaults = {"QUICKBOT_SEGMENT_CLEANING": None, "QUICKBOT_SEGMENT_PRIVACY": None}
        plan_dir = {"QUICKBOT_SEGMENT_TRACKING_PLAN_DIR": str(plans) if name == "heavy" else None}
        block, context = block_under({**defaults, **plan_dir}, options, base)
        _warm(block, options, context)
        sides: dict[str, Any] = {"plugin": lambda: block.execute(options, context)}
        # The same block with the checks off: what cleaning, privacy and the plan cost.
        checks_off = {"QUICKBOT_SEGMENT_CLEANING": "off", "QUICKBOT_SEGMENT_PRIVACY": "off"}
        bare, bare_context = block_under({**checks_off, "QUICKBOT_SEGMENT_TRACKING_PLAN_DIR": None}, options, base)
        _warm(bare, options, bare_context)
        sides["bare"] = lambda: bare.execute(options, bare_context)
        result = block.execute(options, {**context, "dry_run": True})
        assert result["status"] == "dry_run" and len(result["logs"]) == 1, result["logs"]  # only "Dry run: ..."
        payload = result["payload"]
        raw = _raw_client(receiver.url)
        sides["raw"] = lambda: _raw_track(raw, payload)
        flushes = {"plugin": lambda: block.pool().flush(60), "bare": lambda: bare.pool().flush(60), "raw": raw.flush}
        for _ in range(200):
            _raw_track(raw, payload)
        raw.flush()

        # (a) in interleaved rounds so drift hits all sides alike; each round ends with its
        # side's queue delivered, so every side is timed with its own delivery thread working
        # beside it and none with another side's left-over batches.
        samples: dict[str, list[float]] = {side: [] for side in sides}
        cpu: dict[str, list[float]] = {side: [] for side in sides}
        for _ in range(5):
            for side, call in sides.items():
                samples[side] += timed_us(call, events // 10)
                flushes[side]()
                cpu[side].append(cpu_us_per_call(call, events // 20))
                flushes[side]()

        # (b) end to end: N conversations reaching the block, until Segment has them all
        plugin_rate, plugin_cpu = _end_to_end(sides["plugin"], events, receiver)
        raw_rate, raw_cpu = _end_to_end(sides["raw"], events, receiver)

        block.shutdown(10)
        bare.shutdown(10)
        raw.join()

    medians = {side: statistics.median(values) for side, values in samples.items()}
    return {
        "execute_us": {"median": medians["plugin"], "p99": p99(samples["plugin"])},
        "raw_track_us": {"median": medians["raw"], "p99": p99(samples["raw"])},
        "latency_ratio": medians["plugin"] / medians["raw"],
        "p99_ratio": p99(samples["plugin"]) / p99(samples["raw"]),
        "caller_cpu_us": {"plugin": statistics.median(cpu["plugin"]), "raw": statistics.median(cpu["raw"])},
        "caller_cpu_ratio": statistics.median(cpu["plugin"]) / statistics.median(cpu["raw"]),
        "without_checks_ratio": medians["bare"] / medians["raw"],
        "events_per_s": {"plugin": plugin_rate, "raw": raw_rate},
        "end_to_end_ratio": plugin_rate / raw_rate,
        "cpu_per_delivered_event_us": {"plugin": plugin_cpu, "raw": raw_cpu},
        "cpu_per_delivered_event_ratio": plugin_cpu / raw_cpu,
    }


RATIOS = (
    ("execute p50 / raw track p50", "latency_ratio"),
    ("execute p99 / raw track p99", "p99_ratio"),
    ("caller CPU per call", "caller_cpu_ratio"),
    ("  cleaning, privacy, plan off, p50", "without_checks_ratio"),
    ("events/s end to end", "end_to_end_ratio"),
    ("CPU per delivered event", "cpu_per_delivered_event_ratio"),
)


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in BLOCKS}
    for run in range(args.runs):
        for name in BLOCKS:
            runs[name].append(measure_block(name, args.events, args.latency_ms))
            print(f"run {run + 1}/{args.runs} {name}: execute / raw track {runs[name][-1]['latency_ratio']:.2f}")
    print(f"execute vs raw segment-analytics-python: {args.events} events, receiver latency {args.latency_ms} ms,")
    print(f"{args.runs} runs; each cell is plugin / raw in the same run: median (min-max) over the runs")
    print(f"{'ratio':<34}" + "".join(f"{name:>22}" for name in BLOCKS))
    summary: dict[str, dict[str, dict[str, float]]] = {name: {} for name in BLOCKS}
    for label, key in RATIOS:
        cells = []
        for name in BLOCKS:
            values = [run[key] for run in runs[name]]
            summary[name][key] = spread(values)
            cells.append(f"{summary[name][key]['median']:>10.2f} ({min(values):.2f}-{max(values):.2f})")
        print(f"{label:<34}" + "".join(f"{cell:>22}" for cell in cells))
    for name in BLOCKS:
        last = runs[name][-1]
        print(
            f"{name}, last run: execute {last['execute_us']['median']:.1f} us, raw track "
            f"{last['raw_track_us']['median']:.1f} us; {last['events_per_s']['plugin']:.0f} against "
            f"{last['events_per_s']['raw']:.0f} events/s; CPU per delivered event "
            f"{last['cpu_per_delivered_event_us']['plugin']:.1f} against {last['cpu_per_delivered_event_us']['raw']:.1f} us"
        )
    out = Path(__file__).resolve().parent / "results" / "execute.json"
    out.parent.mkdir(exist_ok=True)
    document = {
        "events": args.events,
        "latency_ms": args.latency_ms,
        "runs": args.runs,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "summary": summary,
        "each_run": runs,
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
