"""One long-lived `segment.analytics.Client` and its lifecycle: live, closing, finished.

The pool owns many of these; this module knows the library's insides so the pool does not.
What it handles, and why:

- The client is built with `send=False` and switched on only after the hooks below are in
  place, then its consumer thread is started here. Built the usual way, the library starts
  the consumer (which may already be waiting for its first batch through the unhooked
  methods) and registers `atexit.register(client.join)`, which would keep every client alive
  for the life of the process and, at exit, send just one more batch per client. We still
  call `atexit.unregister(client.join)` in case a library version registers regardless.
- The library's `flush()` waits forever, so nothing here calls it. Progress is read from
  `queue.unfinished_tasks` (queued + taken by the consumer but not yet finished), which
  lets one thread watch hundreds of clients flush in parallel, each against a deadline.
- To close promptly, a closing client's consumer is "hurried": its `upload_interval` drops
  to `HURRY_INTERVAL` and a wake-up marker is queued, so a consumer waiting for a partial
  batch sends what it has now instead of after the interval, then stops as soon as its queue
  is empty. The marker is removed from every batch before it can be sent.
- Nothing is lost silently when time runs out: the batch the consumer holds (`_held`, from
  `next()` until `upload()` returns), the events it has taken off the queue for a batch it is
  still filling (`_TakenQueue.taken`: inside the library's `next()` they are in a local list
  nobody else can see), and whatever is still queued are reported; a batch the consumer hands
  back later (`_requeue`, e.g. a retry wait cut short) or fails later (`on_error`) is reported
  then, each event once. A batch the consumer finishes filling after that is not sent.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterable
from typing import Any, Final

from segment.analytics import Client

from .delivery_calls import LibraryCall, without_nulls
from .delivery_reports import Reporter
from .delivery_settings import DeliverySettings
from .delivery_types import CLIENT_CLOSED, QUEUE_FULL, REJECTED, RETRIES_EXHAUSTED
from .redaction import fingerprint, redact

logger = logging.getLogger("quickbot_segment_plugin.delivery")

# A closing consumer polls its queue this often, so it stops within this long of draining.
HURRY_INTERVAL: Final = 0.01
MAX_DETAIL_CHARS: Final = 500

# Queued into a closing client only to wake its consumer; compared by identity, never sent.
_WAKE: Final[dict[str, Any]] = {"type": "quickbot.wake"}

# How `submit` went.
QUEUED: Final = "queued"
FULL: Final = "full"
CLOSED: Final = "closed"


class _TakenQueue(queue.Queue[dict[str, Any]]):
    """The client's queue, remembering what the consumer thread took for the batch it is filling.

    The library's `next()` takes events one by one into a local list for up to the flush
    interval; a deadline passing meanwhile would find them neither queued nor held. `_get` runs
    under the queue's mutex, so reading `taken` under that mutex (after draining) sees every
    event exactly where it is.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.taker: threading.Thread | None = None
        self.taken: list[dict[str, Any]] = []

    def _get(self) -> dict[str, Any]:
        item = super()._get()
        if threading.current_thread() is self.taker:
            self.taken.append(item)
        return item


