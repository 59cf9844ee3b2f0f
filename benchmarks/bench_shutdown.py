"""How late `DeliveryPool.shutdown(t)` returns, over many runs of the shutdown test matrix.

    python benchmarks/bench_shutdown.py [--runs 5] [--cases full dead 3000 3000-all 10000 store]

tests/test_shutdown.py asserts the deadline with a margin that a busy machine cannot break;
this script measures how close the code really gets. For each case of that matrix it runs
`shutdown(t)` `--runs` times and reports the overrun (elapsed - t, negative when it returned
early) as median and max, what became of the events (delivered at the collector or
dead-lettered, checked exactly as the test checks them), and for 3,000 workspaces with one
event each the time until all were delivered (a deadline long enough that none is cut).

The cases:
- full: one workspace whose queue filled against an endpoint answering after 200 ms, shutdown(1.0).
- dead: 200 events of 20 workspaces to a port nobody listens on, shutdown(1.0).
- 3000: 3,000 workspaces with one event each, shutdown(2.0): the 2 s goal of issue 18.
- 3000-all: the same with shutdown(30.0): the time until all 3,000 were delivered.
- 10000: 10,000 workspaces with one event each, shutdown(1.0).
- store: 1,500 workspaces, shutdown(1.0) with the SQLite dead-letter store as the callback.

The collector runs in its own process (`quickbot-segment collector`), as in the test and as
Segment does in production: the delivery threads do not share an interpreter lock with it.
Prints a table and writes benchmarks/results/shutdown.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quickbot_segment_plugin.core import Undeliverable
from quickbot_segment_plugin.deadletters import DeadLetterStore
from quickbot_segment_plugin.deadletters.filters import DeadLetterFilter
from quickbot_segment_plugin.deadletters.recorder import DeadLetterRecorder
from quickbot_segment_plugin.delivery.pool import DeliveryPool, DeliverySettings

HERE = Path(__file__).resolve().parent
CLI = str(Path(sys.executable).with_name("quickbot-segment"))
WRITE_KEY = "benchmarkWriteKey0123456789"
CASES = ("full", "dead", "3000", "3000-all", "10000", "store")


class DeadLetters:
    """A plain callback keeping the reports, as the test's."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reports: list[Undeliverable] = []

    def __call__(self, undeliverable: Undeliverable) -> None:
        with self.lock:
            self.reports.append(undeliverable)

    def ids(self, *, in_doubt: bool | None = None) -> list[str]:
        with self.lock:
            return [
                str(message["messageId"])
                for report in self.reports
                if in_doubt is None or report.in_doubt is in_doubt
                for message in report.messages
            ]


