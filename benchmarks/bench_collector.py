"""How fast segment-analytics-python can deliver to the embedded collector.

Two questions, each answered as a ratio against a baseline measured in the same run:
1. Per-request round trip of the library's own `post()` against the collector (one write,
   TCP_NODELAY) versus a textbook `http.server` receiver that writes headers and body
   separately (Nagle meets delayed ACK). The collector must not be the thing a benchmark
   of the plugin ends up measuring.
2. End-to-end throughput of one `Client` delivering 20,000 events into the collector
   (parsed, checked, stored in SQLite) versus the same client against a receiver that only
   counts (benchmarks/receiver.py's idea, inlined here so this script stands alone).

Run: python benchmarks/bench_collector.py
Writes benchmarks/results/collector.json.
"""

from __future__ import annotations

import atexit
import json
import platform
import socket
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from segment.analytics import Client
from segment.analytics.request import post

from quickbot_segment_plugin.collector.service import Collector

WRITE_KEY = "wk_bench_collector_01"
RESULTS = Path(__file__).parent / "results" / "collector.json"


class _SplitWriteHandler(BaseHTTPRequestHandler):
    """The textbook receiver: headers flushed by end_headers(), then the body: two writes."""

    protocol_version = "HTTP/1.1"
    counted = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        batch = json.loads(body).get("batch", [])
        type(self).counted += len(batch)
        answer = b'{"success": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _CountingHandler(_SplitWriteHandler):
    """Parses and counts, answers in one write with TCP_NODELAY: the cheapest honest receiver."""

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).counted += len(json.loads(body).get("batch", []))
        self.wfile.write(
            b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"success":true}'
        )


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def round_trip_ms(url: str, requests: int) -> float:
    """Median milliseconds for one library `post()` of a one-event batch (connection reused)."""
    event = {"type": "track", "userId": "u", "event": "Ping", "messageId": "m", "timestamp": "2024-01-01T00:00:00Z"}
    post(WRITE_KEY, host=url, batch=[event])  # open the keep-alive connection
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        post(WRITE_KEY, host=url, batch=[event])
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def client_throughput(url: str, events: int) -> float:
    """Events per second for one default-configured Client, from first call to flushed."""
    client = Client(WRITE_KEY, host=url, max_queue_size=events, upload_interval=0.05)
    started = time.perf_counter()
    for i in range(events):
        client.track(f"user-{i % 100}", "Bench", {"i": i, "plan": "pro"})
    client.flush()
    elapsed = time.perf_counter() - started
    client.join()
    atexit.unregister(client.join)
    return events / elapsed


def main() -> None:
    rows: list[dict[str, Any]] = []

    split_server, split_url = _serve(_SplitWriteHandler)
    counting_server, counting_url = _serve(_CountingHandler)
    with Collector() as collector:
        split_ms = round_trip_ms(split_url, 40)
        counting_ms = round_trip_ms(counting_url, 300)
        collector_ms = round_trip_ms(collector.url, 300)
        rows.append(
            {
                "measure": "post() round trip, median ms",
                "baseline": "one-write counting receiver",
                "baseline_value": round(counting_ms, 3),
                "collector_value": round(collector_ms, 3),
                "ratio_collector_over_baseline": round(collector_ms / counting_ms, 4),
            }
        )
        rows.append(
            {
                "measure": "post() round trip, median ms",
                "baseline": "split-write http.server",
                "baseline_value": round(split_ms, 3),
                "collector_value": round(collector_ms, 3),
                "ratio_collector_over_baseline": round(collector_ms / split_ms, 4),
            }
        )

        events = 20_000
        counting_rate = client_throughput(counting_url, events)
        collector_rate = client_throughput(collector.url, events)
        assert collector.wait_for(events, timeout=30)
        rows.append(
            {
                "measure": f"Client throughput, {events} events, events/s",
                "baseline": "counting receiver (no storage)",
                "baseline_value": round(counting_rate),
                "collector_value": round(collector_rate),
                "ratio_collector_over_baseline": round(collector_rate / counting_rate, 3),
            }
        )
    split_server.shutdown()
    counting_server.shutdown()

    print(f"{'measure':46} {'baseline':32} {'baseline':>10} {'collector':>10} {'ratio':>8}")
    for row in rows:
        print(
            f"{row['measure']:46} {row['baseline']:32} {row['baseline_value']:>10} "
            f"{row['collector_value']:>10} {row['ratio_collector_over_baseline']:>8}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"benchmark": "collector", "python": platform.python_version(), "rows": rows}, indent=2) + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
