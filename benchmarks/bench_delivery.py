"""The delivery pool against the raw segment-analytics-python client, measured in the same run.

    python benchmarks/bench_delivery.py [--events 20000] [--repeat 3] [--latency-ms 0 50]

(a) enqueue latency: `DeliveryPool.enqueue` of a wire-form track message (mapping, timestamp
    parsing, context copy, client lookup, then the library call) against the raw
    `Client.track` of the same payload with ready-made arguments. Both clients run their
    consumer against the receiver at the same time, so both pay the same contention.
(b) delivery: events per second from the first call until the receiver has counted all N,
    through the pool (one workspace: the same single client) and through a raw client with
    the same batch settings; plus the pool spreading the same N over 10 workspaces (10
    clients, 10 requests in flight), which a single raw client cannot do.

The receiver (benchmarks/receiver.py: answers in one write, TCP_NODELAY) runs in a child
process so that its work does not compete with the clients for this interpreter's GIL.
Prints a table and writes benchmarks/results/delivery.json. The ratios are the point.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import statistics
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from receiver import ReceiverProcess
from segment.analytics import Client

from quickbot_segment_plugin.delivery import DeliveryPool, DeliverySettings

HERE = Path(__file__).resolve().parent
WRITE_KEY = "benchmarkWriteKey0123456789"
BATCH_SIZE = 250
FLUSH_INTERVAL = 0.5


def wire_message(n: int) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "timestamp": "2024-05-01T12:34:56.789+00:00",
        "userId": f"user-{n % 500}",
        "event": "Lead Qualified",
        "properties": {"plan": "premium", "score": n % 10, "source": "chatbot"},
        "context": {"quickbot": {"botId": "bot-1", "sessionId": f"s-{n % 97}"}},
        "integrations": {},
    }


def raw_arguments(message: dict[str, Any]) -> dict[str, Any]:
    """The same payload as keyword arguments for `Client.track`, prepared in advance."""
    return {
        "user_id": message["userId"],
        "event": message["event"],
        "properties": message["properties"],
        "context": dict(message["context"]),
        "timestamp": datetime(2024, 5, 1, 12, 34, 56, 789000, tzinfo=timezone.utc),
        "message_id": message["messageId"],
        "integrations": {},
    }


def raw_client(url: str, queue_size: int) -> Any:
    client = Client(
        WRITE_KEY,
        host=url,
        upload_size=BATCH_SIZE,
        upload_interval=FLUSH_INTERVAL,
        max_queue_size=queue_size,
        gzip=True,
        thread=1,
    )
    atexit.unregister(client.join)
    return client


def pool_settings(queue_size: int) -> DeliverySettings:
    return DeliverySettings().with_overrides(
        batch_size=BATCH_SIZE, flush_interval=FLUSH_INTERVAL, max_queue_size=queue_size, gzip=True
    )


def measure_enqueue(receiver: ReceiverProcess, events: int, repeat: int, block: int = 500) -> dict[str, Any]:
    """ns per enqueue, both sides interleaved in blocks so they share the same background.

    The raw client and the pool's client both exist and both consumers run throughout; the
    order alternates (raw, pool, pool, raw, ...) so neither side always follows the other's
    burst of consumer work. Median over `repeat` runs.
    """
    raw_runs, pool_runs = [], []
    for _ in range(repeat):
        messages = [wire_message(n) for n in range(events)]
        arguments = [raw_arguments(message) for message in messages]
        client = raw_client(receiver.url, events + 1)
        pool = DeliveryPool(pool_settings(events + 1))
        pool.enqueue("warm-up", WRITE_KEY, receiver.url, wire_message(0))  # the client exists, as in a server
        receiver.wait_for(1)
        receiver.reset()
        raw_ns = pool_ns = 0
        gc.disable()
        for index, start in enumerate(range(0, events, block)):
            sides = ("raw", "pool") if index % 2 == 0 else ("pool", "raw")
            for side in sides:
                if side == "raw":
                    began = time.perf_counter_ns()
                    for kwargs in arguments[start : start + block]:
                        client.track(**kwargs)
                    raw_ns += time.perf_counter_ns() - began
                else:
                    began = time.perf_counter_ns()
                    for message in messages[start : start + block]:
                        pool.enqueue("bench", WRITE_KEY, receiver.url, message)
                    pool_ns += time.perf_counter_ns() - began
        gc.enable()
        receiver.wait_for(2 * events)
        client.join()
        pool.shutdown(10)
        raw_runs.append(raw_ns / events)
        pool_runs.append(pool_ns / events)
    raw, pooled = statistics.median(raw_runs), statistics.median(pool_runs)
    return {"raw_ns_per_op": raw, "pool_ns_per_op": pooled, "ratio_pool_over_raw": pooled / raw}


def measure_delivery(receiver: ReceiverProcess, events: int, repeat: int) -> dict[str, Any]:
    """Median events/s from the first call until the receiver counted all of them."""
    raw_rates, pool_rates, spread_rates = [], [], []
    for _ in range(repeat):
        messages = [wire_message(n) for n in range(events)]
        arguments = [raw_arguments(message) for message in messages]

        client = raw_client(receiver.url, events + 1)
        receiver.reset()
        started = time.monotonic()
        for kwargs in arguments:
            client.track(**kwargs)
        raw_rates.append(events / (receiver.wait_for(events) - started))
        client.join()

        for workspaces, rates in ((1, pool_rates), (10, spread_rates)):
            pool = DeliveryPool(pool_settings(events + 1))
            receiver.reset()
            started = time.monotonic()
            for n, message in enumerate(messages):
                pool.enqueue(f"bench-{n % workspaces}", WRITE_KEY, receiver.url, message)
            rates.append(events / (receiver.wait_for(events) - started))
            pool.shutdown(10)
    raw = statistics.median(raw_rates)
    return {
        "raw_events_per_s": raw,
        "pool_events_per_s": statistics.median(pool_rates),
        "pool_10_workspaces_events_per_s": statistics.median(spread_rates),
        "ratio_pool_over_raw": statistics.median(pool_rates) / raw,
        "ratio_pool_10_workspaces_over_raw": statistics.median(spread_rates) / raw,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 50.0])
    args = parser.parse_args()

    results: dict[str, Any] = {
        "events": args.events,
        "repeat": args.repeat,
        "batch_size": BATCH_SIZE,
        "flush_interval": FLUSH_INTERVAL,
        "python": sys.version.split()[0],
        "runs": [],
    }
    rows = []
    for latency_ms in args.latency_ms:
        receiver = ReceiverProcess(latency_ms / 1000)
        try:
            enqueue = measure_enqueue(receiver, args.events, args.repeat)
            delivery = measure_delivery(receiver, args.events, args.repeat)
        finally:
            receiver.close()
        results["runs"].append({"receiver_latency_ms": latency_ms, "enqueue": enqueue, "delivery": delivery})
        rows += [
            (
                f"enqueue ns/op ({latency_ms:g} ms server)",
                f"{enqueue['raw_ns_per_op']:,.0f}",
                f"{enqueue['pool_ns_per_op']:,.0f}",
                f"{enqueue['ratio_pool_over_raw']:.2f}",
            ),
            (
                f"delivered events/s, 1 workspace ({latency_ms:g} ms)",
                f"{delivery['raw_events_per_s']:,.0f}",
                f"{delivery['pool_events_per_s']:,.0f}",
                f"{delivery['ratio_pool_over_raw']:.2f}",
            ),
            (
                f"delivered events/s, 10 workspaces ({latency_ms:g} ms)",
                f"{delivery['raw_events_per_s']:,.0f}",
                f"{delivery['pool_10_workspaces_events_per_s']:,.0f}",
                f"{delivery['ratio_pool_10_workspaces_over_raw']:.2f}",
            ),
        ]

    header = ("measure", "raw Client", "DeliveryPool", "pool/raw")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    print(f"N={args.events} events, batch {BATCH_SIZE}, median of {args.repeat}")
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)))

    out = HERE / "results" / "delivery.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
