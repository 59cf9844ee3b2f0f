"""Handing undeliverable events to the dead-letter callback: one log line, one report, counted.

Every path that gives up on events (the library's `on_error`, a full queue, a deadline, a
pool that is shut down) goes through `Reporter`, so the log line has the same shape
everywhere (structured `extra`: workspace, count, reason, status), the counters in
`DeliveryPool.stats()` see everything, and a failing callback never kills the thread that
called it (often a library consumer thread).
"""

from __future__ import annotations

import logging
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
# What reporting one event costs until measured: the dead-letter store scrubs every string of
# every event for secrets before its bulk write (135-260 us an event on a busy 2-core machine);
# a plain callback (a list, a queue) costs next to nothing.
SECONDS_PER_EVENT_STORE: Final = 300e-6
SECONDS_PER_EVENT_PLAIN: Final = 20e-6  # building the report counts too, not only the callback
BULK_SAMPLE_MIN: Final = 50  # fewer events time the commit, not the per-event cost


class DeliveryObserver(Protocol):
    """Told every event's outcome; called on delivery threads, so it must be quick and thread-safe."""

    def delivered(self, workspace_id: str, messages: list[dict[str, Any]]) -> None: ...

    def lost(self, undeliverable: Undeliverable) -> None: ...


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
        # What handing one event to the callback in bulk costs, as last measured: shutdown keeps
        # this much time per event still pending before its deadline, to report them in time.
        bulk = callable(getattr(on_undeliverable, "record_many", None))
        self.seconds_per_event = SECONDS_PER_EVENT_STORE if bulk else SECONDS_PER_EVENT_PLAIN

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

    def lost_many(self, undeliverables: list[Undeliverable]) -> None:
        """Report many at once, unlogged (the caller logs one line): a callback with `record_many`
        (the dead-letter recorder) writes them in one transaction, so a deadline giving up on
        thousands of workspaces costs one commit, not thousands."""
        if not undeliverables:
            return
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
            return
        record_many = getattr(self._callback, "record_many", None)
        started = time.perf_counter()
        events = sum(undeliverable.count for undeliverable in undeliverables)
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
        if events >= BULK_SAMPLE_MIN:
            measured = (time.perf_counter() - started) / events
            self.seconds_per_event = max(
                measured, 0.5 * self.seconds_per_event + 0.5 * measured, SECONDS_PER_EVENT_PLAIN
            )

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

    def take_shutdown_losses(self) -> Counter[str]:
        """Events reported as "shutdown_deadline" since the last call, per workspace."""
        with self._lock:
            taken, self._shutdown_lost = self._shutdown_lost, Counter()
        return taken

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.by_reason)
