"""What counting and dead-lettering cost, against the simplest thing that could do the same job.

    python benchmarks/bench_deadletters.py [--rows 200000]

Counters (the `execute` hot path): `Counters.inc_each` of the two counters every queued execution
adds, against the same two bare dict increments with no lock.
Dead letters (the failure path, on a delivery thread): `DeadLetterStore.add` of one event and
of a batch of 100, against a raw `INSERT` of the same JSON through sqlite3 in the same mode
(WAL, synchronous=NORMAL, one transaction per call), so the ratio is the price of cleaning,
redaction and the upsert. Retention: one `prune()` with nothing to remove on a store of
`--rows` rows (the row count is the part that grows with the store).
Prints a table and writes benchmarks/results/deadletters.json; the ratios are the point.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import per_call_us

from quickbot_segment_plugin.core.counters import EXECUTED, QUEUED, Counters
from quickbot_segment_plugin.deadletters import DeadLetterStore


def message(n: int) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": f"user-{n % 1000}",
        "messageId": f"bench-{n}",
        "timestamp": "2024-05-01T12:00:00.000+00:00",
        "properties": {"total": n, "currency": "EUR", "items": ["a", "b", "c"], "coupon": None},
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}, "locale": "fr-FR"},
        "integrations": {},
    }


def counter_cases(rounds: int) -> dict[str, float]:
    counters = Counters()
    plain: dict[tuple[str, str], int] = {}

    def bare() -> None:
        for name in ("executed", "queued"):
            key = ("ws-1", name)
            plain[key] = plain.get(key, 0) + 1

    return {
        "two dict increments, no lock (baseline)": per_call_us(bare, rounds),
        "Counters.inc_each (executed, queued)": per_call_us(
            lambda: counters.inc_each("ws-1", (EXECUTED, QUEUED)), rounds
        ),
    }


def store_cases(directory: Path, rounds: int) -> dict[str, float]:
    raw = sqlite3.connect(directory / "raw.sqlite3", isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=NORMAL")
    raw.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, message_id TEXT, message TEXT)")
    store = DeadLetterStore(directory / "dl.sqlite3", prune_every=10**9, prune_interval=10**9)
    counter = iter(range(10**9))

    def raw_insert() -> None:
        n = next(counter)
        raw.execute("BEGIN IMMEDIATE")
        raw.execute("INSERT INTO t (message_id, message) VALUES (?, ?)", (f"bench-{n}", json.dumps(message(n))))
        raw.execute("COMMIT")

    def add_one() -> None:
        store.add("ws-1", [message(next(counter))], "retries_exhausted", "HTTP 500", 500, "qbseg.v1.k.t", "", "")

    def add_batch() -> None:
        store.add(
            "ws-1", [message(next(counter)) for _ in range(100)], "retries_exhausted", "HTTP 500", 500, None, "", ""
        )

    results = {
        "raw sqlite INSERT, 1 event (baseline)": per_call_us(raw_insert, rounds),
        "DeadLetterStore.add, 1 event": per_call_us(add_one, rounds),
        "DeadLetterStore.add, 100 events (per event)": per_call_us(add_batch, max(1, rounds // 100)) / 100,
    }
    raw.close()
    store.close()
    return results


def prune_case(directory: Path, rows: int) -> float:
    store = DeadLetterStore(directory / "big.sqlite3", prune_every=10**9, prune_interval=10**9)
    batch = 2000
    for start in range(0, rows, batch):
        store.add("ws-1", [message(n) for n in range(start, min(rows, start + batch))], "queue_full")
    started = time.perf_counter()
    store.prune()
    elapsed = (time.perf_counter() - started) * 1000
    store.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2000, help="store calls per measurement")
    parser.add_argument("--rows", type=int, default=200_000, help="rows in the store for the prune timing")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp)
        counters = counter_cases(args.rounds * 100)
        store = store_cases(directory, args.rounds)
        prune_ms = prune_case(directory, args.rows)

    rows = []
    for group in (counters, store):
        baseline = next(value for name, value in group.items() if "baseline" in name)
        rows += [(name, value, value / baseline) for name, value in group.items()]
    print(f"{'case':<48} {'us/call':>10} {'x baseline':>11}")
    for name, value, ratio in rows:
        print(f"{name:<48} {value:>10.2f} {ratio:>11.2f}")
    print(f"{f'prune() with nothing to remove, {args.rows:,} rows':<48} {prune_ms * 1000:>10.0f}")

    results = {
        "benchmark": "deadletters",
        "measured_at": datetime.now(UTC).isoformat(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "machine": platform.machine(),
        "cases": [
            {"name": name, "us_per_call": round(value, 3), "ratio": round(ratio, 2)} for name, value, ratio in rows
        ],
        "prune_ms": {"rows": args.rows, "milliseconds": round(prune_ms, 1)},
    }
    out = Path(__file__).parent / "results" / "deadletters.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
