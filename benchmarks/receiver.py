"""A minimal Segment-compatible receiver for benchmarks: counts events, stores nothing.

The embedded collector stores every event in SQLite, which is right for tests and demos but
would make the receiver the bottleneck of a throughput benchmark. This one parses each batch,
counts it, optionally waits `latency` seconds (a real round trip to Segment), and answers in
one write with TCP_NODELAY (a split header/body write costs ~40 ms per request on loopback).

The latency is a sleep in each request's own handler thread (ThreadingHTTPServer), so
concurrent requests wait concurrently, as they would on the internet: a client with several
requests in flight is not serialized by the receiver. `max_concurrent` records the most
requests that were being answered at once; `GET /_stats` returns the counters as JSON.
"""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RESPONSE = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"success":true}'


class CountingReceiver:
    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.events = 0
        self.requests = 0
        self.message_ids: set[str] = set()
        self.in_flight = 0
        self.max_concurrent = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                with receiver._lock:
                    receiver.in_flight += 1
                    receiver.max_concurrent = max(receiver.max_concurrent, receiver.in_flight)
                try:
                    body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                    if self.headers.get("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    batch: list[dict[str, Any]] = json.loads(body).get("batch", [])
                    if receiver.latency:
                        time.sleep(receiver.latency)
                    with receiver._lock:
                        receiver.requests += 1
                        receiver.events += len(batch)
                        receiver.message_ids.update(message["messageId"] for message in batch)
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1
                self.wfile.write(RESPONSE)

            def do_GET(self) -> None:
                body = json.dumps(receiver.stats()).encode()
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                self.wfile.write(head.encode() + body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CountingReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.events >= count:
                return True
            time.sleep(0.002)
        return self.events >= count

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "events": self.events,
                "distinct": len(self.message_ids),
                "requests": self.requests,
                "max_concurrent": self.max_concurrent,
            }

    def reset(self) -> None:
        with self._lock:
            self.events = self.requests = self.max_concurrent = 0
            self.message_ids.clear()


_SERVE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from receiver import CountingReceiver
with CountingReceiver(latency=float(sys.argv[2])) as receiver:
    print(receiver.url, flush=True)
    for line in sys.stdin:
        if line.strip() == "reset":
            receiver.reset()
        print(json.dumps(receiver.stats()), flush=True)
"""


class ReceiverProcess:
    """A `CountingReceiver` in a child process, asked for its counters over a pipe.

    Throughput benchmarks run the receiver apart from the contenders, so its parsing and
    counting never compete with them for this process's GIL.
    """

    def __init__(self, latency: float) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(Path(__file__).resolve().parent), str(latency)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self.url = self._process.stdout.readline().strip()

    def _ask(self, command: str) -> dict[str, int]:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        answer: dict[str, int] = json.loads(self._process.stdout.readline())
        return answer

    def stats(self) -> dict[str, int]:
        return self._ask("stats")

    def reset(self) -> None:
        self._ask("reset")

    def wait_for(self, count: int, timeout: float = 300.0) -> float:
        """Monotonic time at which `count` events had arrived (polled every millisecond)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats()["events"] >= count:
                return time.monotonic()
            time.sleep(0.001)
        raise TimeoutError(f"the receiver got {self.stats()['events']} of {count} events")

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(10)

    def __enter__(self) -> ReceiverProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
