"""Handing undeliverable events to the dead-letter callback: one log line, one report, counted.

Every path that gives up on events (the library's `on_error`, a full queue, a deadline, a
pool that is shut down) goes through `Reporter`, so the log line has the same shape
everywhere (structured `extra`: workspace, count, reason, status), the counters in
`DeliveryPool.stats()` see everything, and a failing callback never kills the thread that
called it (often a library consumer thread).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..core import QUEUE_FULL, SHUTDOWN_DEADLINE, Counters, Undeliverable
from .calls import without_nulls

if TYPE_CHECKING:
    from .spool import Spool

logger = logging.getLogger("quickbot_segment_plugin.delivery")

# May return how many events it kept: 0 (a failed dead-letter write) leaves them in the spool,
# so the next process delivers them rather than nobody.
OnUndeliverable = Callable[[Undeliverable], "int | None"]
# What reporting costs until measured, per report and per event. A report has a fixed cost
# whatever it holds (building it, the observers, the callback's per-call work, the spool's
# acknowledgement): a deadline giving up on 10,000 workspaces makes 10,000 reports of one event
# each, so an estimate per event alone falls short by that much. The dead-letter store also
# scrubs every string of every event for secrets before its bulk write (135-260 us an event on
# a busy 2-core machine); a plain callback (a list, a queue) costs next to nothing per event.
SECONDS_PER_REPORT_STORE: Final = 60e-6
SECONDS_PER_EVENT_STORE: Final = 300e-6
SECONDS_PER_REPORT_PLAIN: Final = 25e-6
SECONDS_PER_EVENT_PLAIN: Final = 2e-6
# How much the priors weigh against measurements: as much as a call of two reports (or two
# events), so a lucky call or two cannot undo them, and a hundred calls or one big one can.
PRIOR_WEIGHT: Final = 2.0
# Older measurements fade (each call counts 1% less than the next): the machine's load, and so
# the cost, changes over a process's life.
MEASUREMENT_DECAY: Final = 0.99


class DeliveryObserver(Protocol):
    """Told every event's outcome; called on delivery threads, so it must be quick and thread-safe."""

    def delivered(self, workspace_id: str, messages: list[dict[str, Any]]) -> None: ...

    def lost(self, undeliverable: Undeliverable) -> None: ...


# The load average is read at most this often: a report on a caller's thread (a full queue)
# must not pay a system call, and the average itself moves over seconds.
LOAD_READ_SECONDS: Final = 1.0
_load: tuple[float, float] = (float("-inf"), 1.0)  # (read at, factor)


def load_factor() -> float:
    """How many times over the machine's cores are booked (1.0 when not overloaded).

    On a machine running five times as many busy threads as it has cores, this process gets a
    fifth of the CPU time it would alone, and reporting (CPU-bound) takes five times as long.
    """
    global _load
    now = time.monotonic()
    read_at, factor = _load
    if now - read_at < LOAD_READ_SECONDS:
        return factor
    try:
        factor = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    except (AttributeError, OSError):  # no load average on this platform
        factor = 1.0
    _load = (now, factor)
    return factor


