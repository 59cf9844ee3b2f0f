"""What the live debugger costs the collector, as ratios against baselines measured in the same run.

1. Keeping the raw batch: storing 100-event requests with their raw batch (the body
   re-serialized without the write key, one more row) versus storing the same messages
   without it, as the collector did before the debugger; first the store alone, then the
   whole acceptance of a request (parse, check, store).
2. One open page: each poll is `GET /events?after_id=...` (nothing new, the common case) and,
   every 2 s or when events arrive, `GET /summary`. Measured over real HTTP against a store of
   100,000 events, next to `GET /events?limit=1` (the cheapest read) as the baseline, and as
   the share of one core an open page keeps busy at the page's 500 ms poll interval.

Run: python benchmarks/bench_debugger.py
Writes benchmarks/results/debugger.json.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from quickbot_segment_plugin.collector.ingest import ingest, without_write_keys
from quickbot_segment_plugin.collector.service import Collector
from quickbot_segment_plugin.collector.store import EventStore, RawBatch
from quickbot_segment_plugin.core import segment_timestamp

RESULTS = Path(__file__).parent / "results" / "debugger.json"
STORED = 100_000
BATCH = 100
POLL_INTERVAL_S = 0.5
SUMMARY_INTERVAL_S = 2.0


def a_message(n: int) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Lead Qualified",
        "userId": f"user-{n % 977}",
        "messageId": str(uuid.uuid4()),
        "properties": {"score": n % 10, "plan": "premium", "source": "chatbot"},
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}, "quickbot": {"botId": "b"}},
        "timestamp": "2024-05-01T12:00:00.000+00:00",
    }


def store_batches(path: Path, batches: int, keep_raw: bool) -> float:
    """Seconds to store `batches` requests of BATCH messages."""
    store = EventStore(path)
    now = segment_timestamp(datetime.now(UTC))
    bodies = [{"batch": [a_message(n) for n in range(BATCH)], "writeKey": "wk", "sentAt": now} for _ in range(batches)]
    started = time.perf_counter()
    for body in bodies:
        raw = RawBatch("/v1/batch", 30_000, json.dumps(without_write_keys(body))) if keep_raw else None
        store.add(
            body["batch"],
            [[] for _ in range(BATCH)],
            received_at=now,
            batch_id=uuid.uuid4().hex,
            write_key_fingerprint="sha256:000000000000",
            raw_batch=raw,
        )
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


def handle_requests(path: Path, requests_count: int, keep_raw: bool) -> float:
    """Seconds to accept `requests_count` 100-event bodies as the collector does: ingest, then store."""
    store = EventStore(path)
    now = segment_timestamp(datetime.now(UTC))
    bodies = [
        json.dumps({"batch": [a_message(n) for n in range(BATCH)], "writeKey": "wk", "sentAt": now}).encode()
        for _ in range(requests_count)
    ]
    started = time.perf_counter()
    for body in bodies:
        accepted = ingest("batch", body, content_encoding=None, authorization=None, received_at=datetime.now(UTC))
        store.add(
            accepted.messages,
            accepted.warnings,
            received_at=now,
            batch_id=uuid.uuid4().hex,
            write_key_fingerprint=accepted.write_key_fingerprint,
            raw_batch=RawBatch("/v1/batch", len(body), json.dumps(accepted.body)) if keep_raw else None,
        )
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


def median_ms(url: str, repeats: int) -> float:
    session = requests.Session()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = session.get(url, timeout=30)
        response.raise_for_status()
        timings.append((time.perf_counter() - started) * 1000)
    session.close()
    return statistics.median(timings)


def main() -> None:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        store_batches(Path(folder) / "warm.sqlite3", 20, True)  # warm up imports and caches
        plain = min(store_batches(Path(folder) / f"plain{n}.sqlite3", 200, False) for n in range(3))
        kept = min(store_batches(Path(folder) / f"raw{n}.sqlite3", 200, True) for n in range(3))
        rows.append(
            {
                "measure": f"store 200 requests of {BATCH} events, ms",
                "baseline": "messages only (before the debugger)",
                "baseline_value": round(plain * 1000, 1),
                "value": round(kept * 1000, 1),
                "ratio": round(kept / plain, 3),
            }
        )

        plain = min(handle_requests(Path(folder) / f"hplain{n}.sqlite3", 200, False) for n in range(3))
        kept = min(handle_requests(Path(folder) / f"hraw{n}.sqlite3", 200, True) for n in range(3))
        rows.append(
            {
                "measure": f"accept 200 requests of {BATCH} events (ingest + store), ms",
                "baseline": "messages only (before the debugger)",
                "baseline_value": round(plain * 1000, 1),
                "value": round(kept * 1000, 1),
                "ratio": round(kept / plain, 3),
            }
        )

        path = Path(folder) / "big.sqlite3"
        store = EventStore(path)
        now = segment_timestamp(datetime.now(UTC))
        for start in range(0, STORED, 1000):
            store.add(
                [a_message(n) for n in range(start, start + 1000)],
                [[] for _ in range(1000)],
                received_at=now,
                batch_id=uuid.uuid4().hex,
                write_key_fingerprint="sha256:000000000000",
            )
        store.close()
        with Collector(path) as collector:
            newest = collector.events(limit=1)[0]["id"]
            base = collector.url
            cheapest = median_ms(f"{base}/events?limit=1", 50)
            poll = median_ms(f"{base}/events?limit=1000&after_id={newest}", 50)
            summary = median_ms(f"{base}/summary?minutes=30", 20)
            first_load = median_ms(f"{base}/events?limit=1000", 10)
        for measure, value in (
            ("poll with nothing new: GET /events?after_id=", poll),
            ("summary strip: GET /summary", summary),
            ("first load: GET /events?limit=1000", first_load),
        ):
            rows.append(
                {
                    "measure": f"{measure}, median ms ({STORED:,} stored)",
                    "baseline": "GET /events?limit=1",
                    "baseline_value": round(cheapest, 2),
                    "value": round(value, 2),
                    "ratio": round(value / cheapest, 2),
                }
            )
        # Per poll interval: one poll, plus a share of the summary the page fetches every SUMMARY_INTERVAL_S.
        per_interval = poll + summary * POLL_INTERVAL_S / SUMMARY_INTERVAL_S
        rows.append(
            {
                "measure": "one idle open page: ms of work per poll interval",
                "baseline": "the 500 ms poll interval",
                "baseline_value": POLL_INTERVAL_S * 1000,
                "value": round(per_interval, 2),
                "ratio": round(per_interval / (POLL_INTERVAL_S * 1000), 4),
            }
        )

    print(f"{'measure':76} {'baseline':38} {'baseline':>10} {'value':>10} {'ratio':>8}")
    for row in rows:
        print(
            f"{row['measure']:76} {row['baseline']:38} {row['baseline_value']:>10} {row['value']:>10} {row['ratio']:>8}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"benchmark": "debugger", "python": platform.python_version(), "rows": rows}, indent=2)
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
