"""The store's schema is versioned: numbered migrations, applied once, in a transaction, by one
replica at a time; a store from a newer plugin is refused; an SQLite file from the previous
release is upgraded in place without losing its counters."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest

from quickbot_segment_plugin.core.counters import Counters
from quickbot_segment_plugin.core.errors import ConfigurationError
from quickbot_segment_plugin.deadletters import DeadLetterStore
from quickbot_segment_plugin.deadletters.migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from quickbot_segment_plugin.deadletters.schema import SCHEMA_V1


def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def replica() -> None:
        store = DeadLetterStore(postgres_url, counters=Counters())
        start.wait()
        try:
            store.add(
                "ws", [{"type": "track", "userId": "u", "event": "E", "messageId": f"m-{id(store)}"}], "queue_full"
            )
            if store.count() < 1:
                errors.append(AssertionError("a replica's row is missing"))
        except BaseException as error:
            errors.append(error)
        finally:
            store.close()

    threads = [threading.Thread(target=replica) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    with psycopg.connect(postgres_url) as connection:
        versions = connection.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        rows = connection.execute("SELECT count(*) FROM dead_letters").fetchone()
    assert [version for (version,) in versions] == [migration.version for migration in POSTGRES_MIGRATIONS]
    assert rows == (8,)


def test_a_database_migrated_by_a_newer_plugin_is_refused(postgres_url: str) -> None:
    DeadLetterStore(postgres_url, counters=Counters()).count()
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("INSERT INTO schema_version VALUES (99, 'from the future', 'now')")

    store = DeadLetterStore(postgres_url, counters=Counters())
    with pytest.raises(ConfigurationError, match=r"migrated by a newer quickbot-segment-plugin \(schema 99"):
        store.count()
    assert store.add("ws", [{"type": "track", "userId": "u", "event": "E", "messageId": "m"}], "queue_full") == 0


def test_an_sqlite_store_from_the_previous_release_is_upgraded_with_its_counters(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    path.touch(mode=0o600)  # 0.1.0 created its store private
    old = sqlite3.connect(path)
    old.executescript(SCHEMA_V1)
    old.execute(
        "INSERT INTO dead_letters (workspace_id, message_id, type, message, reason, detail, status, attempts, "
        "first_failed_at, last_failed_at, write_key_fingerprint, endpoint) VALUES ('ws', 'm-1', 'track', "
        "'{\"messageId\":\"m-1\",\"type\":\"track\"}', 'queue_full', '', NULL, 1, '2026-01-01T00:00:00.000000Z', "
        "'2026-01-01T00:00:00.000000Z', '', '')"
    )
    old.execute("INSERT INTO counters VALUES ('ws', 'queued', 7, '2026-01-01T00:00:00.000000Z')")
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()

    store = DeadLetterStore(path, counters=Counters())

    assert [row.message_id for row in store.list()] == ["m-1"]
    assert store.persisted_counters() == {"ws": {"queued": 7}}
    assert list(store.counters_by_replica()) == ["(not recorded)"]
    store.mark_in_doubt([store.list()[0].id])
    assert store.count(state="in_doubt") == 1
    version = store._read("PRAGMA user_version")[0][0]
    assert version == SQLITE_MIGRATIONS[-1].version
    store.close()
