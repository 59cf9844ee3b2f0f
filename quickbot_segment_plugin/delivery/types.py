"""The values the delivery pool hands back: enqueue outcomes and shutdown reports.

They live apart from the pool so the CLI or a test can name them without importing the
machinery (threads, the analytics library) behind them. What could not be delivered is an
`Undeliverable` (core), shared with the dead-letter stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final


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
