"""The store's layout: tables, columns, the stored time format, tallies, and rows read back.

Kept together because they must agree: `COLUMNS` is the order `row_to_dead_letter` unpacks, and
`SCHEMA_VERSION` is the SQLite layout `migrations.SQLITE_MIGRATIONS` builds (`SCHEMA_V1` is its first
step). The same tables and columns exist on PostgreSQL (`migrations.POSTGRES_MIGRATIONS`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from .backend import Connection
from .models import DeadLetter

# Durable tallies (table `tallies`): what happened to rows of this store, written in the same
# transaction as the change, so `stats` can account for rows that are no longer there.
TALLY_PRUNED_EXPIRED: Final = "pruned_expired"  # undelivered, removed by the age limit
TALLY_PRUNED_OVER_LIMIT: Final = "pruned_over_limit"  # undelivered, removed by the row limit
TALLY_PURGED: Final = "purged"  # undelivered, removed by an operator's purge
TALLY_REPLAYED: Final = "replayed"  # sent again and accepted (pending -> replayed)

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    type TEXT,
    message TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    status INTEGER,
    attempts INTEGER NOT NULL,
    first_failed_at TEXT NOT NULL,
    last_failed_at TEXT NOT NULL,
    replayed_at TEXT,
    credentials_token TEXT,
    write_key_fingerprint TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    UNIQUE (workspace_id, message_id)
);
CREATE INDEX IF NOT EXISTS dead_letters_by_age ON dead_letters (last_failed_at);
CREATE INDEX IF NOT EXISTS dead_letters_by_workspace ON dead_letters (workspace_id, reason);
CREATE INDEX IF NOT EXISTS dead_letters_replayed ON dead_letters (replayed_at) WHERE replayed_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS tallies (
    workspace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
CREATE TABLE IF NOT EXISTS counters (
    workspace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
"""
COLUMNS = (
    "id, workspace_id, message_id, type, message, reason, detail, status, attempts, first_failed_at, "
    "last_failed_at, replayed_at, credentials_token, write_key_fingerprint, endpoint, in_doubt_since"
)
#: The SQLite layout version this plugin writes (`migrations.SQLITE_MIGRATIONS` brings a file up to it).
SCHEMA_VERSION: Final = 2


def to_timestamp(moment: datetime) -> str:
    """Fixed-width UTC text, so SQL compares it correctly and `sqlite3` shows it readably."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def row_to_dead_letter(row: Sequence[Any]) -> DeadLetter:
    (
        row_id,
        workspace_id,
        message_id,
        _kind,
        message,
        reason,
        detail,
        status,
        attempts,
        first_failed_at,
        last_failed_at,
        replayed_at,
        token,
        key_fingerprint,
        endpoint,
        in_doubt_since,
    ) = row
    try:
        parsed = json.loads(message)
    except ValueError:
        parsed = {"messageId": message_id, "unreadable": True}
    first = parse_timestamp(first_failed_at)
    last = parse_timestamp(last_failed_at)
    assert first is not None and last is not None
    return DeadLetter(
        id=int(row_id),
        workspace_id=workspace_id,
        message_id=message_id,
        message=parsed if isinstance(parsed, dict) else {"messageId": message_id, "value": parsed},
        reason=reason,
        detail=detail,
        status=status,
        attempts=int(attempts),
        first_failed_at=first,
        last_failed_at=last,
        replayed_at=parse_timestamp(replayed_at),
        credentials_token=token,
        write_key_fingerprint=key_fingerprint,
        endpoint=endpoint,
        in_doubt_since=parse_timestamp(in_doubt_since),
    )


def add_tally(db: Connection, by_workspace: Mapping[str, int], name: str, when: str) -> None:
    rows = [(workspace, name, int(n), when) for workspace, n in by_workspace.items() if n]
    if rows:
        db.executemany(
            "INSERT INTO tallies (workspace_id, name, value, updated_at) VALUES (?,?,?,?) "
            "ON CONFLICT (workspace_id, name) DO UPDATE SET value = tallies.value + excluded.value, "
            "updated_at = excluded.updated_at",
            rows,
        )
