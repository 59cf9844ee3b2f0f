"""The collector's HTTP/1.1 server: bounded, keep-alive, one write per response.

Three properties matter more here than in a textbook `http.server` use:
- Each response goes out in a single `sendall` on a TCP_NODELAY socket. A header write
  followed by a body write meets the client's delayed ACK (Nagle), which costs
  segment-analytics-python about 40 ms a request on loopback and would make every
  benchmark against the collector measure the collector.
- Connections are kept alive (the library's `requests.Session` reuses them) but each one
  holds a thread, so threads are capped (`max_connections`). Idle connections time out,
  and at the cap the longest-idle one is closed to make room (a client reconnects; nothing
  was in flight on it). A request's head must arrive within `head_timeout` in total and
  its body within `body_timeout`, so a client that trickles bytes cannot keep its slot.
  Only when every slot is busy with a request does a new connection wait briefly, in its
  own thread, then get `503` with `Retry-After`; the accept loop itself never waits.
- Nothing a client sends can kill the server: bodies are bounded before they are read,
  framing that two parsers could read differently (Content-Length with Transfer-Encoding,
  numbers that are not plain ASCII digits) is refused and the connection closed,
  unreadable requests get a 4xx, and handler errors are logged, never raised.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import logging
import math
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .faults import reason_phrase
from .wire import DeadlineReader, ascii_decimal, ascii_hex

logger = logging.getLogger("quickbot_segment_plugin.collector")

# No request body is read past this many bytes (compressed or not); Segment's largest
# accepted body is 500 KB, so anything bigger is answered 400 without being read.
MAX_BODY_BYTES = 1024 * 1024
# Pending connections the kernel queues while the accept loop is busy: a burst from
# analytics-node opens about one connection per 15 events at once.
LISTEN_BACKLOG = 1024


@dataclass
class Reply:
    """What to answer; `drop` closes the connection without answering, after `delay`."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    drop: bool = False
    close: bool = False


def json_reply(status: int, value: Any, **options: Any) -> Reply:
    """A JSON answer; a non-finite number (from a file an older collector wrote) becomes a
    string, so every answer parses as JSON."""
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(value), allow_nan=False)
    return Reply(status, text.encode("utf-8"), **options)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def error_reply(status: int, code: str, message: str, **options: Any) -> Reply:
    return json_reply(status, {"success": False, "code": code, "message": message}, **options)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    body_error: Reply | None
    client_host: str
    local_port: int = 0  # the port the collector listens on, for same-origin checks


Application = Callable[[Request], Reply]


