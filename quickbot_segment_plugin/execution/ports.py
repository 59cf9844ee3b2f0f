"""What execution needs from delivery and the dead-letter store, and nothing more.

Delivery and the dead-letter stores sit above execution in the layers (the block wires
them together), so the executor names them by these protocols instead of importing them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class Enqueued(Protocol):
    """The pool's answer: `accepted`, or the reason it was not (already dead-lettered)."""

    @property
    def accepted(self) -> bool: ...
    @property
    def reason(self) -> str | None: ...


class EventSink(Protocol):
    """Takes a finished message for background delivery (`delivery.DeliveryPool`)."""

    def enqueue(
        self,
        workspace_id: str,
        write_key: str,
        endpoint: str,
        message: Mapping[str, Any],
        *,
        token: str | None = None,
        final_form: bool = False,
    ) -> Enqueued:
        """`token` (the sealed credentials) lets a crash-safe spool redeliver the event after a restart;
        `final_form` says the message is already in the library's final form, so it is not proved again."""
        ...


class DeadLetterSink(Protocol):
    """Remembers which sealed token belongs to a key, so a dead letter can be replayed later."""

    def remember_token(self, workspace_id: str, write_key_fingerprint: str, token: str) -> None: ...
