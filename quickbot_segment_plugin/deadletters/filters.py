"""Which rows an operation applies to, as an SQL `WHERE` clause (the same on SQLite and PostgreSQL).

Every read and change of the store (list, count, replay, purge) selects rows the same way,
so one filter type builds the clause and its bound values (never text pasted into SQL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from ..core import ConfigurationError
from .schema import to_timestamp

#: pending: not replayed and not in doubt; in_doubt: a replay handed it over and could not learn
#: whether Segment got it (see `DeadLetterStore.mark_in_doubt`); replayed: sent again and accepted.
State = Literal["pending", "in_doubt", "replayed", "all"]
STATES: Final = ("pending", "in_doubt", "replayed", "all")


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which rows an operation applies to; None means "any".

    `older_than` / `newer_than` compare the time of the row's last failure: a timedelta is an
    age ("older than 2 hours"), a datetime a cutoff.
    """

    workspace_id: str | None = None
    reason: str | None = None
    older_than: timedelta | datetime | None = None
    newer_than: timedelta | datetime | None = None
    state: State = "pending"
    ids: Sequence[int] | None = None
    #: With state "pending": in-doubt rows too (a replay that resends them on purpose).
    include_in_doubt: bool = False

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ConfigurationError(f"state must be one of {', '.join(STATES)}, got {self.state!r}.", field="state")

    def where(self, now: datetime) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        values: list[Any] = []
        if self.workspace_id is not None:
            clauses.append("workspace_id = ?")
            values.append(self.workspace_id)
        if self.reason is not None:
            clauses.append("reason = ?")
            values.append(self.reason)
        if self.older_than is not None:
            clauses.append("last_failed_at < ?")
            values.append(to_timestamp(_cutoff(self.older_than, now)))
        if self.newer_than is not None:
            clauses.append("last_failed_at > ?")
            values.append(to_timestamp(_cutoff(self.newer_than, now)))
        if self.state == "pending":
            clauses.append(
                "replayed_at IS NULL" if self.include_in_doubt else "replayed_at IS NULL AND in_doubt_since IS NULL"
            )
        elif self.state == "in_doubt":
            clauses.append("replayed_at IS NULL AND in_doubt_since IS NOT NULL")
        elif self.state == "replayed":
            clauses.append("replayed_at IS NOT NULL")
        if self.ids is not None:
            ids = [int(row_id) for row_id in self.ids]
            clauses.append(f"id IN ({','.join('?' * len(ids))})" if ids else "1 = 0")
            values.extend(ids)
        return (" AND ".join(clauses) or "1 = 1"), values


def _cutoff(moment: timedelta | datetime, now: datetime) -> datetime:
    if isinstance(moment, timedelta):
        return now - moment
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