def is_loopback(host: str) -> bool:
    """Whether an address (a client's, or one to bind) is this machine's loopback.

    The admin endpoints trust loopback callers only: the collector may be bound to a
    public interface with --allow-remote, and a fault script is a way to make it drop data.
    """
    candidate = host.strip().strip("[]").split("%", 1)[0]
    if candidate.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class CollectorServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer whose threads are counted, capped and stoppable."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        application: Application,
        *,
        max_connections: int,
        idle_timeout: float,
        body_timeout: float,
        busy_wait: float = 2.0,
        head_timeout: float = 10.0,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.application = application
        self.idle_timeout = idle_timeout
        self.body_timeout = body_timeout
        self.head_timeout = head_timeout
        self.busy_wait = busy_wait
        self.stopping = threading.Event()
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._guard = threading.Lock()
        self._live: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        self._serving = 0
        # Connections waiting for their next request, oldest first: the ones closed at the cap.
        self._idle: dict[socket.socket, float] = {}
        self.connections_accepted = 0
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host's FQDN (a DNS lookup) for nothing.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hands the connection to a thread at once; nothing here waits on a client."""
        self.connections_accepted += 1  # only the accept loop's thread writes it
        with self._guard:
            # Threads waiting for a slot are bounded too: past that, refuse without waiting.
            crowded = len(self._workers) >= 2 * self.max_connections
        if crowded:
            self._refuse_now(request)
            return
        worker = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="quickbot-collector-conn",
            daemon=True,
        )
        with self._guard:
            self._workers.add(worker)
        try:
            worker.start()
        except RuntimeError:  # cannot start a thread: answer nothing, keep serving
            with self._guard:
                self._workers.discard(worker)
            self.shutdown_request(request)

    def _take_slot(self) -> bool:
        if self._slots.acquire(blocking=False):
            return True
        self._close_longest_idle()
        deadline = time.monotonic() + self.busy_wait
        while not self.stopping.is_set():
            if self._slots.acquire(timeout=min(0.1, max(deadline - time.monotonic(), 0.0))):
                return True
            if time.monotonic() >= deadline:
                return False
        return False

    def _close_longest_idle(self) -> None:
        """Makes room at the cap: a connection between requests has nothing in flight."""
        with self._guard:
            if not self._idle:
                return
            oldest = min(self._idle, key=self._idle.__getitem__)
            del self._idle[oldest]
        with contextlib.suppress(OSError):
            oldest.shutdown(socket.SHUT_RDWR)

    def mark_idle(self, connection: socket.socket, idle: bool) -> bool:
        """Records a connection as waiting for a request (or not); False when it was closed
        to make room in the meantime."""
        with self._guard:
            if idle:
                self._idle[connection] = time.monotonic()
                return True
            return self._idle.pop(connection, None) is not None

    def _refuse_now(self, request: socket.socket) -> None:
        """A 503 that fits the socket's send buffer: sent without blocking, or not at all."""
        with contextlib.suppress(OSError):
            request.setblocking(False)
            request.send(render(_busy_reply(), head_only=False, close=True))
        self.shutdown_request(request)

    def _serve_connection(self, request: socket.socket, client_address: Any) -> None:
        served = False
        try:
            if not self._take_slot():
                with contextlib.suppress(OSError):
                    request.settimeout(1.0)
                    request.sendall(render(_busy_reply(), head_only=False, close=True))
                return
            served = True
            with self._guard:
                self._serving += 1
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._guard:
                self._workers.discard(threading.current_thread())
                self._idle.pop(request, None)
                if served:
                    self._serving -= 1
            if served:
                self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr for every reset connection.
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)

    def track(self, connection: socket.socket, live: bool) -> None:
        with self._guard:
            if live:
                self._live.add(connection)
            else:
                self._live.discard(connection)

    def close_connections(self, timeout: float) -> None:
        """Ends every open connection and waits for its thread (used by stop)."""
        self.stopping.set()
        with self._guard:
            live = list(self._live)
        for connection in live:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        while True:
            with self._guard:
                workers = list(self._workers)
            if not workers:
                return
            for worker in workers:
                worker.join(max(deadline - time.monotonic(), 0.0))
            if time.monotonic() >= deadline:
                logger.warning("%d collector connection thread(s) did not stop in time", len(workers))
                return

    @property
    def open_connections(self) -> int:
        """Connections holding a slot (being served, or kept alive between requests)."""
        with self._guard:
            return self._serving


def _busy_reply() -> Reply:
    return error_reply(
        503,
        "busy",
        "the collector is at its connection limit; retry shortly.",
        headers=[("Retry-After", "1")],
    )


