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
- A deep queue gets more requests in flight: extra senders are library `Consumer`s on the
  same queue, hooked like the first, started by a consumer that has just taken a batch and
  still sees a full one waiting, and ended as soon as it no longer does (`max_in_flight`
  per client, `SenderSlots` for the pool). The library's `thread=N` is not used: it starts
  N threads for good and joins only the last one.
- To close promptly, a closing client's consumers are "hurried": its `upload_interval` drops
  to `HURRY_INTERVAL` and a wake-up marker is queued, so a consumer waiting for a partial
  batch sends what it has now instead of after the interval, then stops as soon as its queue
  is empty. The marker is removed from every batch before it can be sent.
- Nothing is lost silently when time runs out: the batches the consumers hold (`_held`, from
  `next()` until `upload()` returns), the events they have taken off the queue for a batch
  still being filled (`DeliveryQueue.taken_by`: inside the library's `next()` they are in a
  local list nobody else can see), and whatever is still queued are reported; a batch the consumer hands
  back later (`_requeue`, e.g. a retry wait cut short) or fails later (`on_error`) is reported
  then, each event once. A batch the consumer finishes filling after that is not sent.
"""

from __future__ import annotations

import enum
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from ..core import CLIENT_CLOSED, QUEUE_FULL, REJECTED, RETRIES_EXHAUSTED, Undeliverable, fingerprint
from .calls import LibraryCall, without_nulls
from .causes import describe_failure, in_request, last_failure
from .final import FinalMessage
from .library import (
    BATCH_SIZE_LIMIT,
    Batch,
    LibraryConsumer,
    hook_consumer,
    is_not_retried,
    is_queue_full_error,
    new_client,
    new_sender,
    rate_limit_of,
    set_rate_limit,
    set_run,
    use_queue,
)
from .queue import WAKE as _WAKE
from .queue import DeliveryQueue
from .reports import Reporter
from .settings import DeliverySettings

logger = logging.getLogger("quickbot_segment_plugin.delivery")

# A closing consumer polls its queue this often, so it stops within this long of draining.
HURRY_INTERVAL: Final = 0.01
MAX_DETAIL_CHARS: Final = 500


class Submitted(enum.Enum):
    """How `submit` went."""

    QUEUED = "queued"
    FULL = "full"  # the queue had no room: the message is returned for the dead-letter store
    CLOSED = "closed"  # the client stopped accepting: try another (or report)


class SenderSlots:
    """The pool-wide cap on extra sender threads (beyond each client's own consumer).

    Extra senders are what let one workspace keep several requests in flight; the cap keeps
    the process's threads at max_clients + max_senders however many workspaces are busy.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self.started = 0  # extra senders ever started, for stats and tests
        self.peak = 0
        self._lock = threading.Lock()

    def try_take(self) -> bool:
        with self._lock:
            if self.in_use >= self.limit:
                return False
            self.in_use += 1
            self.started += 1
            self.peak = max(self.peak, self.in_use)
            return True

    def give_back(self) -> None:
        with self._lock:
            self.in_use -= 1


class ManagedClient:
    """A library client for one (workspace, write key, endpoint), with a close that keeps its promises.

    One consumer thread (the library's own) always runs; while the queue holds at least a
    full batch, extra senders (library `Consumer`s on the same queue, hooked the same way)
    start one by one up to `max_in_flight` and the pool-wide `SenderSlots`, and each stops
    as soon as the queue is no longer deep. What order is kept (see also docs/operators/delivery.md):

    - Batches are filled one at a time (`_fill_lock`), so each batch is a contiguous run of
      the queue, in the order events were accepted, and batches leave in queue order.
    - With one request in flight (a shallow queue: the normal state) batches also arrive in
      that order. With several in flight, a later batch can be acknowledged before an
      earlier one; every event keeps the timestamp it was given when accepted, which is
      what Segment orders a user's events by.
    - A batch handed back for a Retry-After goes to the end of the queue (the library's
      `_requeue`), behind events accepted meanwhile.
    """

    def __init__(
        self,
        workspace_id: str,
        write_key: str,
        endpoint: str,
        settings: DeliverySettings,
        reporter: Reporter,
        sender_slots: SenderSlots,
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
        self._settings = settings
        self._slots = sender_slots
        self._lock = threading.Lock()
        self._fill_lock = threading.Lock()
        self._stopping = False  # paused: no new sender may start
        self._finalized = False  # leftovers reported; anything surfacing later is reported directly
        self._reported_ids: set[str] = set()
        self._held: dict[threading.Thread, list[dict[str, Any]]] = {}
        # The library keeps 429 Retry-After state per consumer; a client with several shares
        # it here: (episode start, wait until) as the consumer that got the 429 recorded it.
        self._rate_limit: tuple[float, float | None] | None = None
        self._client, self._consumer = new_client(
            write_key,
            endpoint,
            self._on_error,
            max_queue_size=settings.max_queue_size,
            batch_size=settings.batch_size,
            flush_interval=settings.flush_interval,
            gzip=settings.gzip,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            max_backoff_seconds=settings.max_backoff_seconds,
            max_rate_limit_seconds=settings.max_rate_limit_seconds,
        )
        # Swapped in while still empty, before anything can be queued or the consumer runs.
        self._queue = DeliveryQueue(settings.max_queue_size, settings.max_queue_bytes)
        use_queue(self._client, self._consumer, self._queue)
        self._consumers: list[LibraryConsumer] = [self._consumer]
        self._consumer.name = f"quickbot-segment-delivery[{workspace_id[:40]}]"
        self._hook_consumer(self._consumer)
        self._client.send = True
        self._consumer.start()

    def __repr__(self) -> str:
        return f"<ManagedClient workspace={self.workspace_id!r} key={self.fingerprint} endpoint={self.endpoint!r}>"

    # --- the enqueue side -------------------------------------------------------------

    def submit(self, call: FinalMessage | LibraryCall) -> tuple[Submitted, dict[str, Any] | None]:
        """Queue one call: (QUEUED or FULL, the library's message), or (CLOSED, None) once closing."""
        with self._lock:
            if not self.accepting:
                return Submitted.CLOSED, None
            queued, message = call.apply(self._client)
        # Extra senders are started by the delivery threads (when they take a batch and see
        # the queue still deep), never here: starting a thread on the conversation's thread
        # put ~1 ms on execute's p99 in bench_execute.py, for a sender that starts at most one
        # round trip later from the consumer anyway.
        return (Submitted.QUEUED if queued else Submitted.FULL), message

    def touch(self) -> None:
        """Mark as just used (idle eviction goes by this)."""
        self.last_used = time.monotonic()

    @property
    def unfinished(self) -> int:
        """Events queued or taken by a consumer and not yet sent or failed."""
        return self._queue.unfinished_tasks

    @property
    def waiting(self) -> int:
        """Events queued and not yet taken for a batch (excludes the batches in flight)."""
        return self._queue.depth()[0]

    @property
    def settled(self) -> bool:
        """Nothing more to wait for: flushed and stopped, or abandoned with its events reported."""
        return self._finalized

    @property
    def senders(self) -> int:
        """Delivery threads of this client running now (its consumer plus extra senders)."""
        with self._lock:
            return len(self._consumers)

    def queue_full_detail(self) -> str:
        settings = self._settings
        if self._queue.full_because == "bytes":
            return f"delivery queue full ({settings.max_queue_bytes} bytes)"
        return f"delivery queue full ({settings.max_queue_size} events)"

    # --- closing ----------------------------------------------------------------------

    def begin_close(self, deadline: float, reason: str) -> None:
        """Stop accepting, and make the consumers send what they have now; O(1), idempotent."""
        with self._lock:
            self.accepting = False
            if self.close_deadline is not None and self.close_deadline <= deadline:
                return
            self.close_deadline = deadline
            self.close_reason = reason
            if self._stopping:
                # Already drained and paused: no consumer is left to take a wake-up marker, and
                # one left in the queue would keep the client "unfinished" until the deadline.
                return
            consumers = list(self._consumers)
        for consumer in consumers:
            consumer.upload_interval = min(consumer.upload_interval, HURRY_INTERVAL)
        # Even into a full queue: the marker costs nothing and wakes a waiting consumer.
        self._queue.put_marker(_WAKE)

    def advance(self, now: float) -> bool:
        """Move a closing client on; True once its threads have ended and nothing is left.

        Called repeatedly by the pool's closer (one caller at a time). A drained client is
        paused and ends within HURRY_INTERVAL; one past its deadline is abandoned: what it
        still holds is reported under its close reason, and its threads (daemons, perhaps
        stuck in a request) are left to end on their own.
        """
        if self._finalized:
            if self._any_alive():
                return False
            self._report_leftovers(self._drain(), "after its delivery thread ended")
            return True
        if self.unfinished == 0:
            self._pause_all()
            if not self._any_alive():
                self._finalized = True
                return True
            return False
        if self._stopping and not self._any_alive():
            # Paused and ended with something still counted (a marker queued as it paused):
            # report any event among it now rather than holding a client slot until the deadline.
            self._finalized = True
            self._report_leftovers(self._drain(), "left in the queue when its delivery thread ended")
            return True
        if self.close_deadline is not None and now >= self.close_deadline:
            self.abandon()
            return not self._any_alive()
        return False

    def abandon(self, collect: list[Undeliverable] | None = None) -> int:
        """Give up waiting: report everything still queued or held; returns how many events.

        With `collect`, the reports are appended there for the caller to hand over in one go.
        """
        with self._lock:
            self.accepting = False
        self._pause_all()
        self._finalized = True
        leftovers = self._drain()
        # After the drain: whatever a consumer took before it is in `taken` or `_held` now.
        with self._queue.mutex:
            sending = [item for thread, batch in self._held.items() if in_request(thread) for item in batch]
            waiting = [item for thread, batch in self._held.items() if not in_request(thread) for item in batch]
            taken = self._queue.taken()
        held = [*sending, *waiting]
        cause = last_failure(self.endpoint, self._client.write_key)
        last = f"; last attempt: {cause}" if cause else ""
        # A request still open may yet arrive: reported apart, as in doubt (a replay is
        # deduplicated by Segment on messageId).
        lost = self._report_leftovers(
            sending,
            f"in a request that had not completed when the deadline passed{last}",
            in_doubt=True,
            collect=collect,
        )
        lost += self._report_leftovers(
            [*waiting, *taken, *leftovers], f"not delivered when the deadline passed{last}", collect=collect
        )
        # A thread that is only finishing its last empty wait is not abandoned; one holding a
        # batch (stuck in a request) is, even though its events were already reported.
        self.abandoned = self.abandoned or lost > 0 or bool(held)
        return lost

    def forget_after_fork(self) -> None:
        """In a forked child: this client's threads do not exist here; only stop accepting."""
        self.accepting = False
        self._stopping = True
        self._finalized = True

    # --- internals --------------------------------------------------------------------

    def _any_alive(self) -> bool:
        with self._lock:
            consumers = list(self._consumers)
        return any(consumer.is_alive() for consumer in consumers)

    def _pause_all(self) -> None:
        with self._lock:
            self._stopping = True
            consumers = list(self._consumers)
        for consumer in consumers:
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

    def _report_leftovers(
        self,
        messages: list[dict[str, Any]],
        why: str,
        *,
        in_doubt: bool = False,
        collect: list[Undeliverable] | None = None,
    ) -> int:
        fresh = self._unreported(messages)
        if not fresh:
            return 0
        detail = f"{len(fresh)} event(s) {why}"
        if collect is None:
            self._emit(fresh, self.close_reason, detail, None, in_doubt=in_doubt)
        else:
            collect.append(
                Undeliverable(
                    workspace_id=self.workspace_id,
                    write_key_fingerprint=self.fingerprint,
                    endpoint=self.endpoint,
                    messages=[without_nulls(message) for message in fresh],
                    reason=self.close_reason,
                    detail=detail,
                    in_doubt=in_doubt,
                )
            )
        return len(fresh)

    def _emit(
        self, messages: list[dict[str, Any]], reason: str, detail: str, status: int | None, *, in_doubt: bool = False
    ) -> None:
        self._reporter.lost(
            self.workspace_id, self.fingerprint, self.endpoint, messages, reason, detail, status, in_doubt=in_doubt
        )

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
            detail = describe_failure(error, self.endpoint)[:MAX_DETAIL_CHARS]
            self._emit(messages, classify_failure(error, status), detail, status)
        except Exception:  # never let reporting kill the consumer thread
            logger.exception("Could not report undeliverable events of workspace %s", self.workspace_id)

    # --- extra senders ----------------------------------------------------------------

    def _deep(self) -> bool:
        """At least one full batch is waiting: another request in flight would carry it now."""
        events, size = self._queue.depth()
        return events >= self._settings.batch_size or size >= BATCH_SIZE_LIMIT

    def _rate_limited(self) -> bool:
        """Segment asked this client to wait (Retry-After): one request at a time until a success."""
        return self._rate_limit is not None

    def _maybe_add_sender(self) -> None:
        """Start one more sender if the queue is deep (after a batch is taken, or an event queued)."""
        if not self._deep() or self._rate_limited():
            return
        with self._lock:
            if self._stopping or self._finalized or len(self._consumers) >= self._settings.max_in_flight:
                return
            if not self._slots.try_take():
                return
            sender = new_sender(self._consumer, self._queue, self._on_error)
            sender.name = f"quickbot-segment-sender[{self.workspace_id[:40]}]"
            set_run(sender, functools.partial(self._run_sender, sender))
            self._hook_consumer(sender)
            self._consumers.append(sender)
        try:
            sender.start()
        except RuntimeError:  # interpreter exit, or no thread left: the consumer carries on alone
            self._sender_done(sender)

    def _run_sender(self, sender: LibraryConsumer) -> None:
        """An extra sender's loop: upload while the queue is deep, then end and free its slot."""
        try:
            while sender.running and not self._stopping and self._deep():
                sender.upload()
                if self._rate_limit is not None:
                    return
        except Exception:  # the library catches request errors; anything else is a bug worth a trace
            logger.exception("Segment sender of workspace %s failed", self.workspace_id)
        finally:
            self._sender_done(sender)

    def _sender_done(self, sender: LibraryConsumer) -> None:
        with self._lock:
            if sender in self._consumers:
                self._consumers.remove(sender)
                self._slots.give_back()
        self._queue.forget_taker(sender)

    def _hook_consumer(self, consumer: LibraryConsumer) -> None:
        consumer_thread: Any = consumer
        work_queue = self._queue
        work_queue.track_taker(consumer_thread)
        in_episode = [False]  # this consumer sent (or waited) under a rate-limit episode

        def next_batch() -> list[dict[str, Any]]:
            # Replaces the library's `next()` (see DeliveryQueue.take_batch for why); the rest
            # of the consumer (upload, request, retries, Retry-After, post) is the library's.
            # One batch fills at a time: each batch is a contiguous run of the queue.
            with self._fill_lock:
                items, markers = work_queue.take_batch(
                    consumer.upload_size, BATCH_SIZE_LIMIT, lambda: float(consumer.upload_interval)
                )
                for _ in range(markers):
                    work_queue.task_done()
                batch = [without_nulls(item) for item in items]
                with work_queue.mutex:
                    if batch:
                        self._held[consumer_thread] = batch
                    taken = work_queue.taken_by.get(consumer_thread)
                    if taken is not None:
                        taken.clear()
            if self._finalized and batch:
                # Abandoned while filling it: reported by `abandon`; nothing is sent after the deadline.
                self._report_leftovers(batch, "taken by the delivery thread when the deadline passed")
                for _ in batch:
                    work_queue.task_done()
                with work_queue.mutex:
                    self._held.pop(consumer_thread, None)
                return []
            if batch and self._rate_limit is not None:
                if consumer_thread is not self._consumer:
                    # A rate-limit episode: only the client's own consumer sends, one request at
                    # a time. The batch goes back to the front of the queue, order unchanged.
                    work_queue.put_back(items)
                    with work_queue.mutex:
                        self._held.pop(consumer_thread, None)
                    return []
                if rate_limit_of(consumer) is None:
                    # A sender got the 429: this consumer waits it out, by the library's own rules.
                    set_rate_limit(consumer, self._rate_limit)
            in_episode[0] = rate_limit_of(consumer) is not None
            if batch:
                self._maybe_add_sender()
            return batch

        def make_upload(original_upload: Callable[[], bool]) -> Callable[[], bool]:
            return functools.partial(upload, original_upload)

        def make_requeue(original_requeue: Callable[[Batch], None]) -> Callable[[Batch], None]:
            return functools.partial(requeue, original_requeue)

        def upload(original_upload: Callable[[], bool]) -> bool:
            # Success is read from `Consumer.upload()`'s own return value ("return whether
            # successful" in the library), with the batch we saw leave `next()`: no patch of
            # the request path, no parsing of bodies, and a library that changes what upload
            # returns breaks the delivered-count tests rather than counting wrongly in silence.
            succeeded = False
            try:
                succeeded = original_upload() is True
                return succeeded
            finally:
                episode = rate_limit_of(consumer)
                if episode is not None:
                    self._rate_limit = episode
                elif in_episode[0]:
                    self._rate_limit = None  # the library ended the episode (a success, or gave up)
                in_episode[0] = False
                with work_queue.mutex:
                    batch = self._held.pop(consumer_thread, None)
                if succeeded and batch:
                    self._reporter.delivered(self.workspace_id, batch)

        def requeue(original_requeue: Callable[[Batch], None], batch: Batch) -> None:
            if self._finalized:
                # Nobody drains this queue any more: report instead of handing the batch back.
                self._report_leftovers(list(batch), "handed back by the delivery thread after close")
                return
            original_requeue(batch)

        hook_consumer(consumer, next_batch, make_upload, make_requeue)


def classify_failure(error: Exception, status: int | None) -> str:
    if status is not None:
        return REJECTED if is_not_retried(status) else RETRIES_EXHAUSTED
    if is_queue_full_error(error):
        return QUEUE_FULL
    return RETRIES_EXHAUSTED
