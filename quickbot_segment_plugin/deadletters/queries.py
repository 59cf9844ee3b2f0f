"""Reading the store: rows (`list`, `iter`, `get`), how many (`count`), and the figures `stats` shows.

Reads never create a store: an SQLite file that does not exist yet reads as empty.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..core import parse_stored_timestamp
from .base import StoreBase
from .config import PAGE_SIZE
from .filters import DeadLetterFilter, State
from .models import DeadLetter
from .schema import COLUMNS, dead_letter


class StoreQueries(StoreBase):
    """Rows oldest first, counts, per-workspace summaries, tallies and the counters replicas flushed."""

    def iter(self, selection: DeadLetterFilter, limit: int | None = None) -> Iterator[DeadLetter]:
        """Matching rows, oldest first, read a page at a time (bounded memory for any store size).

        Pages are keyed by id, so rows that change state while being iterated are neither
        skipped nor repeated.
        """
        last_id = 0
        remaining = limit
        while remaining is None or remaining > 0:
            page = PAGE_SIZE if remaining is None else min(PAGE_SIZE, remaining)
            where, values = selection.where(self._now())
            rows = self._read(
                f"SELECT {COLUMNS} FROM dead_letters WHERE ({where}) AND id > ? ORDER BY id LIMIT ?",
                [*values, last_id, page],
            )
            if not rows:
                return
            for row in rows:
                yield dead_letter(row)
            last_id = rows[-1][0]
            if remaining is not None:
                remaining -= len(rows)

    def get(self, row_id: int) -> DeadLetter | None:
        found = self.list(ids=[row_id], state="all", limit=1)
        return found[0] if found else None

    def count(
        self,
        workspace_id: str | None = None,
        reason: str | None = None,
        older_than: timedelta | datetime | None = None,
        newer_than: timedelta | datetime | None = None,
        *,
        state: State = "pending",
        ids: Sequence[int] | None = None,
        selection: DeadLetterFilter | None = None,
    ) -> int:
        selection = selection or DeadLetterFilter(workspace_id, reason, older_than, newer_than, state, ids)
        where, values = selection.where(self._now())
        rows = self._read(f"SELECT count(*) FROM dead_letters WHERE {where}", values)
        return int(rows[0][0]) if rows else 0

    def counts_by_reason(self, workspace_id: str | None = None, *, state: State = "pending") -> dict[str, int]:
        where, values = DeadLetterFilter(workspace_id=workspace_id, state=state).where(self._now())
        rows = self._read(
            f"SELECT reason, count(*) FROM dead_letters WHERE {where} GROUP BY reason ORDER BY reason", values
        )
        return {reason: int(n) for reason, n in rows}

    def summary(self) -> list[dict[str, Any]]:
        """Per (workspace, reason): pending and replayed rows, and the oldest/newest failure."""
        rows = self._read(
            "SELECT workspace_id, reason, "
            "sum(CASE WHEN replayed_at IS NULL AND in_doubt_since IS NULL THEN 1 ELSE 0 END), "
            "sum(CASE WHEN replayed_at IS NULL AND in_doubt_since IS NOT NULL THEN 1 ELSE 0 END), "
            "sum(CASE WHEN replayed_at IS NOT NULL THEN 1 ELSE 0 END), "
            "min(last_failed_at), max(last_failed_at) FROM dead_letters "
            "GROUP BY workspace_id, reason ORDER BY workspace_id, reason"
        )
        return [
            {
                "workspace_id": workspace,
                "reason": reason,
                "pending": int(pending),
                "in_doubt": int(in_doubt),
                "replayed": int(replayed),
                "oldest_failure": _iso(parse_stored_timestamp(oldest)),
                "newest_failure": _iso(parse_stored_timestamp(newest)),
            }
            for workspace, reason, pending, in_doubt, replayed, oldest, newest in rows
        ]

    def tallies(self) -> dict[str, dict[str, int]]:
        """Durable tallies of rows that left the store: {workspace: {pruned_expired|...: n}}."""
        return _nested(self._read("SELECT workspace_id, name, value FROM tallies ORDER BY workspace_id, name"))

    def persisted_counters(self) -> dict[str, dict[str, int]]:
        """Process counters flushed by every replica sharing this store, summed: {workspace: {name: n}}."""
        return _nested(
            self._read(
                "SELECT workspace_id, name, sum(value) FROM replica_counters GROUP BY workspace_id, name "
                "ORDER BY workspace_id, name"
            )
        )

    def counters_by_replica(self) -> dict[str, dict[str, Any]]:
        """Each replica's flushed counters: {replica: {"last_flush": ISO time, "counters": {name: n}}}."""
        rows = self._read(
            "SELECT replica_id, name, sum(value), max(updated_at) FROM replica_counters GROUP BY replica_id, name "
            "ORDER BY replica_id, name"
        )
        result: dict[str, dict[str, Any]] = {}
        for replica, name, value, updated in rows:
            entry = result.setdefault(replica, {"last_flush": None, "counters": {}})
            entry["counters"][name] = int(value)
            flushed = _iso(parse_stored_timestamp(updated))
            if flushed is not None and (entry["last_flush"] is None or flushed > entry["last_flush"]):
                entry["last_flush"] = flushed
        return result

    # Last in the class: after this def, `list` in the class body would name this method.
    def list(
        self,
        workspace_id: str | None = None,
        reason: str | None = None,
        older_than: timedelta | datetime | None = None,
        newer_than: timedelta | datetime | None = None,
        limit: int = 100,
        offset: int = 0,
        *,
        state: State = "pending",
        ids: Sequence[int] | None = None,
        selection: DeadLetterFilter | None = None,
    ) -> list[DeadLetter]:
        """Matching rows, oldest first (by id). `selection`, when given, replaces the filter arguments."""
        selection = selection or DeadLetterFilter(workspace_id, reason, older_than, newer_than, state, ids)
        where, values = selection.where(self._now())
        rows = self._read(
            f"SELECT {COLUMNS} FROM dead_letters WHERE {where} ORDER BY id LIMIT ? OFFSET ?",
            [*values, max(0, int(limit)), max(0, int(offset))],
        )
        return [dead_letter(row) for row in rows]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _nested(rows: Sequence[Sequence[Any]]) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = {}
    for workspace, name, value in rows:
        result.setdefault(workspace, {})[name] = int(value)
    return result
