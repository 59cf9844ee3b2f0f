"""`DeadLetterStore`: add (never raises), list, count, replay, purge and prune dead letters.

The package docstring says where the file is and the rules it keeps (one row per messageId,
retention, no write key). The store is one class made of one part per job, each in its own
module: `base` (settings, the connection, transactions), `writes` (`add`, never raising),
`queries` (rows, counts, stats), `maintenance` (retention, purge, counter flushing),
`erasure` (one end user's data) and `replay_rows` (the rows' side of a replay).
"""

from __future__ import annotations

from .erasure import StoreErasure
from .replay_rows import StoreReplayRows
from .writes import StoreWrites


class DeadLetterStore(StoreWrites, StoreReplayRows, StoreErasure):
    """Undeliverable events in SQLite or PostgreSQL: add (never raises), list, count, replay, purge, prune.

    Thread-safe and multi-process-safe. Opening is lazy: constructing a store reads only
    settings (raising `ConfigurationError` for a malformed variable); the file and its
    directory (or the tables of a PostgreSQL database) are created by the first write. Reads
    of an SQLite store that does not exist yet find nothing and create nothing.

    `path` is an SQLite file or a `postgresql://` URL; without one, `QUICKBOT_SEGMENT_DATABASE_URL`
    (shared by every replica) or else `QUICKBOT_SEGMENT_DEAD_LETTER_PATH` decides (`backend.backend_for`).
    """
