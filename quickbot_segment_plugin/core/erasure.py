"""What "one end user's data" means to the SQLite stores that erase it, and making erasure stick.

The dead-letter store and the embedded collector both answer `privacy forget`; each used to
spell the rule in its own SQL, and the copies drifted (a numeric alias `previousId` was erased
from one store and kept in the other). Both now build their condition here.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Final

logger = logging.getLogger("quickbot_segment_plugin.erasure")

PREVIOUS_ID: Final = "CAST(json_extract(message, '$.previousId') AS TEXT)"
# How long a forget waits for readers to let the write-ahead log be truncated.
CHECKPOINT_SECONDS: Final = 2.0


def user_condition(
    user_id: str | None, anonymous_id: str | None, *, user_expression: str, anonymous_expression: str
) -> tuple[str, list[str]]:
    """The SQL condition (and its parameters) for rows that are the user's.

    A row is the user's when its userId is `user_id` (or, for an alias, its previousId is),
    or its anonymousId is `anonymous_id`. Ids are compared as text, as Segment stringifies
    numeric ids: the expressions must give text, and `previousId` is cast here.
    """
    clauses: list[str] = []
    values: list[str] = []
    if user_id:
        clauses.append(f"{user_expression} = ? OR (type = 'alias' AND {PREVIOUS_ID} = ?)")
        values.extend([user_id, user_id])
    if anonymous_id:
        clauses.append(f"{anonymous_expression} = ?")
        values.append(anonymous_id)
    if not clauses:
        raise ValueError("forget() needs a user_id or an anonymous_id.")
    return " OR ".join(f"({clause})" for clause in clauses), values


def truncate_write_ahead_log(connection: sqlite3.Connection, path: object) -> bool:
    """Move every page into the database file and empty the -wal file, so erased rows leave it.

    SQLite answers `busy` instead of raising while another connection reads; the checkpoint is
    retried for a moment, and a failure is logged as a warning (the rows are deleted and their
    pages zeroed in the database; only old page images may stay in the -wal file until the
    next checkpoint). Returns whether the log was emptied.
    """
    deadline = time.monotonic() + CHECKPOINT_SECONDS
    while True:
        try:
            busy = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as error:
            busy, reason = 1, str(error)
        else:
            reason = "another connection was reading"
        if not busy:
            return True
        if time.monotonic() >= deadline:
            logger.warning(
                "erased rows of %s are deleted, but its write-ahead log could not be emptied (%s); "
                "old copies stay in the -wal file until the next checkpoint",
                path,
                reason,
            )
            return False
        time.sleep(0.05)
