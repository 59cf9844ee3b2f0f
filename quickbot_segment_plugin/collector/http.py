"""The collector's HTTP/1.1 server: bounded, keep-alive, one write per response.

Three properties matter more here than in a textbook `http.server` use:
- Each response goes out in a single `sendall` on a TCP_NODELAY socket. A header write
  followed by a body write meets the client's delayed ACK (Nagle), which costs
  segment-analytics-python about 40 ms a request on loopback and would make every
  benchmark against the collector measure the collector.
- Connections are kept alive (the library's `requests.Session` reuses them) but each one
  holds a thread, so threads are capped (`max_connections`) and idle connections time out;
  past the cap a new connection waits briefly, then gets `503` with `Retry-After`.
- Nothing a client sends can kill the server: bodies are bounded before they are read,
  unreadable requests get a 4xx, and handler errors are logged, never raised.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
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

logger = logging.getLogger("quickbot_segment_plugin.collector")

# No request body is read past this many bytes (compressed or not); Segment's largest
# accepted body is 500 KB, so anything bigger is answered 400 without being read.
MAX_BODY_BYTES = 1024 * 1024


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
    return Reply(status, json.dumps(value).encode("utf-8"), **options)


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

    def __init__(
        self,
        address: tuple[str, int],
        application: Application,
        *,
        max_connections: int,
        idle_timeout: float,
        body_timeout: float,
        busy_wait: float = 2.0,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.application = application
        self.idle_timeout = idle_timeout
        self.body_timeout = body_timeout
        self.busy_wait = busy_wait
        self.stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._guard = threading.Lock()
        self._live: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        self.connections_accepted = 0
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host's FQDN (a DNS lookup) for nothing.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections_accepted += 1  # only the accept loop's thread writes it
        if not self._take_slot():
            self._refuse_busy(request)
            self.shutdown_request(request)
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
            self._slots.release()
            self.shutdown_request(request)

    def _take_slot(self) -> bool:
        deadline = time.monotonic() + self.busy_wait
        while not self.stopping.is_set():
            if self._slots.acquire(timeout=min(0.1, max(deadline - time.monotonic(), 0.0))):
                return True
            if time.monotonic() >= deadline:
                return False
        return False

    def _refuse_busy(self, request: socket.socket) -> None:
        reply = error_reply(
            503,
            "busy",
            "the collector is at its connection limit; retry shortly.",
            headers=[("Retry-After", "1")],
        )
        try:
            request.settimeout(1.0)
            request.sendall(render(reply, head_only=False, close=True))
        except OSError:
            pass

    def _serve_connection(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._slots.release()
            with self._guard:
                self._workers.discard(threading.current_thread())

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
        with self._guard:
            return len(self._workers)


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
        self.server.track(self.connection, live=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, live=False)

    def _dispatch(self) -> None:
        body, body_error = self._read_body()
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
        transfer = self.headers.get("Transfer-Encoding")
        self.connection.settimeout(self.server.body_timeout)
        try:
            if transfer is not None:
                if transfer.strip().lower() != "chunked":
                    return b"", error_reply(501, "unsupported_transfer_encoding", "only chunked is supported.")
                return self._read_chunked()
            lengths = self.headers.get_all("Content-Length") or []
            if not lengths:
                return b"", None
            if len(set(lengths)) > 1 or not lengths[0].strip().isdigit():
                return b"", error_reply(400, "bad_content_length", "Content-Length must be one whole number.")
            size = int(lengths[0])
            if size > MAX_BODY_BYTES:
                return b"", _too_large(size)
            return self._read_exactly(size)
        except TimeoutError:
            return b"", error_reply(408, "request_timeout", "the body did not arrive in time.")
        except OSError:
            return b"", error_reply(400, "bad_body", "the connection failed while reading the body.")
        finally:
            with contextlib.suppress(OSError):
                self.connection.settimeout(self.server.idle_timeout)

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
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return b"", bad
            if size < 0:
                return b"", bad
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
