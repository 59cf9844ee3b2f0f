"""Which clients exist and in which state, plus the waiting room; every change under one lock.

A client key is (workspace id, write key, endpoint). A key is in at most one of:

- `live`: its client accepts events; kept in least-recently-used order for eviction;
- `starting`: a thread is building its client outside the lock (a thread start can take
  milliseconds on a busy interpreter, and no other workspace should wait for it);
- `waiting`: events wait (validated, in final form) because `max_clients` clients already
  exist, counting those still closing; the closer admits keys as slots free up. Events for
  a key that is `starting` wait apart (`for_starting`): they need no slot, so they must not
  cause an eviction.

`closing` holds clients that stopped accepting and are flushing; they count towards the cap
until their thread has ended, which is what bounds the process's threads.

Nothing here blocks on I/O or starts a thread: every method is O(1) or O(clients changed),
so holding the lock is always brief.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Any, Final

from ..core import QUEUE_FULL, SHUTTING_DOWN
from .client import ManagedClient
from .settings import DeliverySettings

ClientKey = tuple[str, str, str]  # (workspace id, write key, endpoint)
Message = dict[str, Any]

# What `route` tells `enqueue` to do.
USE: Final = "use"  # queue on the returned client
START: Final = "start"  # build the client (the key is now reserved as starting)
WAIT: Final = "wait"  # hold the message in the waiting room
REFUSE: Final = "refuse"  # the pool is shutting down


class ClientRegistry:
    def __init__(self, settings: DeliverySettings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.wakeup = threading.Condition(self.lock)  # the closer sleeps on it
        self.accepting = True
        self.live: OrderedDict[ClientKey, ManagedClient] = OrderedDict()  # least recently used first
        self.starting: set[ClientKey] = set()
        self.closing: list[ManagedClient] = []
        self.waiting: OrderedDict[ClientKey, deque[Message]] = OrderedDict()
        self.for_starting: dict[ClientKey, list[Message]] = {}
        self.waiting_events = 0
        self.created = 0
        self.evicted_lru = 0
        self.evicted_idle = 0
        self.closed = 0

    # --- enqueue side -----------------------------------------------------------------

    def route(self, key: ClientKey) -> tuple[str, ManagedClient | None]:
        with self.lock:
            if not self.accepting:
                return REFUSE, None
            client = self.live.get(key)
            if client is not None:
                self.live.move_to_end(key)
                client.touch()
                return USE, client
            if key in self.waiting or key in self.starting or self.owned() >= self.settings.max_clients:
                return WAIT, None
            self.starting.add(key)
            return START, None

    def started(self, key: ClientKey, client: ManagedClient) -> list[Message]:
        """Register a client built for a reserved key; returns events that waited for it meanwhile."""
        with self.lock:
            self.starting.discard(key)
            self.live[key] = client
            self.created += 1
            return self._take_waiting(key)

    def start_failed(self, key: ClientKey) -> list[Message]:
        with self.lock:
            self.starting.discard(key)
            return self._take_waiting(key)

    def hold(self, key: ClientKey, message: Message) -> tuple[str | None, ManagedClient | None]:
        """Put a message in the waiting room: (None, None) when held, (None, client) when its
        client went live in the meantime, (reason, None) when refused."""
        with self.lock:
            if not self.accepting:
                return SHUTTING_DOWN, None
            client = self.live.get(key)
            if client is not None:
                return None, client
            if self.waiting_events >= self.settings.waiting_room_size:
                return QUEUE_FULL, None
            self.waiting_events += 1
            if key in self.starting:
                self.for_starting.setdefault(key, []).append(message)
                return None, None
            self.waiting.setdefault(key, deque()).append(message)
            self._evict_for_waiting()
            self.wakeup.notify()
            return None, None

    # --- closer side ------------------------------------------------------------------

    def closing_snapshot(self, now: float) -> list[ManagedClient]:
        """Evict idle clients (or, when shutting down, every live one) and list the closing ones."""
        with self.lock:
            if self.accepting:
                idle = self.settings.client_idle_seconds
                while self.live:
                    key, client = next(iter(self.live.items()))
                    if now - client.last_used < idle:
                        break
                    del self.live[key]
                    self.closing.append(client)
                    self.evicted_idle += 1
            else:
                self.closing.extend(self.live.values())
                self.live.clear()
            return list(self.closing)

    def settle(
        self, finished: list[ManagedClient]
    ) -> tuple[list[tuple[ClientKey, list[Message]]], list[ManagedClient]]:
        """Drop finished clients; reserve freed slots for waiting keys; evict for the rest.

        Returns the admitted keys with their events (now `starting`) and the clients just
        evicted to make room.
        """
        with self.lock:
            if finished:
                done = set(map(id, finished))
                self.closing = [client for client in self.closing if id(client) not in done]
                self.closed += len(finished)
            admitted: list[tuple[ClientKey, list[Message]]] = []
            while self.waiting and self.owned() < self.settings.max_clients:
                key = next(iter(self.waiting))
                self.starting.add(key)
                admitted.append((key, self._take_waiting(key)))
            already_closing = len(self.closing)
            self._evict_for_waiting()
            return admitted, self.closing[already_closing:]

    def stop_accepting(self) -> list[ManagedClient]:
        """Shutdown begins: no more events; every live client starts closing."""
        with self.lock:
            self.accepting = False
            self.closing.extend(self.live.values())
            self.live.clear()
            self.wakeup.notify_all()
            return list(self.closing)

    def settled(self) -> bool:
        with self.lock:
            return not (self.live or self.starting or self.waiting_events) and all(c.settled for c in self.closing)

    def take_everything(self) -> tuple[list[ManagedClient], dict[ClientKey, list[Message]]]:
        """At the shutdown deadline: every client left and every waiting event."""
        with self.lock:
            clients = [*self.closing, *self.live.values()]
            self.closing, self.live = [], OrderedDict()
            waiting = {key: list(messages) for key, messages in self.waiting.items()}
            for key, messages in self.for_starting.items():
                waiting.setdefault(key, []).extend(messages)
            self.waiting.clear()
            self.for_starting.clear()
            self.waiting_events = 0
            return clients, waiting

    def has_work(self) -> bool:
        return bool(self.closing or self.waiting_events or self.starting)

    def is_empty(self) -> bool:
        return not (self.live or self.closing or self.waiting_events or self.starting)

    def owned(self) -> int:
        """Clients that have (or are about to have) a thread; the cap applies to this."""
        return len(self.live) + len(self.starting) + len(self.closing)

    # --- internals (lock held) -----------------------------------------------------------

    def _take_waiting(self, key: ClientKey) -> list[Message]:
        messages = [*self.waiting.pop(key, ()), *self.for_starting.pop(key, ())]
        self.waiting_events -= len(messages)
        return messages

    def _evict_for_waiting(self) -> None:
        """O(1) per eviction: each waiting key needs one slot that a closing client will free."""
        while self.live and len(self.waiting) > len(self.closing):
            _, client = self.live.popitem(last=False)
            self.closing.append(client)
            self.evicted_lru += 1
