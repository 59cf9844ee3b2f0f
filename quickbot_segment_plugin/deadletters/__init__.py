"""The dead-letter store: every event the delivery pool could not deliver, kept for replay.

segment-analytics-python drops events quietly (a full queue is only a warning, exhausted
retries end in a callback, interpreter exit abandons the queue). The delivery pool reports
each such event (`Undeliverable`); this store keeps them with the reason, so an operator can
list, count, replay and purge them, and account for every event a conversation produced.
The store is an SQLite file (the default) or, with `QUICKBOT_SEGMENT_DATABASE_URL`, a
PostgreSQL database shared by every replica (docs/operators/postgresql.md).

Where and how it is kept:

- Path: `QUICKBOT_SEGMENT_DEAD_LETTER_PATH`, else `$XDG_STATE_HOME/quickbot-segment/dead-letters.sqlite3`,
  else `~/.local/state/quickbot-segment/dead-letters.sqlite3`. The file (and its `-wal`/`-shm`
  side files) is private to the user (0600); a directory the store creates is 0700. Events
  carry user ids and traits (PII), so nobody else on the machine should read them.
- Several QuickBot workers may share one file: every write is one `BEGIN IMMEDIATE`
  transaction, and a busy database is waited for (busy timeout) rather than failed. Within a
  process one connection behind a lock serves every thread (SQLite has one writer anyway).
- One row per (workspace, messageId): the same event failing again (a replay that failed,
  the pool reporting it twice) raises the row's `attempts` instead of adding a row. The
  stored message keeps its `messageId`, so a replay is deduplicated by Segment.
- A replayed row is marked `replayed_at` and kept (until retention removes it), so an operator
  can see what was replayed and replay it again if a destination still misses it: Segment
  deduplicates on messageId. `list`, `count` and `replay` look at pending rows unless asked
  for `state="in_doubt"`, `"replayed"` or `"all"`. A row a replay handed over without learning
  the outcome is "in doubt" and is not resent without asking (docs/operators/replay.md).
- Retention: rows whose last failure is older than `QUICKBOT_SEGMENT_DEAD_LETTER_RETENTION_DAYS`
  (30) go, and beyond `QUICKBOT_SEGMENT_DEAD_LETTER_MAX_ROWS` (1,000,000) the oldest go,
  replayed rows first. Pruning runs on `add`, but only every `prune_every` events or
  `prune_interval` seconds, so the hot failure path stays cheap; the row limit can be exceeded
  by up to `prune_every` rows in between. Undelivered rows removed this way are a loss and are
  never silent: a warning log, the `dead_letters_pruned` counter, and a durable tally that
  `quickbot-segment stats` shows.
- Never a write key: the credentials are stored as the sealed token (`qbseg.v1...`, useless
  without the operator's encryption keys) plus the key's fingerprint; every string of a message
  and the detail text go through `redaction.redact` (which also removes every key this process
  has opened) before they are written, as a last line of defence.
- Never raises into the delivery thread: `add` catches everything; a failed write logs one
  error (then a summary at most once a minute while the failure lasts) and counts the lost
  events as `dead_letter_write_failed`.

The package, one job a module: `config` (settings and defaults), `models` (what the store
hands out), `filters` (row selection), `schema` (the tables), `migrations` (numbered schema
changes), `scrubbing` (no write key is written), `backend` (the seam between the store and its
database), `sqlite_backend` with `database` (opening the file), `postgres_backend` with
`database_url` (the shared database; its password never printed), `replica` (which process
wrote a counter), `replay_lock` (one replay at a time), `store` (`DeadLetterStore`, made of
`base`, `writes`, `queries`, `maintenance`, `erasure` and `replay_rows`), `replay` (a replay
through a delivery pool, `replay_dead_letters`) and `recorder`.
"""

from __future__ import annotations

from .config import (
    COUNTER_FLUSH_ENV,
    MAX_ROWS_ENV,
    PATH_ENV,
    RETENTION_DAYS_ENV,
    SEGMENT_DEDUP_WINDOW,
    DeadLetterSettings,
    beside_store,
    default_path,
)
from .database_url import scrub_database_secrets
from .errors import DatabaseError
from .filters import STATES as STATES
from .filters import DeadLetterFilter
from .filters import State as State
from .models import DeadLetter, PruneReport, ReplayReport
from .recorder import DeadLetterRecorder
from .replay import (
    DEFAULT_REPLAY_TIMEOUT,
    PoolFactory,
    ReplayPool,
    ReplayPoolSettings,
    dedup_warning,
    replay_dead_letters,
)
from .replay_lock import ReplayInProgress, replay_lock
from .replica import replica_id
from .store import DeadLetterStore

__all__ = [
    "COUNTER_FLUSH_ENV",
    "DEFAULT_REPLAY_TIMEOUT",
    "MAX_ROWS_ENV",
    "PATH_ENV",
    "RETENTION_DAYS_ENV",
    "SEGMENT_DEDUP_WINDOW",
    "STATES",
    "DatabaseError",
    "DeadLetter",
    "DeadLetterFilter",
    "DeadLetterRecorder",
    "DeadLetterSettings",
    "DeadLetterStore",
    "PoolFactory",
    "PruneReport",
    "ReplayInProgress",
    "ReplayPool",
    "ReplayPoolSettings",
    "ReplayReport",
    "beside_store",
    "dedup_warning",
    "default_path",
    "replay_dead_letters",
    "replay_lock",
    "replica_id",
    "scrub_database_secrets",
]
