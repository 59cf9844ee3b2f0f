"""The embedded Segment-compatible collector: Segment's Tracking API on 127.0.0.1.

Bot builders and operators can try the Segment block with no Segment account and no
network, and the tests get a real HTTP endpoint that answers like Segment's: the same
400s (malformed JSON, an event over 32 KB, a batch over 500 KB, no write key), 200 for
everything else, `sentAt` clock-skew correction, and the debugger's warnings stored next
to each message. Faults (5xx, 429 with Retry-After, timeouts, dropped connections) can be
scripted to exercise the client's retries. A browser pointed at its URL gets the live event
debugger (`collector_debugger` and the files in `debugger/`).

    with Collector() as collector:
        client = segment.analytics.Client("key", host=collector.url)
        ...
        collector.wait_for(1)
        collector.events(type="track")

Modules: `collector_http` (the bounded HTTP server), `collector_routes` (what each path
answers), `collector_debugger` (the debugger page and its safety rules), `collector_ingest`
(Segment's acceptance rules), `collector_spec` (timestamps and warnings), `collector_store`
(SQLite), `collector_faults` (scripted failures).
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from ..core import PluginError, StoreFileError, segment_timestamp
from .faults import Fault, FaultError, FaultScript
from .http import CollectorServer, is_loopback
from .ingest import MAX_BATCH_BYTES, MAX_BATCH_EVENTS, MAX_EVENT_BYTES
from .limits import DEFAULT_MAX_STORED_EVENTS, DEFAULT_MAX_STORED_MB, StoreLimits
from .origin import parse_allowed_origins
from .routes import CollectorApp, FilterError, since_filter
from .settings import DEFAULT_MAX_CONNECTIONS
from .store import EventFilter, EventStore
from .summary import MAX_SUMMARY_MINUTES

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_EVENTS",
    "MAX_EVENT_BYTES",
    "Collector",
    "CollectorError",
    "Fault",
    "FaultError",
    "FilterError",
    "check_bind_host",
]

# Each connection holds a thread. analytics-node sends a burst as parallel batches of 15
# events, one connection each: 2,000 events open about 134 at once.


class CollectorError(PluginError):
    """The collector cannot start as asked (host refused, port taken, bad setting)."""


def check_bind_host(host: str, allow_remote: bool) -> None:
    """Refuses an address other machines could reach unless the operator said so.

    The collector stores every event it receives (user ids, emails in traits) and accepts
    any write key, so on a public interface it is an open data sink.
    """
    if not host.strip():
        raise CollectorError("host must be an address to listen on, such as 127.0.0.1.", field="host")
    if allow_remote or is_loopback(host):
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        raise CollectorError(f"host {host!r} cannot be resolved.", field="host") from None
    if addresses and all(is_loopback(str(address)) for address in addresses):
        return
    raise CollectorError(
        f"refusing to listen on {host}: it is not a loopback address, and the collector accepts any "
        "write key and stores every event it receives. Use allow_remote=True (--allow-remote) if other "
        "machines must reach it.",
        field="host",
    )


class Collector:
    """A running (after `start()` or `with`) Segment-compatible endpoint backed by SQLite.

    `db_path=None` keeps events in a private temporary file removed by `stop()`; read
    them before stopping. `latency` delays every successful answer (seconds), to stand in
    for a real network round trip in benchmarks. Past `max_stored_events` or
    `max_stored_mb` the oldest events are dropped (and counted in the summary).
    `allowed_origins` are web pages (`http://localhost:3000`) allowed to send events
    from a browser; other sites' pages are refused.
    """

    def __init__(
        self,
        db_path: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_remote: bool = False,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        latency: float = 0.0,
        idle_timeout: float = 30.0,
        body_timeout: float = 10.0,
        busy_wait: float = 2.0,
        head_timeout: float = 10.0,
        max_stored_events: int = DEFAULT_MAX_STORED_EVENTS,
        max_stored_mb: float = DEFAULT_MAX_STORED_MB,
        allowed_origins: Iterable[str] = (),
    ) -> None:
        check_bind_host(host, allow_remote)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise CollectorError(f"port must be a whole number from 0 to 65535, got {port!r}.", field="port")
        if not 1 <= max_connections <= 10_000:
            raise CollectorError("max_connections must be from 1 to 10000.", field="max_connections")
        if latency < 0 or idle_timeout <= 0 or body_timeout <= 0 or head_timeout <= 0 or busy_wait < 0:
            raise CollectorError("latency must be 0 or more and timeouts more than 0.", field="latency")
        if isinstance(max_stored_events, bool) or not 1 <= max_stored_events <= 100_000_000:
            raise CollectorError(
                f"max_stored_events must be from 1 to 100000000, got {max_stored_events!r}.", field="max_stored_events"
            )
        if not 0.001 <= max_stored_mb <= 1_000_000:
            raise CollectorError(
                f"max_stored_mb must be from 0.001 to 1000000, got {max_stored_mb!r}.", field="max_stored_mb"
            )
        try:
            self._allowed_origins = parse_allowed_origins(allowed_origins)
        except ValueError as error:
            raise CollectorError(f"allowed_origins: {error}", field="allowed_origins") from None
        self._limits = StoreLimits(max_stored_events, max(int(max_stored_mb * 1024 * 1024), 1024))
        self.host = host
        self._allow_remote = allow_remote
        self._requested_port = port
        self._db_path = Path(db_path) if db_path is not None else None
        self._max_connections = max_connections
        self._latency = latency
        self._idle_timeout = idle_timeout
        self._body_timeout = body_timeout
        self._busy_wait = busy_wait
        self._head_timeout = head_timeout
        self._faults = FaultScript()
        self._lifecycle = threading.Lock()
        self._temp_dir: Path | None = None
        self._store: EventStore | None = None
        self._app: CollectorApp | None = None
        self._server: CollectorServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Collector:
        with self._lifecycle:
            if self._server is not None:
                return self
            path = self._db_path
            if path is None:
                self._temp_dir = Path(tempfile.mkdtemp(prefix="quickbot-segment-collector-"))
                path = self._temp_dir / "events.sqlite3"
            try:
                store = EventStore(path, self._limits)
            except StoreFileError as error:
                self._remove_temp_dir()
                raise CollectorError(str(error), field="db") from None
            except Exception as error:
                self._remove_temp_dir()
                raise CollectorError(f"cannot open the event store {path}: {error}", field="db") from None
            app = CollectorApp(
                store,
                self._faults,
                self._latency,
                allow_remote=self._allow_remote,
                allowed_origins=self._allowed_origins,
            )
            try:
                server = CollectorServer(
                    (self.host, self._requested_port),
                    app,
                    max_connections=self._max_connections,
                    idle_timeout=self._idle_timeout,
                    body_timeout=self._body_timeout,
                    busy_wait=self._busy_wait,
                    head_timeout=self._head_timeout,
                )
            except OSError as error:
                store.close()
                self._remove_temp_dir()
                raise CollectorError(
                    f"cannot listen on {self.host}:{self._requested_port}: {error.strerror or error}.",
                    field="port",
                ) from None
            self._store, self._app, self._server = store, app, server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="quickbot-collector",
                daemon=True,
            )
            self._thread.start()
            return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stops listening, ends open connections (waking delayed faults) and closes the store."""
        with self._lifecycle:
            server, thread, store = self._server, self._thread, self._store
            if server is None:
                return
            server.stopping.set()
            server.shutdown()
            server.close_connections(timeout)
            server.server_close()
            if thread is not None:
                thread.join(timeout)
            if store is not None:
                store.close()
            self._server = self._thread = None
            self._remove_temp_dir()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _remove_temp_dir(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    # --- where it listens ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._running_server().server_address[1])

    @property
    def url(self) -> str:
        """The base URL to give a segment `Client(host=...)` (no `/v1/...`)."""
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def debugger_url(self) -> str:
        """The live event debugger: open it in a browser while a flow runs."""
        return self.url + "/"

    @property
    def db_path(self) -> Path:
        return self._running_store().path

    # --- reading --------------------------------------------------------------------------------

    def events(
        self,
        type: str | None = None,
        user_id: str | None = None,
        event: str | None = None,
        since: str | datetime | None = None,
        limit: int = 100,
        offset: int = 0,
        *,
        anonymous_id: str | None = None,
        message_id: str | None = None,
        after_id: int | None = None,
    ) -> list[dict[str, Any]]:
        """Stored messages, newest first, with what the collector recorded about each.

        `after_id` keeps rows stored after the row with that `id` (rows' ids only grow),
        the cursor a reader that follows new events uses.
        """
        where = EventFilter(
            type=type,
            user_id=user_id,
            anonymous_id=anonymous_id,
            event=event,
            message_id=message_id,
            since=since_filter(since),
            after_id=after_id,
        )
        return self._running_store().events(where, limit, offset)

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        """The request a row came in (its `batch_id`), without the write key; None when unknown."""
        return self._running_store().batch(batch_id)

    def summary(self, minutes: int = 30) -> dict[str, Any]:
        """Counts per type overall and per minute over the last `minutes` (the debugger's strip)."""
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= MAX_SUMMARY_MINUTES:
            raise CollectorError(f"minutes must be from 1 to {MAX_SUMMARY_MINUTES}, got {minutes!r}.", field="minutes")
        now = segment_timestamp(datetime.now(UTC))
        return {"now": now, "minutes": minutes, **self._running_store().summary(minutes, now)}

    def messages(self) -> list[dict[str, Any]]:
        """Every stored message dict, oldest first."""
        return self._running_store().messages()

    def count(self, distinct: bool = False) -> int:
        """Stored messages; `distinct` leaves out duplicates (Segment would deduplicate them)."""
        return self._running_store().count(distinct)

    def wait_for(self, count: int, timeout: float = 10.0, distinct: bool = False) -> bool:
        """Blocks until at least `count` messages are stored; False when `timeout` passes first."""
        return self._running_store().wait_for(count, timeout, distinct)

    def rejections(self, limit: int = 100) -> list[dict[str, Any]]:
        """Requests answered with an error (or accepted and dropped), newest first."""
        return self._running_store().rejections(limit)

    def clear(self) -> None:
        """Deletes every stored message and rejection."""
        self._running_store().clear()

    # --- faults and statistics ------------------------------------------------------------------

    def inject_faults(self, faults: Iterable[Fault]) -> None:
        """Appends to the fault script; each `/v1/*` request takes the next fault."""
        self._faults.extend(faults)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def pending_faults(self) -> int:
        return self._faults.pending

    @property
    def requests_received(self) -> int:
        """HTTP requests to `/v1/*`, faulted ones included."""
        return self._app.requests_received if self._app is not None else 0

    def request_log(self) -> list[dict[str, Any]]:
        """The last 10,000 `/v1/*` requests: path, status (None when dropped), faulted,
        stored (messages kept), retry_count (the client's X-Retry-Count) and `at`
        (time.monotonic() on arrival)."""
        return self._app.log_snapshot() if self._app is not None else []

    @property
    def latency(self) -> float:
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise CollectorError("latency must be 0 or more seconds.", field="latency")
        self._latency = seconds
        if self._app is not None:
            self._app.latency = seconds

    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted so far (keep-alive makes this far lower than requests)."""
        return self._server.connections_accepted if self._server is not None else 0

    @property
    def open_connections(self) -> int:
        """Connections being served right now (each holds one thread)."""
        return self._server.open_connections if self._server is not None else 0

    def _running_server(self) -> CollectorServer:
        if self._server is None:
            raise RuntimeError("the collector is not running; call start() or use it in a with block.")
        return self._server

    def _running_store(self) -> EventStore:
        if self._store is None or self._server is None:
            raise RuntimeError("the collector is not running; read its events before stop().")
        return self._store

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"Collector({where})"
