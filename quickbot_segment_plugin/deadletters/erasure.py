"""Erasing one end user from the store: their dead letters go, their identifiers leave the others.

An erasure request covers replayed rows too; undelivered rows removed are tallied as
`purged` (an operator's deliberate removal), so the delivery accounting still adds up.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import suppress
from typing import Any

from ..core import ErasureReport, identifiers_of, scrub, search_terms, stored_timestamp, user_condition
from .backend import Connection, StoreBackend
from .base import StoreBase
from .database import logger
from .schema import TALLY_PURGED, tally


class StoreErasure(StoreBase):
    """`erase` and `forget`: one end user's dead letters in one workspace."""

    def forget(
        self, workspace_id: str, user_id: str | None = None, anonymous_id: str | None = None
    ) -> list[dict[str, Any]]:
        """`erase`, returning only the rows removed."""
        return self.erase(workspace_id, user_id, anonymous_id).removed

    def erase(self, workspace_id: str, user_id: str | None = None, anonymous_id: str | None = None) -> ErasureReport:
        """Delete one end user's dead letters in a workspace (an erasure request), replayed or not,
        and replace their identifiers in the workspace's other dead letters (`erasure_values`).

        A row is the user's when its message's userId is `user_id` (or an alias's previousId
        is), or its anonymousId is `anonymous_id`. Undelivered rows removed are tallied as
        `purged` (an operator's deliberate removal), so the delivery accounting still adds up.
        Lists {id, message_id, type, reason, state} per row removed; never the message.
        """
        user, user_values = user_condition(
            user_id,
            anonymous_id,
            user_expression=self.backend.json_text("userId"),
            anonymous_expression=self.backend.json_text("anonymousId"),
            previous_expression=self.backend.json_text("previousId"),
        )
        where = f"workspace_id = ? AND ({user})"
        values: list[Any] = [workspace_id, *user_values]
        report = ErasureReport(self.location)
        with self._lock:
            connection = self._connection(create=False)
            if connection is None:
                return report
            self.backend.before_erasure(connection)
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, message_id, type, reason, replayed_at, in_doubt_since, message FROM dead_letters "
                f"WHERE {where} ORDER BY id",
                values,
            ).fetchall()
            db.execute(f"DELETE FROM dead_letters WHERE {where}", values)
            undelivered = sum(1 for row in rows if row[4] is None)
            if undelivered:
                tally(db, {workspace_id: undelivered}, TALLY_PURGED, stored_timestamp(self._now()))
            identifiers = identifiers_of(_messages(row[6] for row in rows), user_id, anonymous_id)
            report.rewritten_events = _scrub_others(db, self.backend, workspace_id, identifiers)
        with self._lock:
            self.backend.after_erasure(connection)
        if rows:
            logger.warning(
                "erased %d dead letter(s) of one end user (%d undelivered) of workspace %s from %s",
                len(rows),
                undelivered,
                workspace_id,
                self.location,
                extra={"count": len(rows), "reason": TALLY_PURGED, "workspace": workspace_id},
            )
        report.removed = [
            {
                "id": row_id,
                "message_id": message_id,
                "type": kind,
                "reason": reason,
                "state": "replayed" if replayed_at is not None else ("in_doubt" if in_doubt else "pending"),
            }
            for row_id, message_id, kind, reason, replayed_at, in_doubt, _message in rows
        ]
        return report


def _messages(texts: Iterable[str]) -> Iterator[object]:
    for text in texts:
        with suppress(ValueError):
            yield json.loads(text)


def _scrub_others(db: Connection, backend: StoreBackend, workspace_id: str, identifiers: frozenset[str]) -> int:
    """Replace a forgotten user's identifiers in the workspace's other dead letters; returns rows changed."""
    terms = search_terms(identifiers)
    if not terms:
        return 0
    contains = " OR ".join([backend.contains("message")] * len(terms))
    changed_rows = 0
    for row_id, text in db.execute(
        f"SELECT id, message FROM dead_letters WHERE workspace_id = ? AND ({contains})", [workspace_id, *terms]
    ).fetchall():
        try:
            scrubbed, changed = scrub(json.loads(text), identifiers)
        except ValueError:
            scrubbed, changed = {"unreadable": True}, True  # cannot be edited in place: its text goes
        if changed:
            changed_rows += 1
            db.execute(
                "UPDATE dead_letters SET message = ? WHERE id = ?",
                (json.dumps(scrubbed, ensure_ascii=True, separators=(",", ":")), row_id),
            )
    return changed_rows
