"""The collector's SQLite file: every message received, the request it came in, and every
request turned away.

One file in WAL mode, so the read API and the CLI can query while handler threads write;
writes go through one connection behind a lock (SQLite allows one writer at a time
anyway). The file holds what bots sent (PII included), so it is created private to the
user (0600). A write key is never stored, only its fingerprint: the raw batch kept for the
debugger is the request body with every `writeKey` removed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import truncate_write_ahead_log, user_condition
from .summary import MAX_SUMMARY_MINUTES, SummaryTally, minute_of, minute_offset

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT,
    type TEXT,
    user_id TEXT,
    anonymous_id TEXT,
    event TEXT,
    received_at TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    write_key_fingerprint TEXT NOT NULL,
    duplicate INTEGER NOT NULL,
    warnings TEXT NOT NULL,
    message TEXT NOT NULL,
    violations TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS events_by_message_id ON events (write_key_fingerprint, message_id);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id);
CREATE INDEX IF NOT EXISTS events_by_received_at ON events (received_at);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    received_at TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    write_key_fingerprint TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    write_key_fingerprint TEXT
);
"""

_COLUMNS = (
    "id, message_id, type, user_id, anonymous_id, event, received_at, batch_id, "
    "write_key_fingerprint, duplicate, warnings, message, violations"
)
MAX_PAGE = 1000


@dataclass(frozen=True)
class RawBatch:
    """The request a stored message came in, as the debugger shows it next to the message.

    `body` is JSON text of the request body with every `writeKey` removed; `size` is the
    body's length on the wire (compressed when it was gzipped).
    """

    path: str
    size: int
    body: str


