"""Per-workspace event counters, so an operator can account for every event a conversation produced.

segment-analytics-python loses events quietly (a full queue is only a warning, retries end in
a callback, interpreter exit drops the queue). Counting each step per workspace (executed,
queued, delivered, failed, dead-lettered, ...) turns "some events are missing" into numbers
that must add up.

Counting sits on the hot path of `execute`, so an increment is one lock and one dict update,
O(1) whatever the number of workspaces; totals are summed only when a snapshot is taken.
Counters live in process memory: `COUNTERS.snapshot()` shows this process. `CounterFlusher`
copies the increments, every few seconds on its own thread (never on the hot path), into a
durable sink (the dead-letter store), so `quickbot-segment stats` in another process can see
the sum over every worker that flushed.

In a forked child (gunicorn preload, celery prefork) every `Counters` starts again from zero:
the parent's numbers are the parent's to report, and a child that kept them would flush them
a second time.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

__all__ = [
    "COUNTERS",
    "DEAD_LETTERED",
    "DEAD_LETTER_WRITE_FAILED",
    "DELIVERED",
    "DUPLICATES_SKIPPED",
    "EXECUTED",
    "FAILED",
    "OTHER_WORKSPACES",
    "QUEUED",
    "REPLAYED",
    "STANDARD_COUNTERS",
    "CounterFlusher",
    "CounterSink",
    "Counters",
]

logger = logging.getLogger("quickbot_segment_plugin.counters")

EXECUTED: Final = "executed"  # execute() ran for a conversation (any outcome)
QUEUED: Final = "queued"  # the message was accepted by the delivery pool
DELIVERED: Final = "delivered"  # Segment acknowledged the message
FAILED: Final = "failed"  # execute() returned status "failed"
DEAD_LETTERED: Final = "dead_lettered"  # the message was written to the dead-letter store
DUPLICATES_SKIPPED: Final = "duplicates_skipped"  # a retried execution whose message was already queued
REPLAYED: Final = "replayed"  # a dead letter was sent again and accepted
DEAD_LETTER_WRITE_FAILED: Final = "dead_letter_write_failed"  # lost: the store could not be written
DEAD_LETTERS_PRUNED: Final = "dead_letters_pruned"  # undelivered rows removed by retention limits

STANDARD_COUNTERS: Final = (EXECUTED, QUEUED, DELIVERED, FAILED, DEAD_LETTERED, DUPLICATES_SKIPPED, REPLAYED)

# Past this many distinct workspaces, further ones are counted together under this name, so a
# host serving an unbounded number of tenants keeps this module's memory bounded.
OTHER_WORKSPACES: Final = "(other workspaces)"
DEFAULT_MAX_WORKSPACES: Final = 100_000


class Counters:
    """Thread-safe monotonic counters keyed by (workspace, name).

    Names are free-form (`inc`), with methods for the standard ones. Values only grow (until
    `reset`), which is what lets a flusher send differences without coordinating with callers.
    """

    def __init__(self, max_workspaces: int = DEFAULT_MAX_WORKSPACES) -> None:
        if max_workspaces < 1:
            raise ValueError("max_workspaces must be at least 1")
        self._max_workspaces = max_workspaces
        self._lock = threading.Lock()
        self._by_workspace: dict[str, dict[str, int]] = {}
        self._since = datetime.now(UTC)
        self._generation = 0  # bumped by reset(), so a flusher knows its baseline is stale
        _ALL_COUNTERS.add(self)

    def inc(self, workspace_id: str, name: str, n: int = 1) -> None:
        """Add `n` (>= 0) to `name` of `workspace_id`; O(1)."""
        if n < 0:
            raise ValueError(f"counters only grow; {name} cannot be increased by {n}")
        with self._lock:
            counts = self._counts_of(workspace_id)
            counts[name] = counts.get(name, 0) + n

    def inc_each(self, workspace_id: str, names: tuple[str, ...]) -> None:
        """Add 1 to each of `names` at once: a reader never sees an execution counted half."""
        with self._lock:
            counts = self._counts_of(workspace_id)
            for name in names:
                counts[name] = counts.get(name, 0) + 1

    def _counts_of(self, workspace_id: str) -> dict[str, int]:
        """The counts of `workspace_id` (or of OTHER_WORKSPACES past the cap); call under `_lock`."""
        counts = self._by_workspace.get(workspace_id)
        if counts is None:
            if len(self._by_workspace) >= self._max_workspaces:
                workspace_id = OTHER_WORKSPACES
            counts = self._by_workspace.setdefault(workspace_id, {})
        return counts

    def executed(self, workspace_id: str, n: int = 1) -> None:
        self.inc(workspace_id, EXECUTED, n)

    def queued(self, workspace_id: str, n: int = 1) -> None:
        self.inc(workspace_id, QUEUED, n)

    def delivered(self, workspace_id: str, n: int = 1) -> None:
        self.inc(workspace_id, DELIVERED, n)

    def failed(self, workspace_id: str, n: int = 1) -> None:
        self.inc(workspace_id, FAILED, n)

    def dead_lettered(self, workspace_id: str, n: int = 1) -> None:
        self.inc(workspace_id, DEAD_LETTERED, n)

    def duplicates_skipped(self, workspace_id: str, n: int = 1) -> None:
        self.inc(workspace_id, DUPLICATES_SKIPPED, n)

    def replayed(self, workspace_id: str, n: int = 1) -> None:
        self.inc(workspace_id, REPLAYED, n)

    def get(self, workspace_id: str, name: str) -> int:
        with self._lock:
            return self._by_workspace.get(workspace_id, {}).get(name, 0)

    def values(self) -> tuple[int, dict[tuple[str, str], int]]:
        """(generation, {(workspace, name): value}): a flat copy for flushing."""
        with self._lock:
            flat = {
                (workspace, name): value
                for workspace, counts in self._by_workspace.items()
                for name, value in counts.items()
            }
            return self._generation, flat

    def snapshot(self) -> dict[str, Any]:
        """`{"since": ISO time, "workspaces": {ws: {name: n}}, "totals": {name: n}}`.

        Totals always list the standard counters (zeros included) so a dashboard's columns
        do not come and go; per-workspace entries list only what happened there.
        """
        with self._lock:
            workspaces = {workspace: dict(counts) for workspace, counts in self._by_workspace.items()}
            since = self._since
        totals: dict[str, int] = dict.fromkeys(STANDARD_COUNTERS, 0)
        for counts in workspaces.values():
            for name, value in counts.items():
                totals[name] = totals.get(name, 0) + value
        return {"since": since.isoformat(), "workspaces": workspaces, "totals": totals}

    def reset(self) -> None:
        """Back to zero (a test, or a forked child)."""
        with self._lock:
            self._by_workspace = {}
            self._since = datetime.now(UTC)
            self._generation += 1

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()  # the parent's may have been held by a thread that is not here
        self.reset()

    def __repr__(self) -> str:
        with self._lock:
            return f"<Counters workspaces={len(self._by_workspace)}>"


class CounterSink(Protocol):
    """Where a flusher writes: it must add (not set) each delta, so many processes can share it."""

    def record_counters(self, deltas: Mapping[tuple[str, str], int]) -> bool:
        """Add each `(workspace, name) -> delta`; True when they were stored, False to try again later."""
        ...


class CounterFlusher:
    """Copies counter increments into a durable sink on a background thread.

    Keeps the values it last flushed and sends only the differences, so the hot path does no
    extra work and several processes can add into one table. A failed write is retried with the
    next flush (the differences accumulate), so nothing is counted twice or lost while the
    process lives; what was counted after the last successful flush dies with the process.
    `flush()` at shutdown (the flusher registers one at interpreter exit) narrows that window.
    """

    def __init__(self, counters: Counters, sink: CounterSink, interval: float = 10.0) -> None:
        if interval <= 0:
            raise ValueError("interval must be more than 0 seconds")
        self._counters = counters
        self._sink = sink
        self._interval = interval
        self._flush_lock = threading.Lock()
        self._flushed: dict[tuple[str, str], int] = {}
        self._generation = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._atexit_registered = False

    def ensure_running(self) -> None:
        """Start the thread if it is not running here (first use, or in a forked child)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._flush_lock = threading.Lock()
            self._flushed, self._generation = {}, -1
            self._thread = None
            self._stop = threading.Event()
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="quickbot-segment-counters", daemon=True)
        self._thread.start()
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True

    def flush(self) -> bool:
        """Send what changed since the last successful flush; True when the sink took it."""
        with self._flush_lock:
            generation, current = self._counters.values()
            if generation != self._generation:  # counters were reset: everything is new
                self._flushed, self._generation = {}, generation
            deltas = {key: value - self._flushed.get(key, 0) for key, value in current.items()}
            deltas = {key: delta for key, delta in deltas.items() if delta > 0}
            if not deltas:
                return True
            try:
                stored = self._sink.record_counters(deltas)
            except Exception:  # a sink must not raise, but a flusher thread must not die either
                logger.exception("could not persist Segment block counters; will retry")
                stored = False
            if stored:
                self._flushed = current
            return stored

    def stop(self, flush: bool = True) -> None:
        """Stop the thread (after a last flush, by default); safe to call more than once."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=self._interval + 5)
        self._thread = None
        if flush and self._pid == os.getpid():
            self.flush()
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()


# Every Counters in this process, so a forked child can zero them all (weak: a dropped one just goes).
_ALL_COUNTERS: weakref.WeakSet[Counters] = weakref.WeakSet()

COUNTERS: Final = Counters()
"""The process-wide counters the plugin increments."""


def _after_fork_in_child() -> None:
    for counters in list(_ALL_COUNTERS):
        counters._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