@contextmanager
def collector_process(directory: str, latency: float = 0.0) -> Iterator[str]:
    command = [CLI, "collector", "--port", "0", "--max-connections", "512", "--db", f"{directory}/c.sqlite3"]
    if latency:
        command += ["--latency", str(latency)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    try:
        found = re.search(r"http://127\.0\.0\.1:\d+", process.stdout.readline())
        assert found, "the collector did not say where it listens"
        yield found.group(0)
    finally:
        process.terminate()
        process.wait(10)


def stored_ids(url: str, prefix: str) -> list[str]:
    ids: list[str] = []
    offset: int | None = 0
    while offset is not None:
        with urllib.request.urlopen(f"{url}/events?limit=1000&offset={offset}", timeout=30) as response:
            page = json.loads(response.read())
        ids.extend(str(event["message_id"]) for event in page["events"])
        offset = page["next_offset"]
    return [message_id for message_id in ids if message_id.startswith(prefix)]


def track(message_id: str) -> dict[str, Any]:
    return {"type": "track", "event": "Chat Started", "userId": "u", "messageId": message_id}


def exact(sent: list[str], delivered: list[str], dead: list[str], in_doubt: list[str]) -> bool:
    """Every event delivered or dead-lettered, once each; both only when in doubt."""
    return (
        len(dead) == len(set(dead))
        and len(delivered) == len(set(delivered))
        and set(delivered) | set(dead) == set(sent)
        and set(delivered) & set(dead) <= set(in_doubt)
    )


def one_event_per_workspace(pool: DeliveryPool, url: str, prefix: str, count: int) -> list[str]:
    sent = [f"{prefix}{n}" for n in range(count)]
    for n, message_id in enumerate(sent):
        assert pool.enqueue(f"ws-{n}", f"{WRITE_KEY}{n:05d}", url, track(message_id)).accepted
    return sent


def run_case(case: str, run: int, directory: str, urls: dict[str, str]) -> dict[str, Any]:
    """One shutdown: its deadline, elapsed time and what became of the events."""
    prefix = f"{case}-{run}-"
    dead = DeadLetters()
    settle = 0.5  # a request open at the deadline may still land before the collector is asked
    if case == "full":
        url = urls["slow"]
        settings = DeliverySettings().with_overrides(max_queue_size=2000, batch_size=20, max_in_flight=2)
        pool = DeliveryPool(settings, dead)
        sent = [f"{prefix}{n}" for n in range(2500)]
        for message_id in sent:
            pool.enqueue("ws", WRITE_KEY, url, track(message_id))
        timeout = 1.0
    elif case == "dead":
        url = urls["dead"]
        pool = DeliveryPool(DeliverySettings(), dead)
        sent = [f"{prefix}{n}" for n in range(200)]
        for n, message_id in enumerate(sent):
            pool.enqueue(f"ws-{n % 20}", WRITE_KEY, url, track(message_id))
        time.sleep(0.3)
        timeout = 1.0
    elif case == "store":
        url = urls["fast"]
        store = DeadLetterStore(f"{directory}/dead-{run}.sqlite3")
        pool = DeliveryPool(DeliverySettings(), DeadLetterRecorder(store))
        sent = one_event_per_workspace(pool, url, prefix, 1500)
        timeout = 1.0
    else:
        url = urls["fast"]
        count = 10_000 if case == "10000" else 3000
        pool = DeliveryPool(DeliverySettings(), dead)
        sent = one_event_per_workspace(pool, url, prefix, count)
        timeout = {"3000": 2.0, "3000-all": 30.0, "10000": 1.0}[case]
    started = time.monotonic()
    report = pool.shutdown(timeout)
    elapsed = time.monotonic() - started
    if case == "dead":
        delivered: list[str] = []
    else:
        time.sleep(settle)
        delivered = stored_ids(url, prefix)
    if case == "store":
        # The store keeps no in-doubt mark from a shutdown report: as the test, only "each once, none lost".
        dead_ids = [row.message_id for row in store.iter(DeadLetterFilter())]
        in_doubt = dead_ids
    else:
        dead_ids, in_doubt = dead.ids(), dead.ids(in_doubt=True)
    return {
        "timeout": timeout,
        "elapsed": elapsed,
        "overrun_ms": (elapsed - timeout) * 1000,
        "sent": len(sent),
        "delivered": len(set(delivered) & set(sent)),
        "dead_lettered": len(dead_ids),
        "undelivered_reported": report.undelivered,
        "exact": exact(sent, delivered, dead_ids, in_doubt),
    }


def summarize(case: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    overruns = [run["overrun_ms"] for run in runs]
    elapsed = [run["elapsed"] for run in runs]
    return {
        "case": case,
        "timeout": runs[0]["timeout"],
        "runs": len(runs),
        "overrun_ms_median": statistics.median(overruns),
        "overrun_ms_max": max(overruns),
        "elapsed_s_median": statistics.median(elapsed),
        "elapsed_s_max": max(elapsed),
        "delivered_median": statistics.median(run["delivered"] for run in runs),
        "dead_lettered_median": statistics.median(run["dead_lettered"] for run in runs),
        "all_exact": all(run["exact"] for run in runs),
        "each": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    args = parser.parse_args()
    # Thousands of "queue full" and deadline lines would cost the runs time they are measuring.
    for name in ("segment", "quickbot_segment_plugin"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as directory:
        dead_dir, slow_dir, fast_dir = (Path(directory) / name for name in ("dead", "slow", "fast"))
        for path in (dead_dir, slow_dir, fast_dir):
            path.mkdir()
        with collector_process(str(dead_dir)) as dead_url:
            pass  # nothing listens there once it stopped
        with collector_process(str(slow_dir), latency=0.2) as slow_url, collector_process(str(fast_dir)) as fast_url:
            urls = {"dead": dead_url, "slow": slow_url, "fast": fast_url}
            for case in args.cases:
                runs = []
                for run in range(args.runs):
                    runs.append(run_case(case, run, directory, urls))
                    print(f"  {case} run {run + 1}: {runs[-1]['overrun_ms']:+.0f} ms", file=sys.stderr, flush=True)
                results.append(summarize(case, runs))
    print_table(results)
    output = HERE / "results" / "shutdown.json"
    output.parent.mkdir(exist_ok=True)
    machine = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    output.write_text(
        json.dumps({"date": datetime.now(UTC).isoformat(), "machine": machine, "cases": results}, indent=2) + "\n"
    )
    print(f"\nwritten to {output.relative_to(HERE.parent)}")


def print_table(results: list[dict[str, Any]]) -> None:
    row: Callable[..., str] = "{:<9} {:>6} {:>4} {:>14} {:>11} {:>11} {:>10} {:>8} {:>6}".format
    print(row("case", "t (s)", "runs", "overrun median", "overrun max", "elapsed max", "delivered", "dead", "exact"))
    for result in results:
        print(
            row(
                result["case"],
                f"{result['timeout']:g}",
                result["runs"],
                f"{result['overrun_ms_median']:+.0f} ms",
                f"{result['overrun_ms_max']:+.0f} ms",
                f"{result['elapsed_s_max']:.2f} s",
                f"{result['delivered_median']:g}",
                f"{result['dead_lettered_median']:g}",
                "yes" if result["all_exact"] else "NO",
            )
        )


if __name__ == "__main__":
    main()
