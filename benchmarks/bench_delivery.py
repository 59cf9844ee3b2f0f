"""The delivery pool against the raw segment-analytics-python client, measured in the same run.

    python benchmarks/bench_delivery.py [--events 20000] [--repeat 3] [--latency-ms 0 50]

(a) enqueue latency: `DeliveryPool.enqueue` of a track message against the raw `Client.track`
    of the same payload with ready-made arguments, for both routes through the pool: a
    message in the library's final form, as `execute` builds it (checked, measured and
    queued as it is: delivery_final.py), and a plain wire-form message, as a replay or
    another caller may pass (mapping, timestamp parsing, context copy, then the library
    call). The clients run their consumers against the receiver at the same time, so all
    pay the same contention.
(b) delivery: events per second from the first call until the receiver has counted all N,
    through the pool (final-form messages; one workspace: the same single client) and
    through a raw client with the same batch settings; plus the pool spreading the same N
    over 10 workspaces (10 clients, 10 requests in flight), which a single raw client
    cannot do.

The receiver (benchmarks/receiver.py: answers in one write, TCP_NODELAY) runs in a child
process so that its work does not compete with the clients for this interpreter's GIL.
Prints a table and writes benchmarks/results/delivery.json. The ratios are the point.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import gzip
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from receiver import ReceiverProcess
from segment.analytics import Client

from quickbot_segment_plugin.core.message import library_context
from quickbot_segment_plugin.delivery.pool import DeliveryPool, DeliverySettings

HERE = Path(__file__).resolve().parent
WRITE_KEY = "benchmarkWriteKey0123456789"
BATCH_SIZE = 250
FLUSH_INTERVAL = 0.5
GZIP_BATCH_EVENTS = 1000  # the pool's default batch size (QUICKBOT_SEGMENT_BATCH_SIZE)


def wire_message(n: int, final: bool = True) -> dict[str, Any]:
    """A track message; `final` adds `context.library`, as `execute` does (the fast route)."""
    context: dict[str, Any] = {"quickbot": {"botId": "bot-1", "sessionId": f"s-{n % 97}"}}
    if final:
        context["library"] = library_context()
    return {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "timestamp": "2024-05-01T12:34:56.789+00:00",
        "userId": f"user-{n % 500}",
        "event": "Lead Qualified",
        "properties": {"plan": "premium", "score": n % 10, "source": "chatbot"},
        "context": context,
        "integrations": {},
    }


def raw_arguments(message: dict[str, Any]) -> dict[str, Any]:
    """The same payload as keyword arguments for `Client.track`, prepared in advance."""
    return {
        "user_id": message["userId"],
        "event": message["event"],
        "properties": message["properties"],
        "context": dict(message["context"]),
        "timestamp": datetime(2024, 5, 1, 12, 34, 56, 789000, tzinfo=UTC),
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
    # Bytes as well as events: the enqueue run queues both routes' messages on one client.
    return DeliverySettings().with_overrides(
        batch_size=BATCH_SIZE,
        flush_interval=FLUSH_INTERVAL,
        max_queue_size=queue_size,
        max_queue_bytes=queue_size * 1000,
        gzip=True,
    )


def measure_enqueue(receiver: ReceiverProcess, events: int, repeat: int, block: int = 500) -> dict[str, Any]:
    """ns per enqueue, the three sides interleaved in blocks so they share the same background.

    The raw client and the pool's client both exist and both consumers run throughout; the
    order rotates (raw, final, wire; final, wire, raw; ...) so no side always follows the
    same other side's burst of consumer work. Median over `repeat` runs.
    """
    runs: dict[str, list[float]] = {"raw": [], "final": [], "wire": []}
    for _ in range(repeat):
        final = [wire_message(n) for n in range(events)]
        wire = [wire_message(n, final=False) for n in range(events)]
        arguments = [raw_arguments(message) for message in final]
        client = raw_client(receiver.url, events + 1)
        pool = DeliveryPool(pool_settings(2 * events + 1))
        pool.enqueue("warm-up", WRITE_KEY, receiver.url, wire_message(0))  # the client exists, as in a server
        receiver.wait_for(1)
        receiver.reset()
        spent = dict.fromkeys(runs, 0)
        order = list(runs)
        gc.disable()
        for start in range(0, events, block):
            for side in order:
                began = time.perf_counter_ns()
                if side == "raw":
                    for kwargs in arguments[start : start + block]:
                        client.track(**kwargs)
                else:
                    for message in (final if side == "final" else wire)[start : start + block]:
                        pool.enqueue("bench", WRITE_KEY, receiver.url, message)
                spent[side] += time.perf_counter_ns() - began
            order = [*order[1:], order[0]]
        gc.enable()
        receiver.wait_for(3 * events)
        client.join()
        pool.shutdown(10)
        for side, total in spent.items():
            runs[side].append(total / events)
    raw, final_ns, wire_ns = (statistics.median(runs[side]) for side in ("raw", "final", "wire"))
    return {
        "raw_ns_per_op": raw,
        "pool_ns_per_op": final_ns,
        "pool_wire_form_ns_per_op": wire_ns,
        "ratio_pool_over_raw": final_ns / raw,
        "ratio_pool_wire_form_over_raw": wire_ns / raw,
    }


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


def gzip_levels(events: int = GZIP_BATCH_EVENTS) -> dict[str, dict[str, float]]:
    """CPU per event and body size of one full batch gzipped at the library's level 9 and the pool's 1."""
    body = json.dumps({"batch": [wire_message(n) for n in range(events)], "sentAt": "now"}).encode()
    measured = {}
    for level in (9, 1):
        best = float("inf")
        for _ in range(20):
            started = time.perf_counter()
            compressed = gzip.compress(body, compresslevel=level)
            best = min(best, time.perf_counter() - started)
        measured[f"level_{level}"] = {
            "us_per_event": best / events * 1e6,
            "bytes": len(compressed),
            "json_bytes": len(body),
        }
    return measured


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
                f"enqueue ns/op, final form ({latency_ms:g} ms server)",
                f"{enqueue['raw_ns_per_op']:,.0f}",
                f"{enqueue['pool_ns_per_op']:,.0f}",
                f"{enqueue['ratio_pool_over_raw']:.2f}",
            ),
            (
                f"enqueue ns/op, wire form ({latency_ms:g} ms server)",
                f"{enqueue['raw_ns_per_op']:,.0f}",
                f"{enqueue['pool_wire_form_ns_per_op']:,.0f}",
                f"{enqueue['ratio_pool_wire_form_over_raw']:.2f}",
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

    results["gzip"] = gzip_levels()
    print(f"gzip of a {GZIP_BATCH_EVENTS:,}-event batch body:")
    for level, row in results["gzip"].items():
        print(
            f"  {level.replace('_', ' ')}: {row['us_per_event']:.2f} us of CPU per event, "
            f"{row['bytes']:,} bytes from {row['json_bytes']:,} of JSON"
        )
    out = HERE / "results" / "delivery.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
