"""The dead-letter store: private on disk, one row per event, filters, retention that is never silent,
no write key ever written, and no exception ever raised into the delivery thread."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from quickbot_segment_plugin.core.undeliverable import Undeliverable
from support import WORKSPACE, WRITE_KEY

from quickbot_segment_plugin.core.counters import Counters
from quickbot_segment_plugin.core.errors import ConfigurationError
from quickbot_segment_plugin.core.redaction import fingerprint, redact
from quickbot_segment_plugin.credentials.keyring import KeyRing, generate_key, parse_encryption_keys
from quickbot_segment_plugin.deadletters import DeadLetterRecorder, DeadLetterStore, default_path

FINGERPRINT = fingerprint(WRITE_KEY)
ENDPOINT = "https://api.segment.io"


class Clock:
    """The store's notion of now, moved by the test (retention is about days)."""

    def __init__(self) -> None:
        self.now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def track(message_id: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": "user-1",
        "messageId": message_id,
        "timestamp": "2024-05-01T12:00:00.000+00:00",
        "properties": properties,
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
    }


def add(
    store: DeadLetterStore,
    *message_ids: str,
    workspace: str = WORKSPACE,
    reason: str = "retries_exhausted",
    token: str | None = "qbseg.v1.k.sealed",
) -> int:
    return store.add(
        workspace,
        [track(message_id) for message_id in message_ids],
        reason,
        "HTTP 500",
        500,
        token,
        FINGERPRINT,
        ENDPOINT,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def counters() -> Counters:
    return Counters()


@pytest.fixture
def store(tmp_path: Path, clock: Clock, counters: Counters) -> DeadLetterStore:
    return DeadLetterStore(tmp_path / "dl.sqlite3", clock=clock, counters=counters)


# --- where it lives and who can read it ------------------------------------------------------------


def test_file_and_its_wal_side_files_are_private_and_new_directories_are_0700(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual umask, which would leave files world-readable
    try:
        path = tmp_path / "state" / "quickbot-segment" / "dead-letters.sqlite3"
        store = DeadLetterStore(path)
        assert add(store, "m-1") == 1
        assert store.count() == 1  # the WAL holds the write until a checkpoint
    finally:
        os.umask(old_umask)
    assert mode(path) == 0o600
    assert mode(Path(f"{path}-wal")) == 0o600
    assert mode(Path(f"{path}-shm")) == 0o600
    assert mode(path.parent) == 0o700
    assert mode(path.parent.parent) == 0o700  # made by the store too
    db_mode = store._connection(create=False).execute("PRAGMA journal_mode").fetchone()[0]  # type: ignore[union-attr]
    assert db_mode == "wal"


def test_an_existing_world_readable_store_is_made_private(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "dl.sqlite3"
    path.touch()
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="quickbot_segment_plugin.deadletters"):
        add(DeadLetterStore(path), "m-1")
    assert mode(path) == 0o600
    assert "readable by other users" in caplog.text


def test_default_path_follows_the_variable_then_xdg_then_home(tmp_path: Path) -> None:
    assert default_path({"QUICKBOT_SEGMENT_DEAD_LETTER_PATH": str(tmp_path / "x.db")}) == tmp_path / "x.db"
    assert default_path({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "quickbot-segment" / "dead-letters.sqlite3"
    assert default_path({}) == Path.home() / ".local" / "state" / "quickbot-segment" / "dead-letters.sqlite3"


def test_settings_come_from_the_environment_and_bad_values_name_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUICKBOT_SEGMENT_DEAD_LETTER_PATH", str(tmp_path / "env.db"))
    monkeypatch.setenv("QUICKBOT_SEGMENT_DEAD_LETTER_RETENTION_DAYS", "7")
    monkeypatch.setenv("QUICKBOT_SEGMENT_DEAD_LETTER_MAX_ROWS", "5_000")
    store = DeadLetterStore()
    assert (store.path, store.retention_days, store.max_rows) == (tmp_path / "env.db", 7, 5000)
    monkeypatch.setenv("QUICKBOT_SEGMENT_DEAD_LETTER_MAX_ROWS", "lots")
    with pytest.raises(ConfigurationError, match="QUICKBOT_SEGMENT_DEAD_LETTER_MAX_ROWS"):
        DeadLetterStore()


def test_reading_a_store_that_does_not_exist_finds_nothing_and_creates_nothing(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path / "missing" / "dl.sqlite3")
    assert store.list() == []
    assert store.count() == 0
    assert store.counts_by_reason() == {}
    assert store.summary() == []
    assert store.purge(workspace_id="ws") == 0
    assert not (tmp_path / "missing").exists()


# --- rows -------------------------------------------------------------------------------------------


def test_a_row_keeps_the_whole_message_its_id_and_why_it_failed(store: DeadLetterStore, clock: Clock) -> None:
    message = track("m-1", total=42.5, items=["a", "b"], nested={"deep": [1, None, True]})
    assert (
        store.add(WORKSPACE, [message], "rejected", "HTTP 400: bad", 400, "qbseg.v1.k.tok", FINGERPRINT, ENDPOINT) == 1
    )

    [row] = store.list()
    assert row.message == message
    assert row.message_id == "m-1"
    assert (row.workspace_id, row.reason, row.detail, row.status, row.attempts) == (
        WORKSPACE,
        "rejected",
        "HTTP 400: bad",
        400,
        1,
    )
    assert row.first_failed_at == row.last_failed_at == clock.now
    assert row.credentials_token == "qbseg.v1.k.tok"
    assert (row.write_key_fingerprint, row.endpoint) == (FINGERPRINT, ENDPOINT)
    assert row.replayable and row.type == "track" and row.replayed_at is None
    assert "qbseg.v1.k.tok" not in repr(row)
    assert "credentials_token" not in row.as_dict()
    assert row.as_dict()["has_credentials"] is True


def test_the_same_message_id_twice_is_one_row_with_two_attempts(store: DeadLetterStore, clock: Clock) -> None:
    add(store, "m-1", reason="queue_full")
    first = store.list()[0].first_failed_at
    clock.advance(minutes=5)
    add(store, "m-1", reason="retries_exhausted", token=None)

    [row] = store.list()
    assert row.attempts == 2
    assert row.reason == "retries_exhausted"
    assert row.first_failed_at == first
    assert row.last_failed_at == clock.now
    assert row.credentials_token == "qbseg.v1.k.sealed"  # an unknown token does not erase a known one


def test_the_same_message_id_in_two_workspaces_is_two_rows(store: DeadLetterStore) -> None:
    add(store, "m-1", workspace="ws-a")
    add(store, "m-1", workspace="ws-b")
    assert store.count() == 2


def test_a_message_without_an_id_gets_one_that_is_stored_in_the_message(store: DeadLetterStore) -> None:
    message = track("x")
    del message["messageId"]
    store.add(WORKSPACE, [message], "queue_full")
    [row] = store.list()
    assert row.message_id and row.message["messageId"] == row.message_id


def test_filters_select_by_workspace_reason_age_state_and_id(store: DeadLetterStore, clock: Clock) -> None:
    add(store, "old-a", workspace="ws-a", reason="queue_full")
    clock.advance(hours=3)
    add(store, "new-a", workspace="ws-a", reason="rejected")
    add(store, "new-b", workspace="ws-b", reason="queue_full")

    def ids(**filters: Any) -> list[str]:
        return [row.message_id for row in store.list(**filters)]

    assert ids() == ["old-a", "new-a", "new-b"]
    assert ids(workspace_id="ws-a") == ["old-a", "new-a"]
    assert ids(reason="queue_full") == ["old-a", "new-b"]
    assert ids(older_than=timedelta(hours=2)) == ["old-a"]
    assert ids(newer_than=timedelta(hours=2)) == ["new-a", "new-b"]
    assert ids(older_than=clock.now - timedelta(hours=1), workspace_id="ws-b") == []
    assert ids(limit=1, offset=1) == ["new-a"]
    assert store.count(workspace_id="ws-a") == 2
    assert store.counts_by_reason() == {"queue_full": 2, "rejected": 1}
    assert store.counts_by_reason("ws-b") == {"queue_full": 1}

    first = store.list()[0].id
    store.mark_replayed([first])
    assert ids() == ["new-a", "new-b"]
    assert ids(state="replayed") == ["old-a"]
    assert ids(state="all") == ["old-a", "new-a", "new-b"]
    assert ids(ids=[first], state="all") == ["old-a"]
    assert store.get(first) is not None and store.get(first).replayed_at == clock.now  # type: ignore[union-attr]


def test_purge_removes_only_what_matches_and_tallies_undelivered_rows(store: DeadLetterStore, clock: Clock) -> None:
    add(store, "a1", "a2", workspace="ws-a")
    add(store, "b1", workspace="ws-b")
    store.mark_replayed([row.id for row in store.list(workspace_id="ws-b")])

    assert store.purge(workspace_id="ws-a") == 2
    assert store.count(state="all") == 1
    assert store.purge(state="replayed") == 1
    assert store.count(state="all") == 0
    assert store.tallies() == {"ws-a": {"purged": 2}, "ws-b": {"replayed": 1}}


def test_a_failed_replay_keeps_the_row_with_one_more_attempt(store: DeadLetterStore, clock: Clock) -> None:
    add(store, "m-1")
    [row] = store.list()
    store.mark_replayed([row.id])
    clock.advance(minutes=1)
    assert store.record_failed_replay([row.id], "retries_exhausted", "HTTP 503", 503) == 1
    [again] = store.list()
    assert (again.attempts, again.reason, again.status, again.replayed_at) == (2, "retries_exhausted", 503, None)
    assert again.last_failed_at == clock.now


def test_replay_marks_what_was_sent_and_keeps_what_failed(store: DeadLetterStore, counters: Counters) -> None:
    add(store, "ok-1", "bad", "ok-2", "boom")

    def send(letter: Any) -> bool:
        if letter.message_id == "boom":
            raise ConnectionError("no route")
        return letter.message_id.startswith("ok")

    report = store.replay(send)
    assert (report.attempted, report.replayed, report.failed) == (4, 2, 2)
    assert [row.message_id for row in store.list()] == ["bad", "boom"]
    assert all(row.attempts == 2 and row.reason == "replay_failed" for row in store.list())
    assert "ConnectionError: no route" in store.list()[1].detail
    assert any("boom" in problem for problem in report.problems)
    assert store.count(state="replayed") == 2
    assert counters.get(WORKSPACE, "replayed") == 2
    assert store.replay(send, workspace_id="nobody").attempted == 0


# --- retention ---------------------------------------------------------------------------------------


def test_rows_past_the_retention_age_are_pruned_logged_counted_and_tallied(
    tmp_path: Path, clock: Clock, counters: Counters, caplog: pytest.LogCaptureFixture
) -> None:
    store = DeadLetterStore(
        tmp_path / "dl.sqlite3", retention_days=30, clock=clock, counters=counters, prune_interval=3600
    )
    add(store, "old-1", "old-2")
    clock.advance(days=20)
    add(store, "younger")
    clock.advance(days=11)  # old-* are now 31 days old, "younger" 11
    with caplog.at_level(logging.WARNING, logger="quickbot_segment_plugin.deadletters"):
        report = store.prune()

    assert report.expired == 2 and report.lost_by_workspace == {WORKSPACE: 2}
    assert [row.message_id for row in store.list()] == ["younger"]
    assert "pruned 2 undelivered dead letter(s)" in caplog.text
    assert counters.get(WORKSPACE, "dead_letters_pruned") == 2
    assert store.tallies() == {WORKSPACE: {"pruned_expired": 2}}


def test_beyond_the_row_limit_the_oldest_go_replayed_ones_first(tmp_path: Path, clock: Clock) -> None:
    store = DeadLetterStore(tmp_path / "dl.sqlite3", max_rows=3, clock=clock, prune_interval=3600)
    for n in range(5):
        add(store, f"m-{n}")
        clock.advance(seconds=1)
    replayed = store.list(limit=10)[3].id  # m-3: newer than m-0..m-2, but already delivered
    store.mark_replayed([replayed])

    report = store.prune()
    assert (report.over_limit, report.replayed_removed) == (1, 1)
    assert [row.message_id for row in store.list(state="all")] == ["m-1", "m-2", "m-4"]
    assert store.tallies()[WORKSPACE] == {"pruned_over_limit": 1, "replayed": 1}


def test_pruning_runs_by_itself_but_not_on_every_add(tmp_path: Path, clock: Clock) -> None:
    store = DeadLetterStore(tmp_path / "dl.sqlite3", max_rows=5, prune_every=10, prune_interval=3600, clock=clock)
    add(store, "first")  # the first add of a process prunes (a store left alone for weeks)
    for n in range(9):
        add(store, f"m-{n}")
    assert store.count() == 10  # over the limit, but the next prune is due only after 10 events
    add(store, "last")
    assert [row.message_id for row in store.list()] == ["m-5", "m-6", "m-7", "m-8", "last"]


def test_pruning_also_runs_after_the_prune_interval(tmp_path: Path, clock: Clock) -> None:
    store = DeadLetterStore(
        tmp_path / "dl.sqlite3", retention_days=1, prune_every=1000, prune_interval=0.0, clock=clock
    )
    add(store, "old")
    clock.advance(days=2)
    add(store, "new")
    assert [row.message_id for row in store.list()] == ["new"]


# --- never a write key ------------------------------------------------------------------------------


def store_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


def test_a_write_key_never_reaches_the_file_wherever_it_is_hidden(tmp_path: Path) -> None:
    ring = KeyRing(parse_encryption_keys(generate_key()))
    token = ring.seal({"writeKey": WRITE_KEY, "region": "us"}, WORKSPACE)  # the process now knows the key
    path = tmp_path / "dl.sqlite3"
    store = DeadLetterStore(path)
    leaky = track(
        "m-1",
        note=f"pasted {WRITE_KEY} by mistake",
        writeKey="not-a-known-key-but-still-a-key-field",
        header=f"Basic {'QUJDREVGR0hJSktMTU5PUA=='}",
    )
    leaky["context"]["writeKey"] = WRITE_KEY
    leaky["properties"][WRITE_KEY] = "a key as a property name"
    assert (
        store.add(
            WORKSPACE,
            [leaky],
            "rejected",
            f'HTTP 400 for {{"writeKey": "{WRITE_KEY}"}}',
            400,
            WRITE_KEY,  # a raw key where the sealed token belongs
            WRITE_KEY,  # and where the fingerprint belongs
            f"https://{WRITE_KEY}:x@proxy.example/segment?key={WRITE_KEY}",
        )
        == 1
    )
    store.add(WORKSPACE, [track("m-2")], "queue_full", "", None, token, FINGERPRINT, ENDPOINT)

    raw = store_bytes(path)
    assert WRITE_KEY.encode() not in raw
    assert b"not-a-known-key-but-still-a-key-field" not in raw
    assert b"QUJDREVGR0hJSktMTU5PUA==" not in raw
    assert token.encode() in raw  # the sealed token is what makes a replay possible
    [first, _] = store.list()
    assert first.credentials_token is None and not first.replayable
    assert first.write_key_fingerprint == FINGERPRINT
    assert first.endpoint == "https://proxy.example/segment"
    assert first.message["properties"]["note"].startswith("pasted [sha256:")
    assert first.message["messageId"] == "m-1"


def looks_like_a_secret(value: Any) -> bool:
    if isinstance(value, str):
        return redact(value) != value
    if isinstance(value, dict):
        return any(
            re.fullmatch("write_?key", key, re.IGNORECASE) or looks_like_a_secret(key) or looks_like_a_secret(item)
            for key, item in value.items()
        )
    if isinstance(value, list):
        return any(looks_like_a_secret(item) for item in value)
    return False


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    properties=st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
            max_leaves=12,
        ),
        max_size=6,
    ),
    message_id=st.text(min_size=1, max_size=40),
)
def test_any_json_message_comes_back_exactly_as_it_was_stored(
    tmp_path_factory: pytest.TempPathFactory, properties: dict[str, Any], message_id: str
) -> None:
    message = track(message_id, **{"props": properties})
    assume(not looks_like_a_secret(message))  # those are blanked on purpose (see the leak test)
    store = DeadLetterStore(tmp_path_factory.mktemp("dl") / "dl.sqlite3")
    assert store.add(WORKSPACE, [message], "queue_full") == 1
    [row] = store.list()
    assert row.message_id == message_id
    assert row.message == json.loads(json.dumps(message))
    store.close()


# --- never raises into the delivery thread ------------------------------------------------------------


def test_a_store_that_cannot_be_written_loses_events_loudly_once_and_counts_them(
    tmp_path: Path, counters: Counters, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the store's directory should be")
    store = DeadLetterStore(blocked / "dl.sqlite3", counters=counters)
    with caplog.at_level(logging.ERROR, logger="quickbot_segment_plugin.deadletters"):
        assert add(store, "m-1", "m-2") == 0
        assert add(store, "m-3") == 0
        assert (
            store.add_undeliverable(
                Undeliverable(WORKSPACE, FINGERPRINT, ENDPOINT, [track("m-4")], "shutdown_deadline", "deadline")
            )
            == 0
        )

    errors = [record for record in caplog.records if record.name == "quickbot_segment_plugin.deadletters"]
    assert len(errors) == 1  # one line for the episode, not one per event
    assert errors[0].levelno == logging.ERROR
    assert errors[0].count == 2 and errors[0].reason == "retries_exhausted"  # type: ignore[attr-defined]
    assert counters.get(WORKSPACE, "dead_letter_write_failed") == 4


def test_writing_works_again_after_the_disk_comes_back_and_says_how_much_was_lost(
    tmp_path: Path, counters: Counters, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "later"
    blocked.write_text("not yet a directory")
    store = DeadLetterStore(blocked / "dl.sqlite3", counters=counters)
    assert add(store, "lost") == 0
    blocked.unlink()
    with caplog.at_level(logging.WARNING, logger="quickbot_segment_plugin.deadletters"):
        assert add(store, "kept") == 1
    assert "writable again; 1 event(s) were lost" in caplog.text
    assert [row.message_id for row in store.list()] == ["kept"]


def test_garbage_from_a_buggy_caller_is_stored_or_counted_never_raised(
    store: DeadLetterStore, counters: Counters
) -> None:
    weird: list[Any] = ["not a dict", {"messageId": 7, "type": None, "when": datetime(2024, 1, 1, tzinfo=UTC)}]
    assert store.add(WORKSPACE, weird, "queue_full", None, "500", None, None, None) == 2  # type: ignore[arg-type]
    assert store.add(WORKSPACE, None, "queue_full") == 0  # type: ignore[arg-type]
    assert {row.message_id for row in store.list()} >= {"7"}


# --- the pool's callback -----------------------------------------------------------------------------


def test_the_recorder_stores_what_the_pool_reports_with_the_token_the_block_remembered(store: DeadLetterStore) -> None:
    recorder = DeadLetterRecorder(store, max_tokens=2)
    recorder.remember_token(WORKSPACE, FINGERPRINT, "qbseg.v1.k.ws-token")
    recorder(
        Undeliverable(
            WORKSPACE, FINGERPRINT, ENDPOINT, [track("m-1"), track("m-2")], "retries_exhausted", "HTTP 503", 503
        )
    )
    recorder(Undeliverable("ws-unknown", FINGERPRINT, ENDPOINT, [track("m-3")], "queue_full", "full"))

    rows = {row.message_id: row for row in store.list()}
    assert rows["m-1"].credentials_token == rows["m-2"].credentials_token == "qbseg.v1.k.ws-token"
    assert rows["m-1"].status == 503
    assert rows["m-3"].credentials_token is None

    recorder.remember_token("ws-2", FINGERPRINT, "qbseg.v1.k.two")
    recorder.remember_token("ws-3", FINGERPRINT, "qbseg.v1.k.three")  # bounded: the oldest is forgotten
    assert recorder.token_for(WORKSPACE, FINGERPRINT) is None
    assert recorder.token_for("ws-3", FINGERPRINT) == "qbseg.v1.k.three"
