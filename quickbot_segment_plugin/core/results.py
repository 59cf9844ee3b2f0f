"""The result `execute` returns to the host, and the logs a bot builder reads in it.

Results cross the plugin boundary, so they hold only JSON types, and their text is
written for the person who built the flow: what happened, which field, which variable.
"""

from __future__ import annotations

from typing import Any, Literal

from .redaction import redact

Status = Literal["queued", "skipped", "failed", "dry_run"]
Level = Literal["info", "warning", "error"]


class ResultLog:
    """Collects log entries for one execution."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def add(self, level: Level, message: str, **details: Any) -> None:
        # Last line of defence: a message is scrubbed of any write key it might quote.
        self.entries.append({"level": level, "message": redact(message), "details": details})

    def info(self, message: str, **details: Any) -> None:
        self.add("info", message, **details)

    def warning(self, message: str, **details: Any) -> None:
        self.add("warning", message, **details)

    def error(self, message: str, **details: Any) -> None:
        self.add("error", message, **details)

    def result(
        self,
        status: Status,
        *,
        message_id: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = {"status": status}
        if message_id is not None:
            result["message_id"] = message_id
        if payload is not None:
            result["payload"] = payload
        result["logs"] = self.entries
        return result
