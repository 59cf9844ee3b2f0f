"""What the collector answers on each path: the Tracking API, the read API and the admin API.

- `POST /v1/batch`, `/v1/identify|track|page|screen|group|alias`: Segment's Tracking API.
- `GET /events`: stored messages, newest first, filtered and paginated.
- `GET /batches/<batch_id>`: the request a message came in (without its write key).
- `GET /summary`: counts per type and per minute, for the debugger's summary strip.
- `GET /rejections`: requests answered with an error (or accepted and dropped).
- `GET|POST|DELETE /_admin/faults`, `DELETE /events`: loopback callers only, and from a
  browser only the collector's own page (see `collector_origin`).
- `GET /`: the debugger page for a browser; for anything else, what this server is (a
  "test connection" or a curious operator). `GET /debugger/*`: the page's files.

Everything but the Tracking API refuses a Host that is not a loopback name unless the
collector allows remote clients (see `collector_debugger`); the Tracking API refuses a
browser page of another site.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

from ..core import PluginError, parse_segment_timestamp, segment_timestamp
from .debugger import ASSET_PREFIX, asset_reply, host_allowed, misdirected_reply, page_reply, wants_page
from .faults import Fault, FaultError, FaultScript, faults_from_json
from .http import Reply, Request, error_reply, is_loopback, json_reply
from .ingest import ENDPOINTS, Rejected, ingest, rejected_key_fingerprint
from .origin import admin_allowed, write_allowed
from .store import MAX_PAGE, EventFilter, EventStore, RawBatch
from .summary import MAX_SUMMARY_MINUTES
from .wire import ascii_decimal

REQUEST_LOG_SIZE = 10_000
DEFAULT_SUMMARY_MINUTES = 30
BATCHES_PREFIX = "/batches/"


class FilterError(PluginError):
    """A read-API filter that cannot be applied (names the filter)."""


def since_filter(since: object) -> str | None:
    """A `since` (ISO-8601 string or aware/naive-UTC datetime) in the stored receivedAt format."""
    if since is None or since == "":
        return None
    if isinstance(since, datetime):
        moment = since if since.tzinfo else since.replace(tzinfo=UTC)
        return segment_timestamp(moment)
    parsed = parse_segment_timestamp(since)
    if parsed is None:
        raise FilterError(f"since must be an ISO-8601 date such as 2024-05-01T12:00:00Z, got {since!r}.", field="since")
    return segment_timestamp(parsed)


class CollectorApp:
    """The collector's behaviour, independent of sockets (the server calls it per request)."""

    def __init__(
        self,
        store: EventStore,
        faults: FaultScript,
        latency: float = 0.0,
        *,
        allow_remote: bool = False,
        allowed_origins: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.faults = faults
        self.latency = latency
        self.allow_remote = allow_remote
        self.allowed_origins = allowed_origins
        self._lock = threading.Lock()
        self.requests_received = 0
        self.request_log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)

    def __call__(self, request: Request) -> Reply:
        path = request.path.rstrip("/") or "/"
        if path.startswith("/v1/"):
            return self._tracking(request, path[len("/v1/") :])
        if not host_allowed(request.headers.get("Host"), self.allow_remote):
            return misdirected_reply()
        if path.startswith(ASSET_PREFIX):
            return self._read_only(request) or asset_reply(path[len(ASSET_PREFIX) :])
        if path.startswith(BATCHES_PREFIX):
            return self._read_only(request) or self._batch(path[len(BATCHES_PREFIX) :])
        if path == "/summary":
            return self._read_only(request) or self._summary(request)
        if path == "/events":
            if request.method == "DELETE":
                return self._admin_only(request) or self._clear()
            return self._read_only(request) or self._events(request)
        if path == "/rejections":
            return self._read_only(request) or self._rejections(request)
        if path == "/_admin/faults":
            return self._admin_only(request) or self._faults(request)
        if path == "/" and wants_page(request.headers.get("Accept")):
            return self._read_only(request) or page_reply()
        if path == "/":
            return self._read_only(request) or json_reply(
                200,
                {
                    "service": "quickbot-segment collector (Segment-compatible)",
                    "tracking_api": ["/v1/batch", *(f"/v1/{kind}" for kind in sorted(ENDPOINTS - {"batch"}))],
                    "events": self.store.count(),
                    "requests_received": self.requests_received,
                    "pending_faults": self.faults.pending,
                    "debugger": "open / in a browser",
                },
                headers=[("Vary", "Accept")],
            )
        return error_reply(404, "not_found", f"no such path: {path[:100]}")

    # --- the Tracking API -----------------------------------------------------------------------

    def _tracking(self, request: Request, endpoint: str) -> Reply:
        arrived = time.monotonic()
        with self._lock:
            self.requests_received += 1
        refusal = self._refuse_before_ingest(request)
        if refusal is not None:
            self._log(request, arrived, refusal.status, stored=0, faulted=False)
            return refusal
        fault = self.faults.take()
        if fault is not None:
            reply = _fault_reply(fault)
            self._log(request, arrived, reply.status if fault.answers else None, stored=0, faulted=True)
            return reply
        reply, stored = self._accept(request, endpoint)
        self._log(request, arrived, reply.status, stored=stored, faulted=False)
        return reply

    def _refuse_before_ingest(self, request: Request) -> Reply | None:
        """A browser page of another site, or a header no client library sends: 400/403,
        recorded as a rejection, before anything is stored."""
        origin = request.headers.get("Origin")
        if not write_allowed(
            origin,
            request.headers.get("Host"),
            request.local_port,
            self.allowed_origins,
            allow_remote=self.allow_remote,
        ):
            status, code = 403, "forbidden_origin"
            reason = (
                f"a web page of another site ({str(origin)[:80]!r}) cannot send events here; start the collector "
                "with --allow-origin for a page that should."
            )
        elif _retry_count(request) is None:
            status, code = 400, "bad_retry_count"
            raw = request.headers.get("X-Retry-Count", "")
            reason = f"X-Retry-Count must be a whole number in ASCII digits, got {raw[:20]!r}."
        else:
            return None
        received = segment_timestamp(datetime.now(UTC))
        self._reject(request, received, uuid.uuid4().hex, status, code, reason)
        return error_reply(status, code, reason)

    def _accept(self, request: Request, endpoint: str) -> tuple[Reply, int]:
        if endpoint not in ENDPOINTS:
            return error_reply(404, "not_found", f"no such endpoint: /v1/{endpoint[:60]}"), 0
        if request.method != "POST":
            return error_reply(405, "method_not_allowed", "use POST.", headers=[("Allow", "POST")]), 0
        received = datetime.now(UTC)
        received = received.replace(microsecond=received.microsecond // 1000 * 1000)
        received_at = segment_timestamp(received)
        batch_id = uuid.uuid4().hex
        if request.body_error is not None:
            self._reject(request, received_at, batch_id, request.body_error.status, "unreadable_body", None)
            return request.body_error, 0
        try:
            accepted = ingest(
                endpoint,
                request.body,
                content_encoding=request.headers.get("Content-Encoding"),
                authorization=request.headers.get("Authorization"),
                received_at=received,
            )
        except Rejected as rejected:
            self._reject(request, received_at, batch_id, rejected.status, rejected.code, rejected.message)
            return error_reply(rejected.status, rejected.code, rejected.message), 0
        if accepted.dropped:
            self.store.add_rejection(
                received_at=received_at,
                path=request.path,
                status=200,
                code="too_many_events",
                reason=accepted.dropped,
                batch_id=batch_id,
                write_key_fingerprint=accepted.write_key_fingerprint,
            )
        elif accepted.messages:
            self.store.add(
                accepted.messages,
                accepted.warnings,
                received_at=received_at,
                batch_id=batch_id,
                write_key_fingerprint=accepted.write_key_fingerprint,
                raw_batch=RawBatch(request.path[:200], len(request.body), json.dumps(accepted.body)),
            )
        return json_reply(200, {"success": True}, delay=self.latency), len(accepted.messages)

    def _reject(
        self, request: Request, received_at: str, batch_id: str, status: int, code: str, reason: str | None
    ) -> None:
        if reason is None:
            reason = json.loads(request.body_error.body).get("message", code) if request.body_error else code
        self.store.add_rejection(
            received_at=received_at,
            path=request.path[:200],
            status=status,
            code=code,
            reason=reason,
            batch_id=batch_id,
            write_key_fingerprint=rejected_key_fingerprint(
                request.body if request.body_error is None else b"",
                request.headers.get("Content-Encoding"),
                request.headers.get("Authorization"),
            ),
        )

    def log_snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self.request_log]

    def _log(self, request: Request, arrived: float, status: int | None, *, stored: int, faulted: bool) -> None:
        with self._lock:
            self.request_log.append(
                {
                    "at": arrived,
                    "path": request.path[:200],
                    "status": status,
                    "faulted": faulted,
                    "stored": stored,
                    "retry_count": _retry_count(request) or 0,
                }
            )

    # --- the read API -------------------------------------------------------------------------

    def _events(self, request: Request) -> Reply:
        def one(*names: str) -> str | None:
            for name in names:
                values = request.query.get(name)
                if values:
                    return values[0]
            return None

        try:
            where = EventFilter(
                type=one("type"),
                user_id=one("userId", "user_id"),
                anonymous_id=one("anonymousId", "anonymous_id"),
                event=one("event"),
                message_id=one("messageId", "message_id"),
                since=since_filter(one("since")),
                after_id=_int_param(request, "after_id", 0, 0, 2**62) or None,
            )
            limit = _int_param(request, "limit", 100, 0, MAX_PAGE)
            offset = _int_param(request, "offset", 0, 0, 10**9)
        except FilterError as error:
            return error_reply(400, "invalid_filter", error.message)
        events = self.store.events(where, limit, offset)
        total = self.store.total(where)
        following = offset + len(events)
        return json_reply(
            200,
            {
                "events": events,
                "total": total,
                "limit": limit,
                "offset": offset,
                "next_offset": following if following < total else None,
            },
        )

    def _batch(self, batch_id: str) -> Reply:
        batch = self.store.batch(batch_id) if 0 < len(batch_id) <= 64 else None
        if batch is None:
            return error_reply(404, "not_found", "no stored batch has this id (it may have been cleared).")
        return json_reply(200, batch)

    def _summary(self, request: Request) -> Reply:
        try:
            minutes = _int_param(request, "minutes", DEFAULT_SUMMARY_MINUTES, 1, MAX_SUMMARY_MINUTES)
        except FilterError as error:
            return error_reply(400, "invalid_filter", error.message)
        now = segment_timestamp(datetime.now(UTC))
        return json_reply(200, {"now": now, "minutes": minutes, **self.store.summary(minutes, now)})

    def _rejections(self, request: Request) -> Reply:
        try:
            limit = _int_param(request, "limit", 100, 0, MAX_PAGE)
        except FilterError as error:
            return error_reply(400, "invalid_filter", error.message)
        return json_reply(200, {"rejections": self.store.rejections(limit)})

    def _clear(self) -> Reply:
        self.store.clear()
        return json_reply(200, {"success": True})

    # --- admin --------------------------------------------------------------------------------

    def _faults(self, request: Request) -> Reply:
        if request.method == "GET":
            return json_reply(200, {"pending": self.faults.pending, "faults": self.faults.describe()})
        if request.method == "DELETE":
            self.faults.clear()
            return json_reply(200, {"success": True, "pending": 0})
        if request.method != "POST":
            return error_reply(405, "method_not_allowed", "use GET, POST or DELETE.")
        if request.body_error is not None:
            return request.body_error
        try:
            faults = faults_from_json(json.loads(request.body.decode("utf-8")))
        except (ValueError, RecursionError):
            return error_reply(400, "invalid_json", "send a JSON list of faults.")
        except FaultError as error:
            return error_reply(400, "invalid_fault", error.message)
        self.faults.extend(faults)
        return json_reply(200, {"success": True, "pending": self.faults.pending})

    def _admin_only(self, request: Request) -> Reply | None:
        if not is_loopback(request.client_host):
            return error_reply(403, "forbidden", "the admin API answers loopback clients only.")
        # A web page in the developer's browser is a loopback client too: a cross-site form
        # POST (text/plain needs no preflight) could script faults or clear events. Browsers
        # always send Origin on such requests; scripts and the CLI send none.
        origin = request.headers.get("Origin")
        if not admin_allowed(origin, request.headers.get("Host"), request.local_port, allow_remote=self.allow_remote):
            return error_reply(
                403,
                "forbidden_origin",
                f"the admin API answers the collector's own page only, not {str(origin)[:80]!r}.",
            )
        return None

    @staticmethod
    def _read_only(request: Request) -> Reply | None:
        if request.method not in ("GET", "HEAD"):
            return error_reply(405, "method_not_allowed", "use GET.", headers=[("Allow", "GET")])
        return None


def _fault_reply(fault: Fault) -> Reply:
    if not fault.answers:
        return Reply(status=0, delay=fault.delay, drop=True)
    body, content_type = fault.response_body()
    return Reply(
        status=fault.status or 200,
        body=body,
        content_type=content_type,
        headers=fault.response_headers(),
        delay=fault.delay,
    )


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    values = request.query.get(name)
    if not values:
        return default
    raw = values[0]
    number = ascii_decimal(raw)
    if number is None or not low <= number <= high:
        raise FilterError(
            f"{name} must be a whole number from {low} to {high} in ASCII digits, got {raw.strip()[:20]!r}.",
            field=name,
        )
    return number


def _retry_count(request: Request) -> int | None:
    """The client's X-Retry-Count (0 when absent); None when it is not a plain number."""
    raw = request.headers.get("X-Retry-Count")
    return 0 if raw is None else ascii_decimal(raw)
