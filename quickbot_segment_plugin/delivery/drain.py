"""Shutdown's fast path for the waiting room: one request per waiting workspace, many at once.

Workspaces waiting for a client slot at shutdown (thousands of them after a burst) would each
need a client built, flushed and closed in turn: about 20 ms of thread start-up and polling
per workspace for a request of 1 ms, which is how 3,000 workspaces outlasted a 10 s deadline.
Here their events are posted directly with the library's own `post` (the same request, headers
and gzip the consumers send) by worker threads, no more than the client slots free
(`DeliveryPool` keeps the process within `max_clients`), each request bounded by the time left.

How many workers, and who starts them:

- The shutdown thread starts the first worker only; each worker starts the next as it takes a
  batch. A thread start waits for the new thread to run, which on an interpreter busy with
  a hundred senders took the shutdown thread 100-200 ms per pass: time it needs to watch
  its deadline and to report what is left.
- Only as many requests in flight as keep this process's CPU busy (`_Pace`): a request costs
  about 1 ms of this interpreter's time, so against a nearby endpoint a few in flight already
  saturate it, and a hundred threads only queue for the interpreter lock (urllib3's pool lock
  convoys behind it), starving the shutdown thread. Against a distant endpoint (a round trip
  of 50 ms) the measured ratio of wall time to CPU time asks for many more, up to the cap.

Each batch is reported exactly once: delivered, rejected (a status the library never
retries), or at the deadline "shutdown_deadline", in doubt when its request was still open.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from ..core import REJECTED, SHUTDOWN_DEADLINE, Undeliverable, fingerprint
from .calls import without_nulls
from .causes import describe_failure
from .library import BATCH_SIZE_LIMIT, MESSAGE_SIZE_LIMIT, is_not_retried, post_batch
from .reports import Reporter
from .settings import DeliverySettings

RETRY_PAUSE: Final = 0.05  # between attempts of a batch that failed in a way worth retrying
MIN_REQUEST_SECONDS: Final = 0.05  # below this much time left a request is not started
# Requests in flight before any is measured, and never fewer: enough to hide a nearby
# endpoint's own processing time behind ours.
MIN_WORKERS: Final = 4
# In flight per request's worth of this process's CPU in its wall time: 2 keeps the CPU busy
# while some requests wait for the interpreter lock and others for the network.
IN_FLIGHT_FACTOR: Final = 2.0
# Until measured: what one request costs this process (requests, urllib3, gzip) on a 2-core machine.
REQUEST_CPU_SECONDS: Final = 0.0015

# A batch's state; each moves forward once, under the drain's lock.
_QUEUED: Final = 0
_SENDING: Final = 1
_DONE: Final = 2


@dataclass
class _Batch:
    workspace_id: str
    write_key: str = field(repr=False)  # never in a log line or a traceback
    key_fingerprint: str  # computed up front: at the deadline there is no time for 10,000 hashes
    endpoint: str
    messages: list[dict[str, Any]]
    state: int = _QUEUED
    last_cause: str | None = field(default=None)


class _Pace:
    """How many requests in flight keep this process busy: the wall time of a request over its
    CPU time here, from the fastest round trip seen (the least disturbed by our own load, which
    would otherwise call for ever more threads) and a running mean of the CPU per request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.fastest: float | None = None
        self.cpu_seconds = REQUEST_CPU_SECONDS
        self._measured = False

    def record(self, wall: float, cpu: float) -> None:
        with self._lock:
            self.fastest = wall if self.fastest is None else min(self.fastest, wall)
            self.cpu_seconds = cpu if not self._measured else 0.8 * self.cpu_seconds + 0.2 * cpu
            self._measured = True

    def workers(self) -> int:
        with self._lock:
            if self.fastest is None:
                return MIN_WORKERS
            ratio = self.fastest / max(self.cpu_seconds, 1e-5)
        return max(MIN_WORKERS, math.ceil(IN_FLIGHT_FACTOR * ratio))


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
        self._sending = 0  # workers inside a request now
        self._allowed = 1  # worker threads the pool's client cap leaves room for
        self._finished = False
        # In batches not done; kept so the shutdown loop reads them in O(1).
        self._pending_events = 0
        self._pending_batches = 0
        self._cutoff = deadline  # no request starts after this (the pool keeps time to report)
        self.pace = _Pace()

    def add(self, workspace_id: str, write_key: str, endpoint: str, messages: list[dict[str, Any]]) -> None:
        key_fingerprint = fingerprint(write_key)
        for chunk in _chunks([without_nulls(message) for message in messages], self._settings.batch_size):
            batch = _Batch(workspace_id, write_key, key_fingerprint, endpoint, chunk)
            self._batches.append(batch)
            self._pending.append(batch)
            self._pending_events += len(chunk)
            self._pending_batches += 1

    @property
    def workers(self) -> int:
        with self._lock:
            return self._workers

    def top_up(self, allowed: int) -> None:
        """Allow up to `allowed` worker threads (the free client slots); starts the first one.

        The workers start the others themselves (see the module's docstring for why).
        """
        with self._lock:
            self._allowed = max(1, allowed)
            if self._workers:
                return
        self._spawn()

    def _spawn(self) -> None:
        """Start one more worker if the pace, the cap and the work left all want one."""
        with self._lock:
            wanted = min(self._allowed, self.pace.workers(), len(self._pending))
            if self._finished or self._workers >= wanted or time.monotonic() >= self._cutoff:
                return
            self._workers += 1
        worker = threading.Thread(target=self._work, name="quickbot-segment-drain", daemon=True)
        try:
            worker.start()
        except RuntimeError:  # no thread left: the ones running carry on, the deadline reports the rest
            with self._lock:
                self._workers -= 1

    def set_cutoff(self, cutoff: float) -> None:
        """Start no request after `cutoff`: the time after it is kept for reporting what is left."""
        self._cutoff = min(self._deadline, cutoff)

    def pending(self) -> tuple[int, int]:
        """(batches, events) not done yet: what `finish` would report now, one report a batch."""
        with self._lock:
            return self._pending_batches, self._pending_events

    def in_flight(self) -> int:
        """Requests open now: each still costs this process CPU when its answer comes."""
        with self._lock:
            return self._sending

    def done(self) -> bool:
        with self._lock:
            return self._pending_events == 0

    def finish(self, reports: list[Undeliverable]) -> int:
        """At the deadline: append a report for every batch not done to `reports` (the pool
        writes everything left in one go); returns how many events. Idempotent."""
        with self._lock:
            self._finished = True
            left = [batch for batch in self._batches if batch.state != _DONE]
            states = [(batch, batch.state) for batch in left]
            for batch in left:
                batch.state = _DONE
            self._pending_events = 0
            self._pending_batches = 0
            self._pending.clear()
        for batch, state in states:
            last = f"; last attempt: {batch.last_cause}" if batch.last_cause else ""
            if state == _SENDING:
                why = f"in a request that had not completed when the deadline passed{last}"
            else:
                why = f"waiting for a delivery thread when the deadline passed{last}"
            reports.append(
                Undeliverable(
                    workspace_id=batch.workspace_id,
                    write_key_fingerprint=batch.key_fingerprint,
                    endpoint=batch.endpoint,
                    messages=batch.messages,
                    reason=SHUTDOWN_DEADLINE,
                    detail=f"{len(batch.messages)} event(s) {why}",
                    in_doubt=state == _SENDING,
                )
            )
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
                self._spawn()
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
            wall, cpu = time.perf_counter(), time.thread_time()
            error = self._post(batch, remaining)
            if error is None:
                self.pace.record(time.perf_counter() - wall, time.thread_time() - cpu)
                if self._claim(batch):
                    self._reporter.delivered(batch.workspace_id, batch.messages)
                return
            status = getattr(error, "status", None)
            batch.last_cause = describe_failure(error, batch.endpoint)
            if isinstance(status, int) and is_not_retried(status):
                self._settle(batch, REJECTED, f"{len(batch.messages)} event(s): {batch.last_cause}", status)
                return
            time.sleep(max(0.0, min(RETRY_PAUSE, self._deadline - time.monotonic())))

    def _post(self, batch: _Batch, remaining: float) -> Exception | None:
        """One request through the library's `post`; the error it raised, or None once sent."""
        with self._lock:
            self._sending += 1
        try:
            post_batch(
                batch.write_key,
                batch.endpoint,
                batch.messages,
                gzip=self._settings.gzip,
                timeout=min(self._settings.timeout, remaining),
            )
        except Exception as error:
            return error
        finally:
            with self._lock:
                self._sending -= 1
        return None

    def _claim(self, batch: _Batch) -> bool:
        """Mark `batch` done; False when `finish` already reported it."""
        with self._lock:
            if batch.state == _DONE:
                return False
            batch.state = _DONE
            self._pending_events -= len(batch.messages)
            self._pending_batches -= 1
            return True

    def _settle(self, batch: _Batch, reason: str, detail: str, status: int | None) -> None:
        if self._claim(batch):
            self._report_lost(batch, reason, detail, status, False)

    def _report_lost(self, batch: _Batch, reason: str, detail: str, status: int | None, in_doubt: bool) -> None:
        self._reporter.lost(
            batch.workspace_id,
            batch.key_fingerprint,
            batch.endpoint,
            batch.messages,
            reason,
            detail,
            status,
            in_doubt=in_doubt,
        )


def _chunks(messages: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    """Batches of at most `size` events and under the library's batch byte limit."""
    if len(messages) <= size and len(messages) * MESSAGE_SIZE_LIMIT < BATCH_SIZE_LIMIT:
        # Each message was checked against the per-message limit when it was accepted, so
        # these cannot reach the batch limit: no need to serialize them to find out.
        return [messages] if messages else []
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
