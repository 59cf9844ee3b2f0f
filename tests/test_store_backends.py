"""The dead-letter store behaves the same on SQLite (embedded) and PostgreSQL (shared): every
test here runs once per backend (PostgreSQL when QUICKBOT_TEST_POSTGRES_URL is set; in CI always)."""

from __future__ import annotations

import gc
import multiprocessing
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from quickbot_segment_plugin.core.counters import Counters
from quickbot_segment_plugin.deadletters import DeadLetterStore
from quickbot_segment_plugin.deadletters.backend import BackendKind
from quickbot_segment_plugin.deadletters.replay_lock import ReplayInProgress, replay_lock


def track(message_id: str, user: str = "user-1", **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Order Completed", "userId": user, "messageId": message_id, **extra}


@pytest.fixture
def store(store_location: str) -> Iterator[DeadLetterStore]:
    opened = DeadLetterStore(store_location, counters=Counters())
    yield opened
    opened.close()


def test_the_location_picks_the_backend(store: DeadLetterStore, store_location: str) -> None:
    expected = BackendKind.POSTGRESQL if store_location.startswith("postgresql://") else BackendKind.SQLITE
    assert store.backend.kind is expected


def test_one_row_per_message_id_and_attempts_grow(store: DeadLetterStore) -> None:
    assert store.add("ws", [track("m-1"), track("m-2")], "queue_full") == 2
    assert store.add("ws", [track("m-1")], "retries_exhausted", detail="HTTP 500", status=500) == 1

    rows = {row.message_id: row for row in store.list()}
    assert set(rows) == {"m-1", "m-2"}
    assert (rows["m-1"].attempts, rows["m-1"].reason, rows["m-1"].status) == (2, "retries_exhausted", 500)
    assert rows["m-1"].message["event"] == "Order Completed"
    assert store.count() == 2
    assert store.counts_by_reason() == {"queue_full": 1, "retries_exhausted": 1}


def test_text_postgresql_cannot_hold_is_kept_not_lost(store: DeadLetterStore) -> None:
    # A NUL in a messageId is legal JSON and legal SQLite text; PostgreSQL text refuses it.
    assert store.add("ws", [track("m\x00nul")], "queue_full", detail="bad\x00detail") == 1
    assert store.count() == 1


def test_filters_states_and_summary(store: DeadLetterStore) -> None:
    store.add("ws-a", [track("a-1"), track("a-2"), track("a-3")], "queue_full")
    store.add("ws-b", [track("b-1")], "rejected", status=400)
    ids = {row.message_id: row.id for row in store.list(state="all")}
    store.mark_replayed([ids["a-1"]])
    store.mark_in_doubt([ids["a-2"]])

    assert [row.message_id for row in store.list(workspace_id="ws-a")] == ["a-3"]
    assert [row.message_id for row in store.list(state="in_doubt")] == ["a-2"]
    assert [row.message_id for row in store.list(state="replayed")] == ["a-1"]
    assert store.count(state="all") == 4
    assert store.count(reason="rejected") == 1
    assert {(e["workspace_id"], e["pending"], e["in_doubt"], e["replayed"]) for e in store.summary()} == {
        ("ws-a", 1, 1, 1),
        ("ws-b", 1, 0, 0),
    }
    assert store.count(ids=[]) == 0


def test_purge_and_tallies(store: DeadLetterStore) -> None:
    store.add("ws", [track("m-1"), track("m-2")], "queue_full")
    store.mark_replayed([store.list()[0].id])

    assert store.purge(state="all") == 2
    assert store.count(state="all") == 0
    assert store.tallies() == {"ws": {"purged": 1, "replayed": 1}}


def test_retention_prunes_old_rows_and_tallies_the_loss(store_location: str) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = DeadLetterStore(store_location, counters=Counters(), retention_days=1, clock=lambda: now[0])
    store.add("ws", [track("old")], "queue_full")
    now[0] += timedelta(days=2)
    store.add("ws", [track("new")], "queue_full")

    report = store.prune()

    assert (report.expired, [row.message_id for row in store.list()]) == (1, ["new"])
    assert store.tallies() == {"ws": {"pruned_expired": 1}}
    store.close()


def test_forget_erases_one_user_including_an_alias_previous_id(store: DeadLetterStore) -> None:
    store.add(
        "ws",
        [
            track("m-1", user="42"),
            {"type": "alias", "userId": "new", "previousId": 42, "messageId": "m-2"},
            track("m-3", user="someone-else"),
            {"type": "page", "anonymousId": "anon-7", "messageId": "m-4"},
        ],
        "queue_full",
    )

    removed = store.forget("ws", user_id="42", anonymous_id="anon-7")

    assert sorted(row["message_id"] for row in removed) == ["m-1", "m-2", "m-4"]
    assert [row.message_id for row in store.list()] == ["m-3"]
    assert store.tallies() == {"ws": {"purged": 3}}


def test_counters_are_kept_per_replica_and_summed(store_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DeadLetterStore(store_location, counters=Counters())
    monkeypatch.setenv("QUICKBOT_SEGMENT_REPLICA_ID", "pod-a")
    assert store.record_counters({("ws", "queued"): 5, ("ws", "delivered"): 4})
    monkeypatch.setenv("QUICKBOT_SEGMENT_REPLICA_ID", "pod-b")
    assert store.record_counters({("ws", "queued"): 2})
    assert store.record_counters({("ws", "queued"): 1})

    assert store.persisted_counters() == {"ws": {"delivered": 4, "queued": 8}}
    by_replica = store.counters_by_replica()
    assert {replica: entry["counters"] for replica, entry in by_replica.items()} == {
        "pod-a": {"delivered": 4, "queued": 5},
        "pod-b": {"queued": 3},
    }
    assert all(entry["last_flush"] for entry in by_replica.values())
    store.close()


def test_a_second_replay_is_refused_while_the_first_holds_the_lock(store_location: str) -> None:
    first = DeadLetterStore(store_location, counters=Counters())
    second = DeadLetterStore(store_location, counters=Counters())
    first.add("ws", [track("m-1")], "queue_full")

    with replay_lock(first, "replica-1"):
        with pytest.raises(ReplayInProgress, match=r"another replay of .* is running by replica-1"):
            second.replay(lambda letter: True)
        assert second.count() == 1  # nothing was sent or marked
    report = second.replay(lambda letter: True)  # released: the next one runs

    assert (report.replayed, second.count(state="replayed")) == (1, 1)
    first.close()
    second.close()


def test_concurrent_replays_from_many_threads_send_each_row_once(store_location: str) -> None:
    seed = DeadLetterStore(store_location, counters=Counters())
    seed.add("ws", [track(f"m-{n}") for n in range(20)], "queue_full")
    sent: list[str] = []
    refused: list[str] = []
    start = threading.Barrier(4)

    def replayer() -> None:
        store = DeadLetterStore(store_location, counters=Counters())
        start.wait()
        try:
            store.replay(lambda letter: bool(sent.append(letter.message_id)) or True)
        except ReplayInProgress as error:
            refused.append(str(error))
        finally:
            store.close()

    threads = [threading.Thread(target=replayer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(sent) == sorted(f"m-{n}" for n in range(20))  # each row once, whoever won
    assert all("another replay" in text for text in refused)
    assert seed.count(state="replayed") == 20
    seed.close()


def test_confirm_settles_in_doubt_rows(store: DeadLetterStore) -> None:
    store.add("ws", [track("m-1"), track("m-2")], "queue_full")
    ids = [row.id for row in store.list()]
    store.mark_in_doubt(ids)
    assert store.count() == 0  # in doubt is not pending: a replay leaves them alone

    assert store.confirm([ids[0]], delivered=True) == 1
    assert store.confirm([ids[1]], delivered=False) == 1

    assert [row.message_id for row in store.list(state="replayed")] == ["m-1"]
    assert [row.message_id for row in store.list()] == ["m-2"]


def test_a_forked_child_leaves_the_parents_connection_working(store: DeadLetterStore) -> None:
    """gunicorn --preload, celery prefork: the child opens its own connection and, when it exits,
    does not end the parent's (PostgreSQL would drop a session its child said goodbye on)."""
    store.add("ws", [track("parent-1")], "queue_full")
    context = multiprocessing.get_context("fork")
    child = context.Process(target=_add_in_child, args=(store,))
    child.start()
    child.join(60)

    assert child.exitcode == 0
    assert store.add("ws", [track("parent-2")], "queue_full") == 1  # the parent's connection still works
    assert sorted(row.message_id for row in store.list()) == ["child-1", "parent-1", "parent-2"]


def _add_in_child(store: DeadLetterStore) -> None:
    if store.add("ws", [track("child-1")], "queue_full") != 1:
        raise SystemExit(3)
    # What interpreter exit does (multiprocessing's children skip it, a gunicorn worker does not):
    # the inherited connection objects are freed. psycopg does not close a connection another
    # process opened, so the parent's session survives.
    from quickbot_segment_plugin.deadletters import base as module

    module._INHERITED_CONNECTIONS.clear()
    gc.collect()
