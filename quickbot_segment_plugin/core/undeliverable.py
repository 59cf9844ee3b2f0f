"""Why an event did not reach Segment, in the one shape every store and report shares.

Delivery produces these records and the dead-letter stores file them; both sit above core, so
the record lives here and neither has to import the other. None of them ever holds a write key:
an `Undeliverable` carries the key's fingerprint, which is enough for an operator to tell which
credential an event belongs to and safe to store next to the event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from .errors import PluginError

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
    # In a request that had not completed at a deadline: it may have arrived after all.
    in_doubt: bool = False

    @property
    def count(self) -> int:
        return len(self.messages)
