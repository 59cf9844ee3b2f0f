"""Constants and small helpers shared by the tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WRITE_KEY = "LEAKCANARYqbseg7Hn2Kx9Pw4Rt6Vz"  # recognisable, so leak scans can look for it
WORKSPACE = "ws-test"


def message(message_id: str) -> dict[str, object]:
    return {"type": "track", "event": "Chat Started", "userId": "u", "messageId": message_id}


def add_from_another_process(path: str, worker: int, count: int, go: Any) -> None:
    """Runs in a spawned process: a fresh interpreter, as a second QuickBot worker would be."""
    from quickbot_segment_plugin.deadletters import DeadLetterStore

    store = DeadLetterStore(path, prune_every=50)
    go.wait(60)  # both workers start writing together, not one after the other
    for n in range(count):
        if store.add(f"ws-{worker}", [message(f"p{worker}-{n}")], "retries_exhausted", "", 500, None, "", "") != 1:
            sys.exit(3)
    store.record_counters({(f"ws-{worker}", "executed"): count})


class Receiver(ThreadingHTTPServer):
    """A loopback stand-in for Segment that answers every POST with a fixed status.

    With `echo`, the answer carries the request body and its Authorization header, write key
    included, so a test can prove the key never makes it from a server's answer to the user.
    """

    daemon_threads = True

    def __init__(self, status: int, echo: bool = False, headers: dict[str, str] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.status = status
        self.echo = echo
        self.extra_headers = headers or {}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def bodies(self) -> list[bytes]:
        return [body for _, _, _, body in self.requests]


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.requests.append((self.command, self.path, dict(self.headers), body))
        echoed = body + b" " + self.headers.get("Authorization", "").encode()
        answer = echoed if self.server.echo else b'{"success": true}'
        self.send_response(self.server.status)
        for name, value in self.server.extra_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def receiver(status: int, echo: bool = False, headers: dict[str, str] | None = None) -> Iterator[Receiver]:
    server = Receiver(status, echo, headers)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