@dataclass(frozen=True)
class EventFilter:
    """The read API's filters; None means "any"."""

    type: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    event: str | None = None
    message_id: str | None = None
    since: str | None = None  # a receivedAt in the collector's own format (see collector_spec)
    after_id: int | None = None  # rows stored after this row id (the debugger's live cursor)

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        values: list[Any] = []
        for column, value in (
            ("type", self.type),
            ("user_id", self.user_id),
            ("anonymous_id", self.anonymous_id),
            ("event", self.event),
            ("message_id", self.message_id),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                values.append(value)
        if self.since is not None:
            clauses.append("received_at >= ?")
            values.append(self.since)
        if self.after_id is not None:
            clauses.append("id > ?")
            values.append(self.after_id)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", values


def _text_id(value: object) -> str | None:
    """Ids are compared as text: Segment stringifies numeric ids."""
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    # A JSON "\\ud800" escape decodes to a lone surrogate, which SQLite cannot store as UTF-8.
    return str(value).encode("utf-8", "replace").decode("utf-8")


class EventStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._upgrade()
        self._closed = False
        self._tally: SummaryTally | None = None  # loaded by the first summary()

    def _upgrade(self) -> None:
        """Adds what newer versions store to a file an older collector created (`--db` keeps files)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
        if "violations" not in columns:
            self._db.execute("ALTER TABLE events ADD COLUMN violations TEXT NOT NULL DEFAULT '[]'")

    def add(
        self,
        messages: Sequence[dict[str, Any]],
        warnings: Sequence[Sequence[str]],
        *,
        received_at: str,
        batch_id: str,
        write_key_fingerprint: str,
        violations: Sequence[Sequence[str]] | None = None,
        raw_batch: RawBatch | None = None,
    ) -> int:
        """Stores one request's messages (and the request) in one transaction; returns how
        many were duplicates.

        A message whose messageId this write key already sent is kept and flagged, as
        Segment would deduplicate it: the debugger shows both, a warehouse one.
        `violations` are tracking-plan violations per message (none until a plan is checked).
        """
        per_message_violations = list(violations) if violations is not None else [[] for _ in messages]
        if len(per_message_violations) != len(messages):
            raise ValueError("violations must hold one list per message.")
        duplicates = 0
        with self._changed:
            self._check_open()
            seen_here: set[str] = set()
            known = self._known(write_key_fingerprint, [_text_id(message.get("messageId")) for message in messages])
            rows = []
            for message, message_warnings, message_violations in zip(
                messages, warnings, per_message_violations, strict=True
            ):
                message_id = _text_id(message.get("messageId"))
                duplicate = False
                if message_id is not None:
                    duplicate = message_id in seen_here or message_id in known
                    seen_here.add(message_id)
                duplicates += duplicate
                rows.append(
                    (
                        message_id,
                        _text_id(message.get("type")),
                        _text_id(message.get("userId")),
                        _text_id(message.get("anonymousId")),
                        _text_id(message.get("event")) if message.get("type") == "track" else None,
                        received_at,
                        batch_id,
                        write_key_fingerprint,
                        int(duplicate),
                        json.dumps(list(message_warnings)),
                        json.dumps(message),  # ASCII escapes: safe for lone surrogates
                        json.dumps(list(message_violations)),
                    )
                )
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO events (message_id, type, user_id, anonymous_id, event, received_at, "
                    "batch_id, write_key_fingerprint, duplicate, warnings, message, violations) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                if raw_batch is not None:
                    self._db.execute(
                        "INSERT OR REPLACE INTO batches (batch_id, received_at, path, bytes, "
                        "write_key_fingerprint, body) VALUES (?,?,?,?,?,?)",
                        (batch_id, received_at, raw_batch.path, raw_batch.size, write_key_fingerprint, raw_batch.body),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if self._tally is not None:
                for row in rows:
                    self._tally.record(
                        str(row[1]),
                        received_at,
                        duplicate=bool(row[8]),
                        warned=row[9] != "[]",
                        violated=row[11] != "[]",
                    )
            self._changed.notify_all()
        return duplicates

    def _known(self, write_key_fingerprint: str, message_ids: Sequence[str | None]) -> set[str]:
        """Which of these messageIds this write key already sent (one query per 500 ids)."""
        wanted = sorted({message_id for message_id in message_ids if message_id is not None})
        known: set[str] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = self._db.execute(
                "SELECT DISTINCT message_id FROM events WHERE write_key_fingerprint = ? "
                f"AND message_id IN ({','.join('?' * len(chunk))})",
                [write_key_fingerprint, *chunk],
            ).fetchall()
            known.update(row[0] for row in rows)
        return known

    def add_rejection(
        self,
        *,
        received_at: str,
        path: str,
        status: int,
        code: str,
        reason: str,
        batch_id: str,
        write_key_fingerprint: str | None,
    ) -> None:
        with self._lock:
            self._check_open()
            self._db.execute(
                "INSERT INTO rejections (received_at, path, status, code, reason, batch_id, "
                "write_key_fingerprint) VALUES (?,?,?,?,?,?,?)",
                (received_at, path, status, code, reason, batch_id, write_key_fingerprint),
            )

    def events(self, where: EventFilter, limit: int, offset: int) -> list[dict[str, Any]]:
        """Newest first."""
        clause, values = where.where()
        with self._lock:
            self._check_open()
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM events{clause} ORDER BY id DESC LIMIT ? OFFSET ?",
                [*values, min(max(limit, 0), MAX_PAGE), max(offset, 0)],
            ).fetchall()
        return [_row_to_event(row) for row in rows]

    def total(self, where: EventFilter) -> int:
        clause, values = where.where()
        with self._lock:
            self._check_open()
            (count,) = self._db.execute(f"SELECT COUNT(*) FROM events{clause}", values).fetchone()
        return int(count)

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        """The request that brought the messages of `batch_id`, or None when it is not kept."""
        with self._lock:
            self._check_open()
            row = self._db.execute(
                "SELECT batch_id, received_at, path, bytes, write_key_fingerprint, body, "
                "(SELECT COUNT(*) FROM events WHERE events.batch_id = batches.batch_id) "
                "FROM batches WHERE batch_id = ?",
                (batch_id,),
            ).fetchone()
        if row is None:
            return None
        found, received_at, path, size, key, body, stored = row
        return {
            "batch_id": found,
            "received_at": received_at,
            "path": path,
            "bytes": size,
            "write_key_fingerprint": key,
            "messages_stored": stored,
            "body": json.loads(body),
        }

    def summary(self, minutes: int, now: str) -> dict[str, Any]:
        """Counts for the debugger's summary strip: per type overall, and per type for each of
        the last `minutes` minutes up to `now` (a receivedAt), oldest first, gaps as zeros.
        """
        with self._lock:
            self._check_open()
            if self._tally is None:
                self._tally = self._load_tally(now)
            (last_id,) = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
            # last_id lets a reader that follows new rows see that the store was cleared or replaced.
            return {"last_id": int(last_id), **self._tally.report(minutes, now)}

    def _load_tally(self, now: str) -> SummaryTally:
        """Counts what the file already holds, once; `add` and `clear` keep them current."""
        horizon = minute_offset(minute_of(now), -(MAX_SUMMARY_MINUTES - 1))
        tally = SummaryTally()
        tally.load(
            self._db.execute(
                "SELECT type, COUNT(*), SUM(duplicate), SUM(warnings != '[]'), SUM(violations != '[]') "
                "FROM events GROUP BY type"
            ).fetchall(),
            self._db.execute(
                "SELECT substr(received_at, 1, 16), type, COUNT(*) FROM events WHERE received_at >= ? GROUP BY 1, 2",
                (horizon,),
            ).fetchall(),
        )
        return tally

    def messages(self) -> list[dict[str, Any]]:
        """Every stored message, oldest first."""
        with self._lock:
            self._check_open()
            rows = self._db.execute("SELECT message FROM events ORDER BY id").fetchall()
        return [json.loads(message) for (message,) in rows]

    def count(self, distinct: bool = False) -> int:
        sql = "SELECT COUNT(*) FROM events" + (" WHERE duplicate = 0" if distinct else "")
        with self._lock:
            self._check_open()
            (count,) = self._db.execute(sql).fetchone()
        return int(count)

    def wait_for(self, count: int, timeout: float, distinct: bool) -> bool:
        """Blocks until at least `count` messages are stored (woken by each `add`)."""
        deadline = time.monotonic() + timeout
        sql = "SELECT COUNT(*) FROM events" + (" WHERE duplicate = 0" if distinct else "")
        with self._changed:
            while True:
                self._check_open()
                if int(self._db.execute(sql).fetchone()[0]) >= count:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.5))

    def rejections(self, limit: int = 100) -> list[dict[str, Any]]:
        """Requests answered with an error, or accepted and dropped; newest first."""
        with self._lock:
            self._check_open()
            rows = self._db.execute(
                "SELECT received_at, path, status, code, reason, batch_id, write_key_fingerprint "
                "FROM rejections ORDER BY id DESC LIMIT ?",
                (min(max(limit, 0), MAX_PAGE),),
            ).fetchall()
        keys = ("received_at", "path", "status", "code", "reason", "batch_id", "write_key_fingerprint")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def forget(self, user_id: str | None = None, anonymous_id: str | None = None) -> list[dict[str, Any]]:
        """Delete one end user's messages (an erasure request) and return what was removed.

        A message is the user's when its userId is `user_id` (or an alias's previousId is), or
        its anonymousId is `anonymous_id`. The raw requests kept for the debugger are rewritten
        without those messages (removed when nothing else was in them), so no copy remains.
        Rows are listed as {id, message_id, type, event, received_at}; never the message.
        """
        # The id columns hold each message's ids as text (`_text_id`).
        where, values = user_condition(
            user_id, anonymous_id, user_expression="user_id", anonymous_expression="anonymous_id"
        )
        with self._lock:
            self._check_open()
            # Erased means gone from the file too: freed pages are zeroed, not left for a reader of the bytes.
            self._db.execute("PRAGMA secure_delete = ON")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    f"SELECT id, message_id, type, event, received_at, batch_id FROM events WHERE {where} ORDER BY id",
                    values,
                ).fetchall()
                self._db.execute(f"DELETE FROM events WHERE {where}", values)
                for batch_id in sorted({row[5] for row in rows}):
                    self._forget_in_batch(batch_id, user_id, anonymous_id)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._tally = None  # counted again from the rows on the next summary
            truncate_write_ahead_log(self._db, self.path)
        keys = ("id", "message_id", "type", "event", "received_at")
        return [dict(zip(keys, row[:5], strict=True)) for row in rows]

    def _forget_in_batch(self, batch_id: str, user_id: str | None, anonymous_id: str | None) -> None:
        found = self._db.execute("SELECT body FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        if found is None:
            return
        try:
            body = json.loads(found[0])
        except ValueError:
            body = None

        def belongs(message: object) -> bool:
            if not isinstance(message, dict):
                return False
            if user_id and (
                _text_id(message.get("userId")) == user_id
                or (message.get("type") == "alias" and _text_id(message.get("previousId")) == user_id)
            ):
                return True
            return bool(anonymous_id) and _text_id(message.get("anonymousId")) == anonymous_id

        if isinstance(body, dict) and isinstance(body.get("batch"), list):
            kept = [message for message in body["batch"] if not belongs(message)]
            if kept:
                self._db.execute(
                    "UPDATE batches SET body = ? WHERE batch_id = ?", (json.dumps({**body, "batch": kept}), batch_id)
                )
                return
        # A single-call request, an unreadable body, or nothing left: the whole request goes.
        self._db.execute("DELETE FROM batches WHERE batch_id = ?", (batch_id,))

    def clear(self) -> None:
        with self._lock:
            self._check_open()
            self._db.execute("DELETE FROM events")
            self._db.execute("DELETE FROM batches")
            self._db.execute("DELETE FROM rejections")
            if self._tally is not None:
                self._tally.clear()

    def close(self) -> None:
        with self._changed:
            if not self._closed:
                self._closed = True
                self._db.close()
                self._changed.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the collector is stopped; its store is closed (read events before stop()).")


def _row_to_event(row: Sequence[Any]) -> dict[str, Any]:
    (
        row_id,
        message_id,
        kind,
        user_id,
        anonymous_id,
        event,
        received_at,
        batch_id,
        key,
        duplicate,
        warnings,
        message,
        violations,
    ) = row
    return {
        "id": row_id,
        "message": json.loads(message),
        "message_id": message_id,
        "type": kind,
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "event": event,
        "received_at": received_at,
        "batch_id": batch_id,
        "write_key_fingerprint": key,
        "duplicate": bool(duplicate),
        "warnings": json.loads(warnings),
        "violations": json.loads(violations),
    }
