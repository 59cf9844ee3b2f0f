"""What became of each event, by message id: the `run` command's answer to "did it arrive?".

A `DeliveryPool` observer (`add_observer`). An event is pending until the pool says it was
acknowledged (delivered) or gave up on it (dead-lettered, with the reason and the cause the
library saw). An event in a request still open at a deadline is "in doubt": it was
dead-lettered but may have arrived; if the request then succeeds it becomes delivered.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from ..core import Undeliverable


class Outcome(enum.Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD_LETTERED = "dead-lettered"
    IN_DOUBT = "in doubt"


@dataclass(frozen=True)
class EventOutcome:
    outcome: Outcome
    reason: str | None = None  # the dead-letter reason (retries_exhausted, rejected, shutdown_deadline ...)
    detail: str | None = None  # the cause in words (connection refused, HTTP 404 ...)
    status: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, "reason": self.reason, "detail": self.detail, "status": self.status}


PENDING = EventOutcome(Outcome.PENDING)
_DELIVERED = EventOutcome(Outcome.DELIVERED)


class OutcomeLedger:
    """Thread-safe: written by delivery threads, read by the command waiting for them."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._outcomes: dict[str, EventOutcome] = {}

    def delivered(self, workspace_id: str, messages: list[dict[str, Any]]) -> None:
        with self._lock:
            for message in messages:
                self._outcomes[str(message.get("messageId"))] = _DELIVERED
            self._lock.notify_all()

    def lost(self, undeliverable: Undeliverable) -> None:
        outcome = EventOutcome(
            Outcome.IN_DOUBT if undeliverable.in_doubt else Outcome.DEAD_LETTERED,
            undeliverable.reason,
            undeliverable.detail,
            undeliverable.status,
        )
        with self._lock:
            for message in undeliverable.messages:
                message_id = str(message.get("messageId"))
                if self._outcomes.get(message_id) is not _DELIVERED:
                    self._outcomes[message_id] = outcome
            self._lock.notify_all()

    def outcome(self, message_id: str) -> EventOutcome:
        with self._lock:
            return self._outcomes.get(message_id, PENDING)

    def settled(self, message_ids: Collection[str]) -> int:
        """How many of these events have an outcome (delivered or given up on)."""
        with self._lock:
            return sum(1 for message_id in message_ids if message_id in self._outcomes)

    def wait(self, message_ids: Collection[str], timeout: float) -> int:
        """Wait until every event has an outcome or `timeout` passes; returns how many have one."""
        with self._lock:
            self._lock.wait_for(
                lambda: all(message_id in self._outcomes for message_id in message_ids), timeout=max(0.0, timeout)
            )
            return sum(1 for message_id in message_ids if message_id in self._outcomes)
