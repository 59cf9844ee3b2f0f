"""`DeadLetterStore`: add (never raises), list, count, replay, purge and prune dead letters.

The package docstring says where the file is and the rules it keeps (one row per messageId,
retention, no write key); this module is the store's operations on that file.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from ..core import (
    COUNTERS,
    DEAD_LETTER_WRITE_FAILED,
    DEAD_LETTERS_PRUNED,
    ConfigurationError,
    CounterFlusher,
    Counters,
    ErasureReport,
    Undeliverable,
    identifiers_of,
    parse_stored_timestamp,
    redact,
    scrub,
    search_terms,
    stored_timestamp,
    user_condition,
)
from .backend import Connection, StoreBackend, backend_for
from .config import (
    DEFAULT_BUSY_TIMEOUT,
    DEFAULT_PRUNE_EVERY,
    DEFAULT_PRUNE_INTERVAL,
    FAILURE_LOG_INTERVAL,
    MAX_DETAIL_CHARS,
    PAGE_SIZE,
    DeadLetterSettings,
)
from .database import logger
from .filters import DeadLetterFilter, State
from .models import DeadLetter, PruneReport, ReplayReport
from .replica import replica_id
from .schema import (
    COLUMNS,
    TALLY_PRUNED_EXPIRED,
    TALLY_PRUNED_OVER_LIMIT,
    TALLY_PURGED,
    TALLY_REPLAYED,
    dead_letter,
    tally,
)
from .scrubbing import TOKEN_PREFIX, Row, Scrubber, clean_endpoint, clean_fingerprint
from .sqlite_backend import SqliteBackend

#: One logger for the whole store, whichever module logs: operators filter on this name.


_INSERT: Final = (
    "INSERT INTO dead_letters (workspace_id, message_id, type, message, reason, detail, status, "
    "attempts, first_failed_at, last_failed_at, credentials_token, write_key_fingerprint, endpoint) "
    "VALUES (?,?,?,?,?,?,?,1,?,?,?,?,?) "
    "ON CONFLICT (workspace_id, message_id) DO UPDATE SET "
    # Columns named with their table: PostgreSQL finds `attempts` alone ambiguous next to `excluded`.
    "attempts = dead_letters.attempts + 1, reason = excluded.reason, detail = excluded.detail, "
    "status = excluded.status, last_failed_at = excluded.last_failed_at, replayed_at = NULL, "
    "in_doubt_since = NULL, "
    "credentials_token = COALESCE(excluded.credentials_token, dead_letters.credentials_token), "
    "write_key_fingerprint = excluded.write_key_fingerprint, endpoint = excluded.endpoint"
)


class DeadLetterStore:
    """Undeliverable events in SQLite or PostgreSQL: add (never raises), list, count, replay, purge, prune.

    Thread-safe and multi-process-safe. Opening is lazy: constructing a store reads only
    settings (raising `ConfigurationError` for a malformed variable); the file and its
    directory (or the tables of a PostgreSQL database) are created by the first write. Reads
    of an SQLite store that does not exist yet find nothing and create nothing.

    `path` is an SQLite file or a `postgresql://` URL; without one, `QUICKBOT_SEGMENT_DATABASE_URL`
    (shared by every replica) or else `QUICKBOT_SEGMENT_DEAD_LETTER_PATH` decides (`backend.backend_for`).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        retention_days: float | None = None,
        max_rows: int | None = None,
        *,
        counters: Counters = COUNTERS,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        prune_every: int = DEFAULT_PRUNE_EVERY,
        prune_interval: float = DEFAULT_PRUNE_INTERVAL,
        clock: Callable[[], datetime] | None = None,
        environ: Mapping[str, str] | None = None,
        backend: StoreBackend | None = None,
    ) -> None:
        self.backend = backend or backend_for(path, environ, busy_timeout=busy_timeout)
        #: The SQLite file, or None when the store is a PostgreSQL database.
        self.path: Path | None = self.backend.path if isinstance(self.backend, SqliteBackend) else None
        #: Where the store is, safe to print: a file path, or the database URL without its password.
        self.location = self.backend.location
        self.retention_days = (
            retention_days
            if retention_days is not None
            else DeadLetterSettings.from_env(environ).dead_letter_retention_days
        )
        self.max_rows = max_rows if max_rows is not None else DeadLetterSettings.from_env(environ).dead_letter_max_rows
        if self.retention_days <= 0:
            raise ConfigurationError("retention_days must be more than 0.", field="retention_days")
        if self.max_rows < 1:
            raise ConfigurationError("max_rows must be at least 1.", field="max_rows")
        self._environ = environ
        self._counters = counters
        self._prune_every = max(1, prune_every)
        self._prune_interval = prune_interval
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._db: Connection | None = None
        self._pid = os.getpid()
        self._added_since_prune = 0
        self._last_prune: float | None = None  # time.monotonic() of the last prune
        # Write-failure episode: log the first failure, then a summary at most once a minute.
        self._failing = False
        self._lost_unlogged = 0
        self._lost_in_episode = 0
        self._last_failure_log = 0.0
        self._warned_raw_token = False
        _STORES.add(self)

    def __repr__(self) -> str:
        return f"DeadLetterStore({self.location!r})"

    # --- connection -------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether there is a store to read (False only for an SQLite file not created yet)."""
        return self.backend.exists()

    def _connection(self, create: bool) -> Connection | None:
        """The open connection (opening it when needed); None when reading a store that does not exist."""
        if self._pid != os.getpid():
            self._forget_after_fork()
        if self._db is not None:
            return self._db
        if not create and not self.backend.exists():
            return None
        self._db = self.backend.connect()
        return self._db

    def _forget_after_fork(self) -> None:
        """In a forked child: never touch (or close) the parent's connection; open a new one."""
        if self._db is not None:
            _INHERITED_CONNECTIONS.append(self._db)  # closing it here could disturb the parent's WAL
        self._db = None
        self._lock = threading.RLock()
        self._pid = os.getpid()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One write transaction (on SQLite taking the write lock up front, waiting out other processes)."""
        with self._lock:
            db = self._connection(create=True)
            if db is None:
                raise RuntimeError(f"the dead-letter store {self.location} could not be opened for writing")
            try:
                db.execute(self.backend.begin)
            except self.backend.errors:
                self._drop_connection()
                raise
            try:
                yield db
            except BaseException as error:
                with suppress(*self.backend.errors):
                    db.execute("ROLLBACK")
                if isinstance(error, self.backend.errors):
                    self._drop_connection()
                raise
            db.execute("COMMIT")

    def _read(self, query: str, values: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            db = self._connection(create=False)
            if db is None:
                return []
            try:
                return db.execute(query, values).fetchall()
            except self.backend.errors:
                self._drop_connection()  # a broken server connection: the next call opens a new one
                raise

    def close(self) -> None:
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None

    def _now(self) -> datetime:
        return self._clock()

    # --- writing ----------------------------------------------------------------------------

    def add(
        self,
        workspace_id: str,
        messages: Sequence[Mapping[str, Any]],
        reason: str,
        detail: str = "",
        status: int | None = None,
        credentials_token: str | None = None,
        write_key_fingerprint: str = "",
        endpoint: str = "",
    ) -> int:
        """Store undeliverable messages; returns how many are now recorded (new rows plus rows
        whose messageId was already there and got attempts + 1), 0 when the write failed.

        Never raises: a failure is logged and counted as `dead_letter_write_failed`.
        """
        count = len(messages) if isinstance(messages, Sequence) else 0
        try:
            if not messages:
                return 0
            rows = [self._clean(message, workspace_id) for message in messages]
            token = self._clean_token(credentials_token)
            when = stored_timestamp(self._now())
            values = [
                (
                    str(workspace_id),
                    row.message_id,
                    row.type,
                    row.message_json,
                    str(reason),
                    redact(str(detail or ""))[:MAX_DETAIL_CHARS],
                    status if isinstance(status, int) and not isinstance(status, bool) else None,
                    when,
                    when,
                    token,
                    clean_fingerprint(write_key_fingerprint),
                    clean_endpoint(endpoint),
                )
                for row in rows
            ]
            with self._transaction() as db:
                db.executemany(_INSERT, values)
        except Exception as error:
            self._write_failed(str(workspace_id), count, str(reason), error)
            return 0
        self._write_succeeded()
        self._counters.dead_lettered(str(workspace_id), len(rows))
        self._maybe_prune(len(rows))
        return len(rows)

    def add_undeliverables(self, entries: Sequence[tuple[Undeliverable, str | None]]) -> int:
        """Many `add_undeliverable`s in one transaction: a shutdown that gives up on thousands of
        workspaces at its deadline must not spend a commit on each. Never raises (as `add`)."""
        total = sum(len(undeliverable.messages) for undeliverable, _ in entries)
        try:
            when = stored_timestamp(self._now())
            values = []
            per_workspace: dict[str, int] = {}
            for undeliverable, credentials_token in entries:
                token = self._clean_token(credentials_token)
                detail = redact(str(undeliverable.detail or ""))[:MAX_DETAIL_CHARS]
                status = undeliverable.status
                status = status if isinstance(status, int) and not isinstance(status, bool) else None
                fingerprint = clean_fingerprint(undeliverable.write_key_fingerprint)
                endpoint = clean_endpoint(undeliverable.endpoint)
                workspace_id = str(undeliverable.workspace_id)
                for message in undeliverable.messages:
                    row = self._clean(message, workspace_id)
                    values.append(
                        (
                            workspace_id, row.message_id, row.type, row.message_json, str(undeliverable.reason),
                            detail, status, when, when, token, fingerprint, endpoint,
                        )
                    )  # fmt: skip
                    per_workspace[workspace_id] = per_workspace.get(workspace_id, 0) + 1
            if not values:
                return 0
            with self._transaction() as db:
                db.executemany(_INSERT, values)
        except Exception as error:
            self._write_failed("(several)", total, "(several)", error)
            return 0
        self._write_succeeded()
        for workspace_id, count in per_workspace.items():
            self._counters.dead_lettered(workspace_id, count)
        self._maybe_prune(len(values))
        return len(values)

    def add_undeliverable(self, undeliverable: Undeliverable, credentials_token: str | None = None) -> int:
        """`add` for what the delivery pool reports."""
        return self.add(
            undeliverable.workspace_id,
            undeliverable.messages,
            undeliverable.reason,
            undeliverable.detail,
            undeliverable.status,
            credentials_token,
            undeliverable.write_key_fingerprint,
            undeliverable.endpoint,
        )

    def _clean(self, message: Mapping[str, Any], workspace_id: object) -> Row:
        if not isinstance(message, Mapping):
            message = {"unreadable": str(message)}
        scrubber = Scrubber()
        cleaned: dict[str, Any] = scrubber.value(message)
        if scrubber.removed_something:
            logger.warning(
                "removed what looked like a write key from a dead-lettered message of workspace %s before storing it",
                workspace_id,
                extra={"workspace": workspace_id},
            )
        message_id = cleaned.get("messageId")
        if message_id is None or message_id == "":
            # A replay must carry a stable id for Segment to deduplicate it; give it one now.
            message_id = str(uuid.uuid4())
            cleaned["messageId"] = message_id
        kind = cleaned.get("type")
        text = json.dumps(cleaned, ensure_ascii=True, separators=(",", ":"), default=str)
        return Row(str(message_id), kind if isinstance(kind, str) else None, text)

    def _clean_token(self, token: str | None) -> str | None:
        """Only a sealed token is stored; anything else (a raw key passed by mistake) is dropped."""
        if token is None or token == "":
            return None
        if isinstance(token, str) and token.startswith(TOKEN_PREFIX) and redact(token) == token:
            return token
        if not self._warned_raw_token:
            self._warned_raw_token = True
            logger.error(
                "a dead letter came with credentials that are not a sealed token (%s...); they were not stored, "
                "so these events cannot be replayed",
                TOKEN_PREFIX,
            )
        return None

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

    # --- write failures: never raised, never silent -----------------------------------------

    def _write_failed(self, workspace_id: str, count: int, reason: str, error: Exception) -> None:
        try:
            self._counters.inc(workspace_id, DEAD_LETTER_WRITE_FAILED, count)
            with self._lock:
                if isinstance(error, self.backend.errors):
                    self._drop_connection()
                now = time.monotonic()
                self._lost_unlogged += count
                self._lost_in_episode += count
                first = not self._failing
                if not first and now - self._last_failure_log < FAILURE_LOG_INTERVAL:
                    return
                lost, self._lost_unlogged = self._lost_unlogged, 0
                self._failing, self._last_failure_log = True, now
            what = "could not write" if first else "still cannot write"
            logger.error(
                "%s %d undeliverable Segment event(s) (workspace %s, reason %s) to the dead-letter store %s: %s; "
                "they are lost (counted as %s)",
                what,
                lost,
                workspace_id,
                reason,
                self.location,
                redact(f"{type(error).__name__}: {error}")[:MAX_DETAIL_CHARS],
                DEAD_LETTER_WRITE_FAILED,
                extra={"workspace": workspace_id, "count": lost, "reason": reason},
            )
        except Exception:  # logging itself failed (a broken handler): nothing more can be done here
            pass

    def _write_succeeded(self) -> None:
        if not self._failing:
            return
        with self._lock:
            if not self._failing:
                return
            lost, unlogged = self._lost_in_episode, self._lost_unlogged
            self._failing, self._lost_in_episode, self._lost_unlogged = False, 0, 0
        logger.warning(
            "the dead-letter store %s is writable again; %d event(s) were lost while it was not "
            "(%d not reported before)",
            self.location,
            lost,
            unlogged,
            extra={"count": lost, "reason": DEAD_LETTER_WRITE_FAILED},
        )

    def _drop_connection(self) -> None:
        """After an SQLite error the connection may be unusable; the next write opens a new one."""
        db, self._db = self._db, None
        if db is not None and self._pid == os.getpid():
            with suppress(*self.backend.errors):
                db.close()

    # --- reading ----------------------------------------------------------------------------

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

    # --- changing rows ----------------------------------------------------------------------

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
        from .replay_lock import replay_lock

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

    # --- retention --------------------------------------------------------------------------

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


# --- helpers -------------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _nested(rows: Sequence[Sequence[Any]]) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = {}
    for workspace, name, value in rows:
        result.setdefault(workspace, {})[name] = int(value)
    return result


def _chunks(ids: Sequence[int], size: int = 500) -> Iterator[list[int]]:
    """SQLite limits bound parameters per statement (999 on older builds)."""
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


# Every store in this process, so a fork can reset their locks (weak: a dropped store just goes).
_STORES: weakref.WeakSet[DeadLetterStore] = weakref.WeakSet()
# Connections a forked child inherited: kept referenced so they are never closed from the child.
_INHERITED_CONNECTIONS: list[Connection] = []


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
