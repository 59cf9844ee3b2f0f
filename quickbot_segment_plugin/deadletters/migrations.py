"""Numbered schema migrations, one list per backend, applied in order and recorded.

A migration is applied once, in one transaction with the version it brings, so a store is
always at a version some release of the plugin knows. SQLite records the version in the
file's `user_version`; PostgreSQL in a `schema_version` table (one row per migration applied,
with when), under an advisory lock so replicas starting together do not race. A store at a
newer version than this plugin knows is refused (an older replica must not write a layout it
does not understand).

Append only: a released migration is never edited, a change is a new number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .schema import SCHEMA_V1


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


def _split(script: str) -> tuple[str, ...]:
    return tuple(statement.strip() for statement in script.split(";") if statement.strip())


SQLITE_MIGRATIONS: Final = (
    Migration(1, "dead letters, tallies and counters", _split(SCHEMA_V1)),
    Migration(
        2,
        "in-doubt rows, counters per replica, the replay lease",
        _split(
            """
            ALTER TABLE dead_letters ADD COLUMN in_doubt_since TEXT;
            CREATE TABLE IF NOT EXISTS replica_counters (
                replica_id TEXT NOT NULL,
                workspace_id TEXT NOT NULL,
                name TEXT NOT NULL,
                value INTEGER NOT NULL,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (replica_id, workspace_id, name)
            );
            INSERT INTO replica_counters (replica_id, workspace_id, name, value, updated_at)
                SELECT '(not recorded)', workspace_id, name, value, updated_at FROM counters;
            DROP TABLE counters;
            CREATE TABLE IF NOT EXISTS leases (
                name TEXT PRIMARY KEY,
                holder TEXT NOT NULL,
                token TEXT NOT NULL,
                acquired_at TEXT NOT NULL,
                expires_at TEXT NOT NULL
            )
            """
        ),
    ),
)

POSTGRES_MIGRATIONS: Final = (
    Migration(
        1,
        "dead letters, tallies, counters per replica, the replay lease",
        _split(
            """
            CREATE TABLE IF NOT EXISTS dead_letters (
                id BIGSERIAL PRIMARY KEY,
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
                in_doubt_since TEXT,
                UNIQUE (workspace_id, message_id)
            );
            CREATE INDEX IF NOT EXISTS dead_letters_by_age ON dead_letters (last_failed_at);
            CREATE INDEX IF NOT EXISTS dead_letters_by_workspace ON dead_letters (workspace_id, reason);
            CREATE INDEX IF NOT EXISTS dead_letters_replayed ON dead_letters (replayed_at)
                WHERE replayed_at IS NOT NULL;
            CREATE TABLE IF NOT EXISTS tallies (
                workspace_id TEXT NOT NULL,
                name TEXT NOT NULL,
                value BIGINT NOT NULL,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (workspace_id, name)
            );
            CREATE TABLE IF NOT EXISTS replica_counters (
                replica_id TEXT NOT NULL,
                workspace_id TEXT NOT NULL,
                name TEXT NOT NULL,
                value BIGINT NOT NULL,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (replica_id, workspace_id, name)
            );
            CREATE TABLE IF NOT EXISTS leases (
                name TEXT PRIMARY KEY,
                holder TEXT NOT NULL,
                token TEXT NOT NULL,
                acquired_at TEXT NOT NULL,
                expires_at TEXT NOT NULL
            )
            """
        ),
    ),
)


def latest(migrations: tuple[Migration, ...]) -> int:
    return migrations[-1].version