class ManagedClient:
    """A library client for one (workspace, write key, endpoint), with a close that keeps its promises."""

    def __init__(
        self,
        workspace_id: str,
        write_key: str,
        endpoint: str,
        settings: DeliverySettings,
        reporter: Reporter,
    ) -> None:
        self.workspace_id = workspace_id
        self.endpoint = endpoint
        self.fingerprint = fingerprint(write_key)
        self.last_used = time.monotonic()
        self.accepting = True
        self.close_deadline: float | None = None
        self.close_reason = CLIENT_CLOSED
        self.queue_full_warned = False
        self.abandoned = False  # given up on at a deadline with events still queued or in flight
        self._reporter = reporter
        self._lock = threading.Lock()
        self._finalized = False  # leftovers reported; anything surfacing later is reported directly
        self._reported_ids: set[str] = set()
        self._held: list[dict[str, Any]] | None = None
        self._client = Client(
            write_key=write_key,
            host=endpoint,
            on_error=self._on_error,
            send=False,  # see the module docstring: switched on below, once hooked
            thread=1,  # thread > 1 is broken in the library (only the last consumer is joined)
            max_queue_size=settings.max_queue_size,
            upload_size=settings.batch_size,
            upload_interval=settings.flush_interval,
            gzip=settings.gzip,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            max_total_backoff_duration=settings.max_backoff_seconds,
            max_rate_limit_duration=settings.max_rate_limit_seconds,
        )
        atexit.unregister(self._client.join)
        self._consumer: threading.Thread = self._client.consumers[0]
        # Swapped in while still empty, before anything can be queued or the consumer runs.
        self._queue = _TakenQueue(settings.max_queue_size)
        self._queue.taker = self._consumer
        self._client.queue = self._queue
        consumer: Any = self._consumer
        consumer.queue = self._queue
        self._consumer.name = f"quickbot-segment-delivery[{workspace_id[:40]}]"
        self._hook_consumer()
        self._client.send = True
        self._consumer.start()

    def __repr__(self) -> str:
        return f"<ManagedClient workspace={self.workspace_id!r} key={self.fingerprint} endpoint={self.endpoint!r}>"

    # --- the enqueue side -------------------------------------------------------------

    def submit(self, call: LibraryCall) -> tuple[str, dict[str, Any] | None]:
        """Queue one call: (QUEUED | FULL, the library's message) or (CLOSED, None) once closing."""
        with self._lock:
            if not self.accepting:
                return CLOSED, None
            queued, message = call.apply(self._client)
        return (QUEUED if queued else FULL), message

    def touch(self) -> None:
        """Mark as just used (idle eviction goes by this)."""
        self.last_used = time.monotonic()

    @property
    def unfinished(self) -> int:
        """Events queued or taken by the consumer and not yet sent or failed."""
        return self._queue.unfinished_tasks

    @property
    def settled(self) -> bool:
        """Nothing more to wait for: flushed and stopped, or abandoned with its events reported."""
        return self._finalized

    # --- closing ----------------------------------------------------------------------

    def begin_close(self, deadline: float, reason: str) -> None:
        """Stop accepting, and make the consumer send what it has now; O(1), idempotent."""
        with self._lock:
            self.accepting = False
            if self.close_deadline is not None and self.close_deadline <= deadline:
                return
            self.close_deadline = deadline
            self.close_reason = reason
        consumer: Any = self._consumer
        consumer.upload_interval = min(consumer.upload_interval, HURRY_INTERVAL)
        # A full queue means the consumer is not waiting for items anyway.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_WAKE)

    def advance(self, now: float) -> bool:
        """Move a closing client on; True once its thread has ended and nothing is left.

        Called repeatedly by the pool's closer (one caller at a time). A drained client is
        paused and ends within HURRY_INTERVAL; one past its deadline is abandoned: what it
        still holds is reported under its close reason, and its thread (a daemon, perhaps
        stuck in a request) is left to end on its own.
        """
        if self._finalized:
            if self._consumer.is_alive():
                return False
            self._report_leftovers(self._drain(), "after its delivery thread ended")
            return True
        if self.unfinished == 0:
            self._consumer_pause()
            if not self._consumer.is_alive():
                self._finalized = True
                return True
            return False
        if self.close_deadline is not None and now >= self.close_deadline:
            self.abandon()
            return not self._consumer.is_alive()
        return False

    def abandon(self) -> int:
        """Give up waiting: report everything still queued or held; returns how many events."""
        with self._lock:
            self.accepting = False
        self._consumer_pause()
        self._finalized = True
        leftovers = self._drain()
        # After the drain: whatever the consumer took before it is in `taken` or `_held` now.
        with self._queue.mutex:
            held = list(self._held or ())
            taken = list(self._queue.taken)
        lost = self._report_leftovers(
            [*held, *taken, *leftovers], "still queued or in flight when the deadline passed", held=len(held)
        )
        # A thread that is only finishing its last empty wait is not abandoned; one holding a
        # batch (stuck in a request) is, even though its events were already reported.
        self.abandoned = self.abandoned or lost > 0 or bool(held)
        return lost

    def forget_after_fork(self) -> None:
        """In a forked child: this client's thread does not exist here; only stop accepting."""
        self.accepting = False
        self._finalized = True

    # --- internals --------------------------------------------------------------------

    def _consumer_pause(self) -> None:
        consumer: Any = self._consumer
        consumer.pause()

    def _drain(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return items
            self._queue.task_done()
            if item is not _WAKE:
                items.append(item)

    def _unreported(self, messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each event is reported once, whichever path surfaces it first."""
        fresh: list[dict[str, Any]] = []
        with self._lock:
            for message in messages:
                if message is _WAKE:
                    continue
                message_id = str(message.get("messageId"))
                if message_id in self._reported_ids:
                    continue
                self._reported_ids.add(message_id)
                fresh.append(message)
        return fresh

    def _report_leftovers(self, messages: list[dict[str, Any]], why: str, *, held: int = 0) -> int:
        fresh = self._unreported(messages)
        if fresh:
            detail = f"{len(fresh)} event(s) {why}"
            if held:
                detail += f" ({held} in a request that had not completed)"
            self._emit(fresh, self.close_reason, detail, None)
        return len(fresh)

    def _emit(self, messages: list[dict[str, Any]], reason: str, detail: str, status: int | None) -> None:
        self._reporter.lost(self.workspace_id, self.fingerprint, self.endpoint, messages, reason, detail, status)

    def _on_error(self, error: Exception, batch: list[dict[str, Any]]) -> None:
        """The library gave up on a batch (consumer thread): one report and one log line for it."""
        try:
            if self._finalized or self.close_deadline is not None:
                # Closing: the deadline may report the held batch too; each event once.
                messages = self._unreported(batch)
            else:
                messages = [message for message in batch if message is not _WAKE]
            if not messages:
                return
            status = getattr(error, "status", None)
            status = status if isinstance(status, int) else None
            detail = redact(str(error))[:MAX_DETAIL_CHARS] or type(error).__name__
            self._emit(messages, classify_failure(error, status), detail, status)
        except Exception:  # never let reporting kill the consumer thread
            logger.exception("Could not report undeliverable events of workspace %s", self.workspace_id)

    def _hook_consumer(self) -> None:
        consumer: Any = self._consumer
        original_next = consumer.next
        original_upload = consumer.upload
        original_requeue = consumer._requeue
        work_queue = self._queue

        def next_batch() -> list[dict[str, Any]]:
            batch: list[dict[str, Any]] = original_next()
            if any(item is _WAKE for item in batch):
                for item in batch:
                    if item is _WAKE:
                        work_queue.task_done()
                batch = [item for item in batch if item is not _WAKE]
            batch = [without_nulls(item) for item in batch]
            with work_queue.mutex:
                self._held = batch
                work_queue.taken.clear()
            if self._finalized and batch:
                # Abandoned while filling it: reported by `abandon`; nothing is sent after the deadline.
                self._report_leftovers(batch, "taken by the delivery thread when the deadline passed")
                for _ in batch:
                    work_queue.task_done()
                self._held = None
                return []
            return batch

        def upload() -> Any:
            # Success is read from `Consumer.upload()`'s own return value ("return whether
            # successful" in the library), with the batch we saw leave `next()`: no patch of
            # the request path, no parsing of bodies, and a library that changes what upload
            # returns breaks the delivered-count tests rather than counting wrongly in silence.
            succeeded = False
            try:
                succeeded = original_upload() is True
                return succeeded
            finally:
                batch, self._held = self._held, None
                if succeeded and batch:
                    self._reporter.delivered(self.workspace_id, len(batch))

        def requeue(batch: list[dict[str, Any]]) -> None:
            if self._finalized:
                # Nobody drains this queue any more: report instead of handing the batch back.
                self._report_leftovers(list(batch), "handed back by the delivery thread after close")
                return
            original_requeue(batch)

        consumer.next = next_batch
        consumer.upload = upload
        consumer._requeue = requeue


def is_not_retried(status: int) -> bool:
    """The statuses segment-analytics-python 2.4 gives up on at once (mirrors consumer.request)."""
    if 300 <= status < 400:
        return True
    if 400 <= status < 500:
        return status not in (408, 410, 429, 460)
    return status in (501, 505, 511)


def classify_failure(error: Exception, status: int | None) -> str:
    if status is not None:
        return REJECTED if is_not_retried(status) else RETRIES_EXHAUSTED
    if "queue full" in str(error).lower():
        return QUEUE_FULL
    return RETRIES_EXHAUSTED
