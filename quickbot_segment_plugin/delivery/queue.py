"""A client's event queue: bounded by events and by bytes, and aware of what consumers took.

Why its own class rather than the library's `queue.Queue(max_queue_size)`:

- A count alone does not bound memory: 25,000 small events are a few MB, 25,000 large ones
  hundreds. The queue also stops at `max_bytes` of JSON. A message `execute` built arrives
  with its size, measured for the 32 KB check (`delivery_final`, `put_measured`); any other
  (the library's route: replays, other callers) is measured here.
- It never blocks a producer: when full, `put` raises `queue.Full` at once, whatever `block`
  says. The library only ever puts with `block=False`, and the pool turns `Full` into a
  `queue_full` dead letter, so a conversation never waits for a busy workspace.
- Batches are taken whole (`take_batch`), under one lock acquisition for everything queued,
  with sizes already known. The library's `Consumer.next()` takes one event per lock round
  trip and `json.dumps` each a second time to measure it: at a deep queue that was half of
  the consumer's CPU. `take_batch` keeps `next()`'s rules (at most `upload_size` events,
  below the library's `BATCH_SIZE_LIMIT` bytes, a partial batch waits up to the consumer's
  `upload_interval`, re-read while waiting so a closing client is hurried).
- Several consumer threads may take from it; each one's events taken for the batch it is
  still filling are kept per thread (`taken_by`), so a deadline can report them.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

Message = dict[str, Any]

# Queued into a closing client only to wake its consumers; compared by identity, never sent.
WAKE: Final[Message] = {"type": "quickbot.wake"}


class DeliveryQueue(queue.Queue[Message]):
    def __init__(self, max_events: int, max_bytes: int) -> None:
        super().__init__(max_events)
        self.max_bytes = max_bytes
        self.bytes = 0  # estimated JSON bytes of the events queued now
        self._sizes: deque[int] = deque()
        # consumer thread -> events it took for the batch it is filling; read under `mutex`.
        self.taken_by: dict[object, list[Message]] = {}  # by consumer thread
        self.full_because = ""  # "events" or "bytes": which bound the last refusal hit

    def track_taker(self, consumer: object) -> None:
        with self.mutex:
            self.taken_by[consumer] = []

    def forget_taker(self, consumer: object) -> None:
        with self.mutex:
            self.taken_by.pop(consumer, None)

    def put(self, item: Message, block: bool = True, timeout: float | None = None) -> None:
        """Queue `item` or raise `queue.Full` immediately (see the module docstring)."""
        self.put_measured(item, len(json.dumps(item, default=str)))

    def put_measured(self, item: Message, size: int) -> None:
        """`put` for an event whose JSON size the caller already knows (delivery_final)."""
        with self.not_full:
            count = len(self.queue)
            if count >= self.maxsize > 0:
                self.full_because = "events"
                raise queue.Full
            # One event always fits an empty queue, however large (the library caps it at 32 KB).
            if count and self.bytes + size > self.max_bytes:
                self.full_because = "bytes"
                raise queue.Full
            self.queue.append(item)
            self._sizes.append(size)
            self.bytes += size
            self.unfinished_tasks += 1
            self.not_empty.notify()

    def put_marker(self, item: Message) -> None:
        """Queue a zero-size marker (a wake-up), even when full; never counted in bytes."""
        with self.not_full:
            self.queue.append(item)
            self._sizes.append(0)
            self.unfinished_tasks += 1
            self.not_empty.notify()

    def take_batch(self, max_events: int, max_bytes: int, interval: Callable[[], float]) -> tuple[list[Message], int]:
        """The next batch and how many wake-up markers were taken with it (they need `task_done`).

        Returns as soon as the batch is full (events or bytes), or when `interval()` seconds
        have passed since the call, with whatever arrived by then (maybe nothing).
        """
        started = time.monotonic()
        items: list[Message] = []
        markers = 0
        size = 0
        taken = None
        with self.not_empty:
            taken = self.taken_by.get(threading.current_thread())
            while True:
                queued, sizes = self.queue, self._sizes
                while queued and len(items) < max_events:
                    item_size = sizes[0]
                    if items and size + item_size > max_bytes:
                        return items, markers  # the next event starts the next batch
                    item = queued.popleft()
                    sizes.popleft()
                    self.bytes -= item_size
                    if item is WAKE:
                        markers += 1
                        continue
                    items.append(item)
                    size += item_size
                    if taken is not None:
                        taken.append(item)
                if len(items) >= max_events or size >= max_bytes:
                    return items, markers
                remaining = started + interval() - time.monotonic()
                if remaining <= 0:
                    return items, markers
                self.not_empty.wait(remaining)

    def put_back(self, items: list[Message]) -> None:
        """Return events taken by `take_batch` to the front of the queue, in their order.

        They were never marked done, so `unfinished_tasks` already counts them; the bounds
        are not checked (they were in the queue a moment ago). Rare: sizes are measured again.
        """
        sizes = [len(json.dumps(item, default=str)) for item in items]
        with self.not_empty:
            taken = self.taken_by.get(threading.current_thread())
            if taken is not None:
                taken.clear()
            self.queue.extendleft(reversed(items))
            self._sizes.extendleft(reversed(sizes))
            self.bytes += sum(sizes)
            self.not_empty.notify()

    def _get(self) -> Message:
        item: Message = self.queue.popleft()
        self.bytes -= self._sizes.popleft()
        taken = self.taken_by.get(threading.current_thread())
        if taken is not None:
            taken.append(item)
        return item

    def taken(self) -> list[Message]:
        """Every event consumers took for batches they are still filling; call under `mutex`."""
        return [item for items in self.taken_by.values() for item in items]

    def depth(self) -> tuple[int, int]:
        """(events, bytes) queued now; read without the lock, so approximate, which is all a
        decision to start another sender needs."""
        return len(self.queue), self.bytes
