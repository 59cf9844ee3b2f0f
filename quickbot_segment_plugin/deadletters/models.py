"""What the store hands out: a stored event, and the reports of a prune and of a replay.

Plain frozen values (the replay report aside, which a replay fills in as it goes), so the CLI
and health endpoints can print them without touching the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class DeadLetter:
    """One stored event. `credentials_token` is the sealed token (None when it was unknown)."""

    id: int
    workspace_id: str
    message_id: str
    message: dict[str, Any] = field(repr=False)
    reason: str
    detail: str
    status: int | None
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    replayed_at: datetime | None
    credentials_token: str | None = field(repr=False)
    write_key_fingerprint: str
    endpoint: str
    in_doubt_since: datetime | None = None

    @property
    def state(self) -> str:
        if self.replayed_at is not None:
            return "replayed"
        return "in_doubt" if self.in_doubt_since is not None else "pending"

    @property
    def type(self) -> str | None:
        kind = self.message.get("type")
        return kind if isinstance(kind, str) else None

    @property
    def replayable(self) -> bool:
        return self.credentials_token is not None

    def as_dict(self, *, include_message: bool = True) -> dict[str, Any]:
        """JSON-ready, for the CLI and health endpoints; the token is left out (only whether there is one)."""
        data: dict[str, Any] = {
            "id": self.id,
            "workspace_id": self.workspace_id,
            "message_id": self.message_id,
            "type": self.type,
            "reason": self.reason,
            "detail": self.detail,
            "status": self.status,
            "attempts": self.attempts,
            "first_failed_at": self.first_failed_at.isoformat(),
            "last_failed_at": self.last_failed_at.isoformat(),
            "replayed_at": self.replayed_at.isoformat() if self.replayed_at else None,
            "in_doubt_since": self.in_doubt_since.isoformat() if self.in_doubt_since else None,
            "state": self.state,
            "has_credentials": self.replayable,
            "write_key_fingerprint": self.write_key_fingerprint,
            "endpoint": self.endpoint,
        }
        if include_message:
            data["message"] = self.message
        return data


@dataclass(frozen=True)
class PruneReport:
    """What one prune removed; `lost` counts undelivered rows (replayed ones were delivered)."""

    expired: int = 0
    over_limit: int = 0
    replayed_removed: int = 0
    lost_by_workspace: dict[str, int] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.expired + self.over_limit


@dataclass
class ReplayReport:
    """How a replay went: rows sent and accepted, failed again (kept, attempts + 1), in doubt, or skipped.

    `in_doubt` rows were still queued or in flight when the replay's time ran out: Segment may
    have them, so they are kept apart and not resent without `--include-in-doubt`.
    `beyond_dedup_window` counts rows sent that first failed longer ago than Segment's
    deduplication window: had one reached Segment after all, it is now there twice.

    `problems` holds one line per row that failed or was skipped (row id, messageId, why),
    already free of write keys, for the CLI to print.
    """

    attempted: int = 0
    replayed: int = 0
    failed: int = 0
    skipped: int = 0
    in_doubt: int = 0
    beyond_dedup_window: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "attempted": self.attempted,
            "replayed": self.replayed,
            "failed": self.failed,
            "skipped": self.skipped,
            "in_doubt": self.in_doubt,
            "beyond_dedup_window": self.beyond_dedup_window,
            "problems": list(self.problems),
        }
