"""Keeping the store in bounds and its books: retention (age and row limits), purge, counter flushing.

Undelivered rows removed by retention or purge are a loss and are never silent: a warning
log, the `dead_letters_pruned` counter (retention), and a durable tally `stats` shows.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..core import COUNTERS, DEAD_LETTERS_PRUNED, CounterFlusher, Counters, redact, stored_timestamp
from .base import StoreBase
from .config import DeadLetterSettings
from .database import logger
from .filters import DeadLetterFilter, State
from .models import PruneReport
from .replica import replica_id
from .schema import TALLY_PRUNED_EXPIRED, TALLY_PRUNED_OVER_LIMIT, TALLY_PURGED, tally


class StoreMaintenance(StoreBase):
    """`prune` (also run by writes, now and then), `purge`, and persisting process counters."""

    def _maybe_prune(self, added: int) -> None:
        with self._lock:
            self._added_since_prune += added
            now = time.monotonic()
            due = (
                self._last_prune is None
                or self._added_since_prune >= self._prune_every
                or now - self._last_prune >= self._prune_interval
            )
            if not due:
                return
            self._added_since_prune, self._last_prune = 0, now
        try:
            self.prune()
        except Exception as error:  # retention is housekeeping: a failure must not lose the event path
            logger.error("could not prune the dead-letter store %s: %s", self.location, redact(str(error)))

    def prune(self) -> PruneReport:
        """Apply the age and row limits now (oldest first, replayed rows before undelivered ones)."""
        now = self._now()
        when = stored_timestamp(now)
        cutoff = stored_timestamp(now - timedelta(days=self.retention_days))
        # Look first, without the write lock (WAL readers do not block writers): counting a big
        # store takes a while, and other workers should not wait for it when nothing is due.
        expired_any = self._read("SELECT 1 FROM dead_letters WHERE last_failed_at < ? LIMIT 1", [cutoff])
        rows = self._read("SELECT count(*) FROM dead_letters")
        if not expired_any and (not rows or int(rows[0][0]) <= self.max_rows):
            return PruneReport()
        with self._transaction() as db:
            expired = db.execute(
                "SELECT workspace_id, replayed_at IS NOT NULL, count(*) FROM dead_letters WHERE last_failed_at < ? "
                "GROUP BY 1, 2",
                [cutoff],
            ).fetchall()
            if expired:
                db.execute("DELETE FROM dead_letters WHERE last_failed_at < ?", [cutoff])
            excess = int(db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]) - self.max_rows
            over_replayed = 0
            over_pending: list[Any] = []
            if excess > 0:
                victims = "SELECT id FROM dead_letters WHERE replayed_at IS NOT NULL ORDER BY replayed_at, id LIMIT ?"
                over_replayed = db.execute(f"DELETE FROM dead_letters WHERE id IN ({victims})", [excess]).rowcount
                excess -= over_replayed
            if excess > 0:
                victims = "SELECT id FROM dead_letters WHERE replayed_at IS NULL ORDER BY last_failed_at, id LIMIT ?"
                over_pending = db.execute(
                    f"SELECT workspace_id, count(*) FROM dead_letters WHERE id IN ({victims}) GROUP BY workspace_id",
                    [excess],
                ).fetchall()
                db.execute(f"DELETE FROM dead_letters WHERE id IN ({victims})", [excess])
            expired_lost = {workspace: int(n) for workspace, replayed, n in expired if not replayed}
            over_lost = {workspace: int(n) for workspace, n in over_pending}
            tally(db, expired_lost, TALLY_PRUNED_EXPIRED, when)
            tally(db, over_lost, TALLY_PRUNED_OVER_LIMIT, when)
        lost_by_workspace: dict[str, int] = {}
        for source in (expired_lost, over_lost):
            for workspace, n in source.items():
                lost_by_workspace[workspace] = lost_by_workspace.get(workspace, 0) + n
        report = PruneReport(
            expired=sum(expired_lost.values()),
            over_limit=sum(over_lost.values()),
            replayed_removed=over_replayed + sum(int(n) for _, replayed, n in expired if replayed),
            lost_by_workspace=lost_by_workspace,
        )
        for workspace, n in lost_by_workspace.items():
            self._counters.inc(workspace, DEAD_LETTERS_PRUNED, n)
        if report.lost:
            logger.warning(
                "pruned %d undelivered dead letter(s) from %s: %d older than %g days, %d beyond the %d-row limit "
                "(by workspace: %s); they can no longer be replayed",
                report.lost,
                self.location,
                report.expired,
                self.retention_days,
                report.over_limit,
                self.max_rows,
                ", ".join(f"{workspace}={n}" for workspace, n in sorted(lost_by_workspace.items())),
                extra={"count": report.lost, "reason": "pruned"},
            )
        elif report.replayed_removed:
            logger.info("pruned %d replayed dead letter(s) from %s", report.replayed_removed, self.location)
        return report

    def purge(
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
        """Delete matching rows; undelivered ones are tallied as `purged`. Returns rows deleted."""
        selection = selection or DeadLetterFilter(workspace_id, reason, older_than, newer_than, state, ids)
        where, values = selection.where(self._now())
        with self._lock:
            if self._connection(create=False) is None:
                return 0
        when = stored_timestamp(self._now())
        with self._transaction() as db:
            lost = db.execute(
                f"SELECT workspace_id, count(*) FROM dead_letters WHERE ({where}) AND replayed_at IS NULL "
                "GROUP BY workspace_id",
                values,
            ).fetchall()
            deleted = db.execute(f"DELETE FROM dead_letters WHERE {where}", values).rowcount
            tally(db, {workspace: n for workspace, n in lost}, TALLY_PURGED, when)
        if lost:
            logger.warning(
                "purged %d dead letter(s) (%d undelivered) from %s",
                deleted,
                sum(n for _, n in lost),
                self.location,
                extra={"count": deleted, "reason": TALLY_PURGED},
            )
        return int(deleted)

    def record_counters(self, deltas: Mapping[tuple[str, str], int]) -> bool:
        """Add flushed process counters (`CounterSink`); False (logged) when the write failed."""
        if not deltas:
            return True
        when = stored_timestamp(self._now())
        try:
            replica = replica_id(self._environ)
            with self._transaction() as db:
                db.executemany(
                    "INSERT INTO replica_counters (replica_id, workspace_id, name, value, updated_at) "
                    "VALUES (?,?,?,?,?) ON CONFLICT (replica_id, workspace_id, name) DO UPDATE SET "
                    "value = replica_counters.value + excluded.value, updated_at = excluded.updated_at",
                    [(replica, workspace, name, int(delta), when) for (workspace, name), delta in deltas.items()],
                )
        except Exception as error:
            logger.warning("could not persist Segment block counters to %s: %s", self.location, redact(str(error)))
            return False
        return True

    def start_counter_flusher(self, counters: Counters = COUNTERS, interval: float | None = None) -> CounterFlusher:
        """Persist `counters` here every `QUICKBOT_SEGMENT_COUNTERS_FLUSH_SECONDS` (10) and at exit."""
        seconds = (
            interval if interval is not None else DeadLetterSettings.from_env(self._environ).counters_flush_seconds
        )
        flusher = CounterFlusher(counters, self, seconds)
        flusher.ensure_running()
        return flusher
