"""The values the delivery pool hands back: outcomes, undeliverable events, shutdown reports.

They live apart from the pool so a dead-letter store, the CLI or a test can name them without
importing the machinery (threads, the analytics library) behind them. None of them ever holds
a write key: an `Undeliverable` carries the key's fingerprint, which is enough for an operator
to tell which credential an event belongs to and safe to store next to the event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from ..core import PluginError

# Why an event could not be delivered; the dead-letter store files events under these names.
QUEUE_FULL: Final = "queue_full"  # the workspace's queue (or the waiting room) had no room
RETRIES_EXHAUSTED: Final = "retries_exhausted"  # 408/429/5xx/network errors outlasted the retry budget
REJECTED: Final = "rejected"  # Segment answered with a status the library does not retry (400, 401, 413 ...)
SHUTDOWN_DEADLINE: Final = "shutdown_deadline"  # still queued or in flight when shutdown's time ran out
CLIENT_CLOSED: Final = "client_closed"  # still queued when an evicted client's flush deadline passed
SHUTTING_DOWN: Final = "shutting_down"  # offered after shutdown began; never queued
SPOOL_FAILED: Final = "spool_failed"  # the disk refused the spool write, so `queued` could not be promised
RECOVERY_FAILED: Final = "recovery_failed"  # recovered from a dead process's spool, but its credentials do not open

REASONS: Final = (
    QUEUE_FULL,
    RETRIES_EXHAUSTED,
    REJECTED,
    SHUTDOWN_DEADLINE,
    CLIENT_CLOSED,
    SHUTTING_DOWN,
    SPOOL_FAILED,
    RECOVERY_FAILED,
)


class DeliveryError(PluginError):
    """The analytics library refused a message outright (bad id, over 32 KB, not a Segment call).

    The message builder validates before enqueueing, so this is a last line of defence; its
    text names the field and never quotes the write key or the message body.
    """


@dataclass(frozen=True)
class EnqueueOutcome:
    """What `DeliveryPool.enqueue` did with a message.

    `accepted` means the pool now owns the message: it will be delivered or, failing that,
    handed to `on_undeliverable`. When it is False, `reason` says why ("queue_full",
    "shutting_down") and the message has already been handed to `on_undeliverable`.
    """

    accepted: bool
    reason: str | None = None


ACCEPTED: Final = EnqueueOutcome(True, None)


@dataclass(frozen=True)
class Undeliverable:
    """Events that will not reach Segment through the pool, with why; ready for a dead-letter store.

    `messages` are in wire form (camelCase, ISO timestamps, their original `messageId`), so a
    replay sends the very same events and Segment deduplicates any that did arrive.
    `detail` is the HTTP status or error text, already redacted; `status` the HTTP status
    when there was one.
    """

    workspace_id: str
    write_key_fingerprint: str
    endpoint: str
    messages: list[dict[str, Any]]
    reason: str
    detail: str
    status: int | None = None

    @property
    def count(self) -> int:
        return len(self.messages)


@dataclass(frozen=True)
class ShutdownReport:
    """How a `DeliveryPool.shutdown` went, for the host's stop log.

    `drained` is True when every queue emptied before the deadline (nothing was reported as
    "shutdown_deadline"); `undelivered` counts the events handed to `on_undeliverable` by
    this shutdown; `abandoned_clients` counts consumers still busy (e.g. stuck in a request
    to a hanging server) when time ran out.
    """

    drained: bool
    undelivered: int
    clients_closed: int
    abandoned_clients: int
    elapsed_seconds: float
    already_shut_down: bool = False
    undelivered_by_workspace: dict[str, int] = field(default_factory=dict)