def render(reply: Reply, *, head_only: bool, close: bool) -> bytes:
    """The whole response as one byte string, so it leaves in one write."""
    phrase = reason_phrase(reply.status, unknown="Status")
    lines = [
        f"HTTP/1.1 {reply.status} {phrase}",
        f"Content-Type: {reply.content_type}",
        f"Content-Length: {len(reply.body)}",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        *(f"{name}: {value}" for name, value in reply.headers),
    ]
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    return head if head_only else head + reply.body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CollectorServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile.close()  # the plain socket file: reads go through the deadline reader instead
        self._reader = DeadlineReader(self.connection, self.server.idle_timeout)
        self._buffered = io.BufferedReader(self._reader, 65536)
        self.rfile = self._buffered
        self.server.track(self.connection, live=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, live=False)

    def handle_one_request(self) -> None:
        """Waits up to idle_timeout for a request to begin; from its first byte, its head
        (request line and headers) must arrive within head_timeout in total."""
        self._reader.deadline = None
        self.server.mark_idle(self.connection, True)
        try:
            started = self._buffered.peek(1)
        except OSError:  # timed out idle, reset, or closed to make room
            started = b""
        if not self.server.mark_idle(self.connection, False) or not started:
            self.close_connection = True
            return
        self._reader.deadline = time.monotonic() + self.server.head_timeout
        super().handle_one_request()

    def _dispatch(self) -> None:
        self._reader.deadline = time.monotonic() + self.server.body_timeout
        body, body_error = self._read_body()
        self._reader.deadline = None
        try:
            url = urlsplit(self.path)
            query = parse_qs(url.query, max_num_fields=50) if len(url.query) <= 4096 else None
        except ValueError:  # an unparsable URL, or too many query fields
            query = None
        if query is None:
            self._send(error_reply(400, "bad_query", "the URL or its query string is malformed.", close=True))
            return
        request = Request(
            method=self.command,
            path=url.path,
            query=query,
            headers=self.headers,
            body=body,
            body_error=body_error,
            client_host=str(self.client_address[0]),
            local_port=self.server.server_port,
        )
        try:
            reply = self.server.application(request)
        except Exception:
            logger.exception("the collector failed to handle %s %s", self.command, url.path)
            reply = error_reply(500, "internal_error", "the collector failed on this request; see its log.")
        if body_error is not None:
            reply.close = True  # the rest of the body is still on the wire
        self._send(reply)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    def _send(self, reply: Reply) -> None:
        if reply.delay > 0:
            self.server.stopping.wait(reply.delay)
        if reply.drop or (self.server.stopping.is_set() and reply.delay > 0):
            self.close_connection = True
            logger.debug("%s %s: connection dropped", self.command, self.path)
            return
        close = reply.close or self.close_connection or self.server.stopping.is_set()
        self.close_connection = close
        try:
            self.wfile.write(render(reply, head_only=self.command == "HEAD", close=close))
        except OSError:
            self.close_connection = True
            return
        self.log_request(reply.status)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors (bad request line, huge headers, ...) as one-write JSON answers."""
        phrase = reason_phrase(code)
        self.close_connection = True
        reply = error_reply(code, "bad_request", (message or phrase)[:200])
        with contextlib.suppress(OSError):
            self.wfile.write(render(reply, head_only=False, close=True))
        self.log_request(code)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.client_address[0], *args)

    # --- request bodies -------------------------------------------------------------------------

    def _read_body(self) -> tuple[bytes, Reply | None]:
        """The body, bounded in size and time; or the answer for a body that cannot be read."""
        transfers = self.headers.get_all("Transfer-Encoding") or []
        lengths = self.headers.get_all("Content-Length") or []
        try:
            if transfers and lengths:
                # Two ways to say where the body ends: a proxy in front may pick the other one,
                # and the "rest" would be read here as a second, smuggled request.
                return b"", error_reply(
                    400,
                    "ambiguous_length",
                    "send either Content-Length or Transfer-Encoding: chunked, not both.",
                )
            if transfers:
                if len(transfers) > 1 or transfers[0].strip().lower() != "chunked":
                    return b"", error_reply(501, "unsupported_transfer_encoding", "only chunked is supported.")
                return self._read_chunked()
            if not lengths:
                return b"", None
            size_or_none = ascii_decimal(lengths[0]) if len(set(lengths)) == 1 else None
            if size_or_none is None:
                return b"", error_reply(
                    400,
                    "bad_content_length",
                    f"Content-Length must be one whole number in ASCII digits, got {lengths[0][:20]!r}.",
                )
            size = size_or_none
            if size > MAX_BODY_BYTES:
                return b"", _too_large(size)
            return self._read_exactly(size)
        except TimeoutError:
            return b"", error_reply(408, "request_timeout", "the body did not arrive in time.")
        except OSError:
            return b"", error_reply(400, "bad_body", "the connection failed while reading the body.")

    def _read_exactly(self, size: int) -> tuple[bytes, Reply | None]:
        deadline = time.monotonic() + self.server.body_timeout
        parts = []
        remaining = size
        while remaining > 0:
            if time.monotonic() > deadline:
                return b"", error_reply(408, "request_timeout", "the body did not arrive in time.")
            part = self.rfile.read1(min(remaining, 65536))
            if not part:
                return b"", error_reply(400, "short_body", "the body is shorter than its Content-Length.")
            parts.append(part)
            remaining -= len(part)
        return b"".join(parts), None

    def _read_chunked(self) -> tuple[bytes, Reply | None]:
        deadline = time.monotonic() + self.server.body_timeout
        body = bytearray()
        bad = error_reply(400, "bad_chunked_body", "the chunked body is malformed.")
        while time.monotonic() <= deadline:
            line = self.rfile.readline(256)
            if not line.endswith(b"\n"):
                return b"", bad
            size_or_none = ascii_hex(line.split(b";", 1)[0].rstrip(b"\r\n"))
            if size_or_none is None:
                return b"", bad
            size = size_or_none
            if size == 0:
                for _ in range(64):  # trailers, up to the blank line
                    trailer = self.rfile.readline(8192)
                    if trailer in (b"\r\n", b"\n"):
                        return bytes(body), None
                    if not trailer.endswith(b"\n"):
                        return b"", bad
                return b"", bad
            if len(body) + size > MAX_BODY_BYTES:
                return b"", _too_large(len(body) + size)
            chunk, error = self._read_exactly(size)
            if error is not None:
                return b"", error
            body += chunk
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                return b"", bad
        return b"", error_reply(408, "request_timeout", "the body did not arrive in time.")


def _too_large(size: int) -> Reply:
    return error_reply(
        400,
        "payload_too_large",
        f"the body is {size} bytes; the collector reads at most {MAX_BODY_BYTES} "
        "(Segment accepts at most 500 KB a batch).",
    )
