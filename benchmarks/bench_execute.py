"""`execute` against the raw segment-analytics-python client, measured in the same run.

    python benchmarks/bench_execute.py [--events 20000] [--latency-ms 0]

(a) latency: one `execute` of a track block (templates, typed values, host context) against
    the raw `Client.track` enqueue of the same payload; both go to a client whose consumer
    is running, so the comparison includes the same background contention.
(b) end to end: events per second from the first call to the last event received, for N
    events through `execute` and through the raw client with the same batch settings; the
    producer (one thread, one GIL) bounds both, so this is mostly (a) again. The delivery
    machinery alone, with the same payload on both sides, is `bench_delivery.py`.
The latency is also measured with cleaning and privacy turned off, to show what those
checks cost on top of rendering and enqueueing.
Prints a table and writes benchmarks/results/execute.json. Ratios, not absolute numbers,
are the point: both sides run on the same machine at the same moment.
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

from common import TRACK_OPTIONS as OPTIONS
from common import TRACK_VARIABLES as VARIABLES
from common import WORKSPACE, WRITE_KEY, block_under, p99, timed_us, use_local_segment
from receiver import ReceiverProcess
from segment.analytics import Client

from quickbot_segment_plugin.block import SegmentBlock

SETTINGS = {"upload_size": 100, "upload_interval": 0.05, "max_queue_size": 100_000, "gzip": True, "timeout": 15}


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


def _warm(block: SegmentBlock, context: dict[str, Any]) -> tuple[SegmentBlock, dict[str, Any]]:
    for _ in range(200):  # plan cache, credential cache, client creation, connection
        block.execute(OPTIONS, context)
    return block, context


def measure(events: int, latency_ms: float) -> dict[str, Any]:
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
        base = {"workspace_id": WORKSPACE, "variables": VARIABLES, "bot_id": "b"}
        # As operators run it (cleaning and privacy on), and with both turned off.
        block, context = _warm(
            *block_under({"QUICKBOT_SEGMENT_CLEANING": None, "QUICKBOT_SEGMENT_PRIVACY": None}, OPTIONS, base)
        )
        bare, bare_context = _warm(
            *block_under({"QUICKBOT_SEGMENT_CLEANING": "off", "QUICKBOT_SEGMENT_PRIVACY": "off"}, OPTIONS, base)
        )
        payload = block.execute(OPTIONS, {**context, "dry_run": True})["payload"]
        raw = _raw_client(receiver.url)
        for _ in range(200):
            _raw_track(raw, payload)
        receiver.wait_for(600, 30)

        # (a) latency, in interleaved rounds so drift hits all sides alike; each round ends with
        # its side's queue delivered, so every side is timed with its own delivery thread
        # working beside it and none with another side's left-over batches.
        plugin_us: list[float] = []
        bare_us: list[float] = []
        raw_us: list[float] = []
        for _ in range(5):
            plugin_us += timed_us(lambda: block.execute(OPTIONS, context), events // 10)
            block.pool().flush(60)
            bare_us += timed_us(lambda: bare.execute(OPTIONS, bare_context), events // 10)
            bare.pool().flush(60)
            raw_us += timed_us(lambda: _raw_track(raw, payload), events // 10)
            raw.flush()

        # (b) end to end: N conversations reaching the block, until Segment has them all
        receiver.reset()
        start = time.monotonic()
        for _ in range(events):
            block.execute(OPTIONS, context)
        plugin_rate = events / (receiver.wait_for(events, 300) - start)

        receiver.reset()
        start = time.monotonic()
        for _ in range(events):
            _raw_track(raw, payload)
        raw_rate = events / (receiver.wait_for(events, 300) - start)

        block.shutdown(10)
        bare.shutdown(10)
        raw.join()

    raw_median = statistics.median(raw_us)
    return {
        "events": events,
        "latency_ms": latency_ms,
        "execute_us": {"median": statistics.median(plugin_us), "p99": p99(plugin_us)},
        "execute_without_checks_us": {"median": statistics.median(bare_us), "p99": p99(bare_us)},
        "raw_enqueue_us": {"median": raw_median, "p99": p99(raw_us)},
        "latency_ratio_median": statistics.median(plugin_us) / raw_median,
        "latency_ratio_without_checks": statistics.median(bare_us) / raw_median,
        "plugin_events_per_s": plugin_rate,
        "raw_events_per_s": raw_rate,
        "end_to_end_ratio": plugin_rate / raw_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    result = measure(args.events, args.latency_ms)
    print(f"execute vs raw segment-analytics-python ({args.events} events, receiver latency {args.latency_ms} ms)")
    print(f"{'measure':<44}{'plugin':>12}{'raw client':>12}{'ratio':>8}")
    raw = result["raw_enqueue_us"]
    for label, key in (
        ("execute, median (us)", "execute_us"),
        ("  cleaning + privacy off, median (us)", "execute_without_checks_us"),
    ):
        print(
            f"{label:<44}{result[key]['median']:>12.1f}{raw['median']:>12.1f}{result[key]['median'] / raw['median']:>8.2f}"
        )
    print(
        f"{'execute, p99 (us)':<44}{result['execute_us']['p99']:>12.1f}{raw['p99']:>12.1f}{result['execute_us']['p99'] / raw['p99']:>8.2f}"
    )
    print(
        f"{'end to end events/s (execute + delivery)':<44}{result['plugin_events_per_s']:>12.0f}"
        f"{result['raw_events_per_s']:>12.0f}{result['end_to_end_ratio']:>8.2f}"
    )
    out = Path(__file__).resolve().parent / "results" / "execute.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
