"""Shutdown's fast path for the waiting room: one request per waiting workspace, many at once.

Workspaces waiting for a client slot at shutdown (thousands of them after a burst) would each
need a client built, flushed and closed in turn: about 20 ms of thread start-up and polling
per workspace for a request of 1 ms, which is how 3,000 workspaces outlasted a 10 s deadline.
Here their events are posted directly with the library's own `post` (the same request, headers
and gzip the consumers send) by a few worker threads, no more than the client slots free
(`DeliveryPool` keeps the process within `max_clients`), each request bounded by the time left.

Each batch is reported exactly once: delivered, rejected (a status the library never
retries), or at the deadline "shutdown_deadline", in doubt when its request was still open.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from ..core import REJECTED, SHUTDOWN_DEADLINE, Undeliverable, fingerprint
from .calls import without_nulls
from .causes import describe_failure
from .library import BATCH_SIZE_LIMIT, is_not_retried, post_batch
from .reports import Reporter
from .settings import DeliverySettings

RETRY_PAUSE: Final = 0.05  # between attempts of a batch that failed in a way worth retrying
MIN_REQUEST_SECONDS: Final = 0.05  # below this much time left a request is not started

# A batch's state; each moves forward once, under the drain's lock.
_QUEUED: Final = 0
_SENDING: Final = 1
_DONE: Final = 2


@dataclass
class _Batch:
    workspace_id: str
    write_key: str = field(repr=False)  # never in a log line or a traceback
    endpoint: str
    messages: list[dict[str, Any]]
    state: int = _QUEUED
    last_cause: str | None = field(default=None)


class WaitingRoomDrain:
    """Posts the waiting room's events until done or the deadline; `finish` reports the rest."""

    def __init__(self, settings: DeliverySettings, reporter: Reporter, deadline: float) -> None:
        self._settings = settings
        self._reporter = reporter
        self._deadline = deadline
        self._lock = threading.Lock()
        self._pending: deque[_Batch] = deque()
        self._batches: list[_Batch] = []
        self._workers = 0
        self._finished = False
        self._pending_events = 0  # in batches not done; kept so the shutdown loop reads it in O(1)
        self._cutoff = deadline  # no request starts after this (the pool keeps time to report)

    def add(self, workspace_id: str, write_key: str, endpoint: str, messages: list[dict[str, Any]]) -> None:
        for chunk in _chunks([without_nulls(message) for message in messages], self._settings.batch_size):
            batch = _Batch(workspace_id, write_key, endpoint, chunk)
            self._batches.append(batch)
            self._pending.append(batch)
            self._pending_events += len(chunk)

    @property
    def workers(self) -> int:
        with self._lock:
            return self._workers

    def top_up(self, allowed: int) -> None:
        """Run up to `allowed` worker threads (the free client slots); fewer when less is pending."""
        while True:
            with self._lock:
                if self._finished or self._workers >= min(allowed, len(self._pending)):
                    return
                self._workers += 1
            worker = threading.Thread(target=self._work, name="quickbot-segment-drain", daemon=True)
            try:
                worker.start()
            except RuntimeError:  # no thread left: the ones running carry on, the deadline reports the rest
                with self._lock:
                    self._workers -= 1
                return

    def set_cutoff(self, cutoff: float) -> None:
        """Start no request after `cutoff`: the time after it is kept for reporting what is left."""
        self._cutoff = min(self._deadline, cutoff)

    def pending_events(self) -> int:
        with self._lock:
            return self._pending_events

    def done(self) -> bool:
        with self._lock:
            return self._pending_events == 0

    def finish(self) -> int:
        """At the deadline: report every batch not done; returns how many events. Idempotent."""
        with self._lock:
            self._finished = True
            left = [batch for batch in self._batches if batch.state != _DONE]
            states = [(batch, batch.state) for batch in left]
            for batch in left:
                batch.state = _DONE
            self._pending_events = 0
            self._pending.clear()
        reports = []
        for batch, state in states:
            last = f"; last attempt: {batch.last_cause}" if batch.last_cause else ""
            if state == _SENDING:
                why = f"in a request that had not completed when the deadline passed{last}"
            else:
                why = f"waiting for a delivery thread when the deadline passed{last}"
            reports.append(
                Undeliverable(
                    workspace_id=batch.workspace_id,
                    write_key_fingerprint=fingerprint(batch.write_key),
                    endpoint=batch.endpoint,
                    messages=batch.messages,
                    reason=SHUTDOWN_DEADLINE,
                    detail=f"{len(batch.messages)} event(s) {why}",
                    in_doubt=state == _SENDING,
                )
            )
        self._reporter.lost_many(reports)
        return sum(len(batch.messages) for batch, _ in states)

    # --- the workers -----------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._finished or not self._pending:
                        return
                    batch = self._pending.popleft()
                    batch.state = _SENDING
                self._send(batch)
        finally:
            with self._lock:
                self._workers -= 1

    def _send(self, batch: _Batch) -> None:
        while True:
            now = time.monotonic()
            remaining = self._deadline - now
            if remaining < MIN_REQUEST_SECONDS or now >= self._cutoff:
                with self._lock:  # not in a request: `finish` reports it as not sent, with the last cause
                    if batch.state == _SENDING:
                        batch.state = _QUEUED
                return
            try:
                post_batch(
                    batch.write_key,
                    batch.endpoint,
                    batch.messages,
                    gzip=self._settings.gzip,
                    timeout=min(self._settings.timeout, remaining),
                )
            except Exception as error:
                status = getattr(error, "status", None)
                batch.last_cause = describe_failure(error, batch.endpoint)
                if isinstance(status, int) and is_not_retried(status):
                    self._settle(batch, REJECTED, f"{len(batch.messages)} event(s): {batch.last_cause}", status)
                    return
                time.sleep(max(0.0, min(RETRY_PAUSE, self._deadline - time.monotonic())))
                continue
            if self._claim(batch):
                self._reporter.delivered(batch.workspace_id, batch.messages)
            return

    def _claim(self, batch: _Batch) -> bool:
        """Mark `batch` done; False when `finish` already reported it."""
        with self._lock:
            if batch.state == _DONE:
                return False
            batch.state = _DONE
            self._pending_events -= len(batch.messages)
            return True

    def _settle(self, batch: _Batch, reason: str, detail: str, status: int | None) -> None:
        if self._claim(batch):
            self._report_lost(batch, reason, detail, status, False)

    def _report_lost(self, batch: _Batch, reason: str, detail: str, status: int | None, in_doubt: bool) -> None:
        self._reporter.lost(
            batch.workspace_id,
            fingerprint(batch.write_key),
            batch.endpoint,
            batch.messages,
            reason,
            detail,
            status,
            in_doubt=in_doubt,
        )


def _chunks(messages: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    """Batches of at most `size` events and under the library's batch byte limit."""
    chunks: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    total = 0
    for message in messages:
        length = len(json.dumps(message, default=str))
        if current and (len(current) >= size or total + length >= BATCH_SIZE_LIMIT):
            chunks.append(current)
            current, total = [], 0
        current.append(message)
        total += length
    if current:
        chunks.append(current)
    return chunks
