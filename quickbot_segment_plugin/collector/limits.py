"""How much the collector keeps: caps on stored events and bytes, oldest dropped first.

The Tracking API accepts any write key from anyone who can reach it, so without a cap a
loop in a flow (or a web page in the operator's browser) fills the disk. Past a cap the
oldest events go first, as a ring buffer would, and their count is shown in `/summary`
and on the debugger page, so a missing event is never a mystery.

Pruning goes down to 90% of the cap, so it runs once per tenth of the cap, not per request.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

DEFAULT_MAX_STORED_EVENTS = 200_000
DEFAULT_MAX_STORED_MB = 512
MAX_STORED_REJECTIONS = 10_000
_PRUNE_TO = 0.9


@dataclass(frozen=True)
class StoreLimits:
    """`max_events` messages and `max_bytes` of stored JSON (messages and raw batches)."""

    max_events: int = DEFAULT_MAX_STORED_EVENTS
    max_bytes: int = DEFAULT_MAX_STORED_MB * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_events < 1 or self.max_bytes < 1024:
            raise ValueError("the collector keeps at least 1 event and 1 KB.")


class StoreBudget:
    """What the file holds against its limits; not thread-safe (the store's lock guards it).

    Sizes are the stored JSON's length: the store writes ASCII-only JSON, so characters are bytes.
    """

    def __init__(self, db: sqlite3.Connection, limits: StoreLimits) -> None:
        self._db = db
        self.limits = limits
        self.events = 0
        self.bytes = 0
        self.dropped = 0  # events removed to stay under the caps since the collector started
        self.recount()

    def recount(self) -> None:
        events, message_bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(message)), 0) FROM events"
        ).fetchone()
        (batch_bytes,) = self._db.execute("SELECT COALESCE(SUM(length(body)), 0) FROM batches").fetchone()
        self.events = int(events)
        self.bytes = int(message_bytes) + int(batch_bytes)

    def added(self, events: int, size: int) -> None:
        self.events += events
        self.bytes += size

    @property
    def over(self) -> bool:
        return self.events > self.limits.max_events or self.bytes > self.limits.max_bytes

    def prune(self) -> int:
        """Deletes the oldest events (and raw batches left without events) until the store is
        at 90% of both caps; returns how many events were dropped. Call inside no transaction."""
        if not self.over:
            return 0
        dropped = 0
        for _ in range(8):  # each pass frees at least one event while any is stored
            target_events = int(self.limits.max_events * _PRUNE_TO)
            target_bytes = int(self.limits.max_bytes * _PRUNE_TO)
            need_events = self.events - target_events
            need_bytes = self.bytes - target_bytes
            if need_events <= 0 and need_bytes <= 0:
                break
            last_id = self._last_id_to_drop(max(need_events, 0), max(need_bytes, 0))
            if last_id is None:
                break
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (count,) = self._db.execute("SELECT COUNT(*) FROM events WHERE id <= ?", (last_id,)).fetchone()
                self._db.execute(
                    "DELETE FROM batches WHERE batch_id IN (SELECT batch_id FROM events WHERE id <= ?) "
                    "AND NOT EXISTS (SELECT 1 FROM events AS kept WHERE kept.batch_id = batches.batch_id "
                    "AND kept.id > ?)",
                    (last_id, last_id),
                )
                self._db.execute("DELETE FROM events WHERE id <= ?", (last_id,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            dropped += int(count)
            self.recount()
        self.dropped += dropped
        return dropped

    def _last_id_to_drop(self, need_events: int, need_bytes: int) -> int | None:
        """The newest id among the oldest rows whose removal frees what is needed."""
        freed_bytes = 0
        last_id: int | None = None
        rows = self._db.execute("SELECT id, length(message) FROM events ORDER BY id")
        for freed_events, (row_id, size) in enumerate(rows, start=1):
            last_id = int(row_id)
            freed_bytes += int(size)
            if freed_events >= need_events and freed_bytes >= need_bytes:
                break
        rows.close()
        return last_id


def trim_rejections(db: sqlite3.Connection) -> None:
    """Keeps the newest MAX_STORED_REJECTIONS rejections (a page can send bad requests forever)."""
    db.execute(
        "DELETE FROM rejections WHERE id <= (SELECT COALESCE(MAX(id), 0) FROM rejections) - ?",
        (MAX_STORED_REJECTIONS,),
    )