class ReportCost:
    """A running estimate of what reporting costs: seconds per report plus seconds per event.

    Shutdown keeps this much time before its deadline to report what is still pending then,
    so it must be right for the mix it will meet (one report of thousands of events, or
    thousands of reports of one). Every timed report refines it: a least-squares fit of
    `seconds = per_report * reports + per_event * events` over recent measurements, pulled
    towards the priors so that a few small calls, whose time is mostly a fixed overhead, do
    not swing it. Measurements are taken back to an unloaded machine (divided by the load
    factor at the time) and estimates scaled by the load factor now. Thread-safe.
    """

    def __init__(self, per_report: float, per_event: float) -> None:
        self._prior = (per_report, per_event)
        self._lock = threading.Lock()
        # Decayed sums of the normal equations: reports^2, reports*events, events^2, reports*t, events*t.
        self._sums = [0.0, 0.0, 0.0, 0.0, 0.0]
        self._fit = (per_report, per_event)

    def observe(self, reports: int, events: int, seconds: float) -> None:
        if reports <= 0 or seconds < 0:
            return
        seconds /= load_factor()
        with self._lock:
            sums = [value * MEASUREMENT_DECAY for value in self._sums]
            sums[0] += reports * reports
            sums[1] += reports * events
            sums[2] += events * events
            sums[3] += reports * seconds
            sums[4] += events * seconds
            self._sums = sums
            self._fit = self._solve(sums)

    def coefficients(self) -> tuple[float, float]:
        """(seconds per report, seconds per event) on an unloaded machine, as measured so far."""
        return self._fit

    def estimate(self, reports: int, events: int) -> float:
        """Seconds to report that much now, at the machine's present load."""
        per_report, per_event = self._fit
        return (per_report * reports + per_event * events) * load_factor()

    def _solve(self, sums: list[float]) -> tuple[float, float]:
        """Ridge regression towards the priors; never below a tenth of them (noise, a lucky run)."""
        rr, re_, ee, rt, et = sums
        prior_report, prior_event = self._prior
        weight = PRIOR_WEIGHT * PRIOR_WEIGHT
        a11, a12, a22 = rr + weight, re_, ee + weight
        b1, b2 = rt + weight * prior_report, et + weight * prior_event
        determinant = a11 * a22 - a12 * a12
        if determinant <= 0:
            return self._fit
        per_report = (b1 * a22 - a12 * b2) / determinant
        per_event = (a11 * b2 - a12 * b1) / determinant
        return max(per_report, 0.1 * prior_report), max(per_event, 0.1 * prior_event)


