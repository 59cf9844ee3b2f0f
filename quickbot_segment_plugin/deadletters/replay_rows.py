"""The rows' side of a replay: marking rows replayed, in doubt or failed again, and `replay(send)`.

A replayed row is kept (until retention removes it) so an operator can see what was sent
again; a row handed to Segment without learning the outcome is in doubt and is not resent
without asking. The whole workflow through a delivery pool is `replay.replay_dead_letters`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..core import redact, stored_timestamp
from .config import MAX_DETAIL_CHARS
from .filters import DeadLetterFilter
from .models import DeadLetter, ReplayReport
from .queries import StoreQueries
from .replay_lock import replay_lock
from .replica import replica_id
from .schema import TALLY_REPLAYED, tally


class StoreReplayRows(StoreQueries):
    """Row state changes a replay makes, and the simple replay that calls `send` row by row."""

    def mark_replayed(self, ids: Sequence[int]) -> int:
        """Mark rows as sent again and accepted; returns how many were pending before."""
        ids = [int(row_id) for row_id in ids]
        if not ids:
            return 0
        when = stored_timestamp(self._now())
        changed = 0
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            with self._transaction() as db:
                per_workspace = db.execute(
                    f"SELECT workspace_id, count(*) FROM dead_letters WHERE id IN ({marks}) AND replayed_at IS NULL "
                    "GROUP BY workspace_id",
                    chunk,
                ).fetchall()
                db.execute(
                    f"UPDATE dead_letters SET replayed_at = ?, in_doubt_since = NULL WHERE id IN ({marks})",
                    [when, *chunk],
                )
                tally(db, {workspace: n for workspace, n in per_workspace}, TALLY_REPLAYED, when)
            for workspace, n in per_workspace:
                self._counters.replayed(workspace, n)
                changed += n
        return changed

    def record_failed_replay(self, ids: Sequence[int], reason: str, detail: str = "", status: int | None = None) -> int:
        """A replay of these rows failed: attempts + 1, the new reason and detail; the rows stay pending."""
        ids = [int(row_id) for row_id in ids]
        if not ids:
            return 0
        when = stored_timestamp(self._now())
        changed = 0
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            with self._transaction() as db:
                cursor = db.execute(
                    "UPDATE dead_letters SET attempts = attempts + 1, reason = ?, detail = ?, status = ?, "
                    f"last_failed_at = ?, replayed_at = NULL, in_doubt_since = NULL WHERE id IN ({marks})",
                    [str(reason), redact(str(detail or ""))[:MAX_DETAIL_CHARS], status, when, *chunk],
                )
                changed += cursor.rowcount
        return changed

    def mark_in_doubt(self, ids: Sequence[int]) -> int:
        """Rows about to be sent (or whose sending ended unknown): not resent until confirmed.

        A replay marks rows in doubt before it hands them to the pool, so rows of a replay that
        was killed, or that were still queued or in flight at its deadline, stay in doubt rather
        than pending: Segment may have them, and it deduplicates by messageId only for a while.
        """
        ids = [int(row_id) for row_id in ids]
        when = stored_timestamp(self._now())
        changed = 0
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            with self._transaction() as db:
                changed += db.execute(
                    f"UPDATE dead_letters SET in_doubt_since = ? WHERE id IN ({marks}) AND replayed_at IS NULL",
                    [when, *chunk],
                ).rowcount
        return changed

    def confirm(self, ids: Sequence[int], *, delivered: bool) -> int:
        """An operator's answer for in-doubt rows: `delivered` marks them replayed (Segment has
        them), else they go back to pending for the next replay. Returns rows changed."""
        ids = [int(row_id) for row_id in ids]
        if not delivered:
            changed = 0
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                with self._transaction() as db:
                    changed += db.execute(
                        f"UPDATE dead_letters SET in_doubt_since = NULL WHERE id IN ({marks}) "
                        "AND replayed_at IS NULL AND in_doubt_since IS NOT NULL",
                        chunk,
                    ).rowcount
            return changed
        in_doubt = [letter.id for letter in self.iter(DeadLetterFilter(ids=ids, state="in_doubt"))]
        return self.mark_replayed(in_doubt)

    def replay(
        self,
        send: Callable[[DeadLetter], bool],
        *,
        limit: int | None = None,
        selection: DeadLetterFilter | None = None,
        **filters: Any,
    ) -> ReplayReport:
        """Call `send` for each matching row, oldest first.

        True marks the row replayed (kept, see the package docstring); False or an exception
        keeps it pending with attempts + 1 and reason "replay_failed". `filters` are those of
        `list` (workspace_id, reason, older_than, newer_than, state, ids). Holds the store's
        replay lock (`replay_lock.ReplayInProgress` when another replay has it).
        """
        chosen = selection or DeadLetterFilter(**filters)
        if not self.exists():  # nothing to replay, and a replay must not create a store to lock it
            return ReplayReport()
        with replay_lock(self, replica_id(self._environ)):
            return self._replay_locked(send, chosen, limit)

    def _replay_locked(
        self, send: Callable[[DeadLetter], bool], chosen: DeadLetterFilter, limit: int | None
    ) -> ReplayReport:
        report = ReplayReport()
        done: list[int] = []
        for letter in self.iter(chosen, limit):
            report.attempted += 1
            problem: str | None = None
            try:
                accepted = bool(send(letter))
            except Exception as error:
                accepted, problem = False, redact(f"{type(error).__name__}: {error}")[:MAX_DETAIL_CHARS]
            if accepted:
                done.append(letter.id)
                report.replayed += 1
                continue
            report.failed += 1
            detail = problem or "the replay was not accepted"
            self.record_failed_replay([letter.id], "replay_failed", detail)
            report.problems.append(f"dead letter {letter.id} (messageId {letter.message_id}): {detail}")
        self.mark_replayed(done)
        return report


def _chunks(ids: Sequence[int], size: int = 500) -> Iterator[list[int]]:
    """SQLite limits bound parameters per statement (999 on older builds)."""
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])