class Reporter:
    """Counts and forwards `Undeliverable`s, and tells the spool what left it; thread-safe."""

    def __init__(
        self, on_undeliverable: OnUndeliverable | None, counters: Counters | None = None, spool: Spool | None = None
    ) -> None:
        self._callback = on_undeliverable
        self._counters = counters
        self.spool = spool
        self._lock = threading.Lock()
        self.by_reason: Counter[str] = Counter()
        self._shutdown_lost: Counter[str] = Counter()
        self._observers: tuple[DeliveryObserver, ...] = ()
        # What reporting costs, as measured: shutdown keeps time for what is still pending
        # before its deadline, to report it in time.
        bulk = callable(getattr(on_undeliverable, "record_many", None))
        self.cost = (
            ReportCost(SECONDS_PER_REPORT_STORE, SECONDS_PER_EVENT_STORE)
            if bulk
            else ReportCost(SECONDS_PER_REPORT_PLAIN, SECONDS_PER_EVENT_PLAIN)
        )

    @property
    def has_callback(self) -> bool:
        return self._callback is not None

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()

    def lost(
        self,
        workspace_id: str,
        key_fingerprint: str,
        endpoint: str,
        messages: list[dict[str, Any]],
        reason: str,
        detail: str,
        status: int | None = None,
        *,
        log: bool = True,
        in_doubt: bool = False,
    ) -> None:
        """Log one line for these events (unless `log` is False) and report them."""
        if not messages:
            return
        messages = [without_nulls(message) for message in messages]
        if log:
            logger.error(
                "Segment delivery failed for %d event(s) of workspace %s (%s): %s",
                len(messages),
                workspace_id,
                reason,
                detail,
                extra={
                    "workspace": workspace_id,
                    "count": len(messages),
                    "reason": reason,
                    "status": status,
                    "write_key_fingerprint": key_fingerprint,
                    "endpoint": endpoint,
                },
            )
        self.report(
            Undeliverable(
                workspace_id=workspace_id,
                write_key_fingerprint=key_fingerprint,
                endpoint=endpoint,
                messages=messages,
                reason=reason,
                detail=detail,
                status=status,
                in_doubt=in_doubt,
            )
        )

    def add_observer(self, observer: DeliveryObserver) -> None:
        """Also tell `observer` each event's outcome (the CLI's `run` report); never on the hot path."""
        with self._lock:
            self._observers = (*self._observers, observer)

    def lost_many(self, undeliverables: list[Undeliverable], started: float | None = None) -> None:
        """Report many at once, unlogged (the caller logs one line): a callback with `record_many`
        (the dead-letter recorder) writes them in one transaction, so a deadline giving up on
        thousands of workspaces costs one commit, not thousands.

        `started` (a `time.perf_counter()` reading) is when the caller began building these
        reports: the measured cost then includes the building, which the deadline pays too.
        """
        if not undeliverables:
            return
        if started is None:
            started = time.perf_counter()
        events = sum(undeliverable.count for undeliverable in undeliverables)
        with self._lock:
            for undeliverable in undeliverables:
                self.by_reason[undeliverable.reason] += undeliverable.count
                if undeliverable.reason == SHUTDOWN_DEADLINE:
                    self._shutdown_lost[undeliverable.workspace_id] += undeliverable.count
        for observer in self._observers:
            for undeliverable in undeliverables:
                try:
                    observer.lost(undeliverable)
                except Exception:
                    logger.exception("A delivery observer failed")
        if self._callback is None:
            for undeliverable in undeliverables:  # nobody was asked to keep them: they leave the spool
                self._leave_spool(undeliverable.workspace_id, undeliverable.messages)
            self.cost.observe(len(undeliverables), events, time.perf_counter() - started)
            return
        record_many = getattr(self._callback, "record_many", None)
        kept: int | None = None
        try:
            if callable(record_many):
                kept = record_many(undeliverables)
            else:
                for undeliverable in undeliverables:
                    self._callback(undeliverable)
        except Exception:
            kept = 0
            logger.exception("on_undeliverable failed for %d report(s)", len(undeliverables))
        # Kept (or nobody said otherwise): they leave the spool. Not kept: they stay in it, for
        # the next process to deliver.
        if not (isinstance(kept, int) and kept == 0 and events):
            for undeliverable in undeliverables:
                self._leave_spool(undeliverable.workspace_id, undeliverable.messages)
        self.cost.observe(len(undeliverables), events, time.perf_counter() - started)

    def delivered(self, workspace_id: str, messages: list[dict[str, Any]]) -> None:
        """Segment acknowledged these events of this workspace (consumer thread)."""
        if self._counters is not None:
            self._counters.delivered(workspace_id, len(messages))
        for observer in self._observers:
            try:
                observer.delivered(workspace_id, messages)
            except Exception:
                logger.exception("A delivery observer failed")
        if self.spool is not None:
            self._leave_spool(workspace_id, messages)

    def _leave_spool(self, workspace_id: str, messages: list[dict[str, Any]]) -> None:
        spool = self.spool
        if spool is None:
            return
        try:
            spool.ack(workspace_id, [str(message.get("messageId")) for message in messages])
        except Exception:  # never kill a consumer thread; the worst case is a copy after a restart
            logger.exception("Could not acknowledge %d event(s) in the Segment spool", len(messages))

    def queue_full_warning(self, workspace_id: str, detail: str) -> None:
        """`detail` is the one the dead letters get: "delivery queue full (10000000 bytes)" ..."""
        logger.warning(
            "Segment workspace %s: %s; events go to the dead-letter store until it drains",
            workspace_id,
            detail,
            extra={"workspace": workspace_id, "count": 1, "reason": QUEUE_FULL, "status": None},
        )

    def report(self, undeliverable: Undeliverable) -> None:
        started = time.perf_counter()
        with self._lock:
            self.by_reason[undeliverable.reason] += undeliverable.count
            if undeliverable.reason == SHUTDOWN_DEADLINE:
                self._shutdown_lost[undeliverable.workspace_id] += undeliverable.count
        for observer in self._observers:
            try:
                observer.lost(undeliverable)
            except Exception:
                logger.exception("A delivery observer failed")
        kept: int | None = None
        if self._callback is not None:
            try:
                kept = self._callback(undeliverable)
            except Exception:
                kept = 0
                logger.exception(
                    "on_undeliverable failed for %d event(s) of workspace %s",
                    undeliverable.count,
                    undeliverable.workspace_id,
                )
        # Kept by the dead-letter store (or nobody was asked to keep them): they leave the spool.
        if not (isinstance(kept, int) and kept == 0 and undeliverable.count):
            self._leave_spool(undeliverable.workspace_id, undeliverable.messages)
        self.cost.observe(1, undeliverable.count, time.perf_counter() - started)

    def take_shutdown_losses(self) -> Counter[str]:
        """Events reported as "shutdown_deadline" since the last call, per workspace."""
        with self._lock:
            taken, self._shutdown_lost = self._shutdown_lost, Counter()
        return taken

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.by_reason)
