"""`dead-letters replay` sends a row once: one replay at a time per store (across processes),
rows whose outcome is unknown at the deadline are kept in doubt and not resent silently, and
replaying rows older than Segment's deduplication window warns. Against the embedded collector
over real HTTP, once per backend (SQLite file, PostgreSQL database)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import WORKSPACE, WRITE_KEY

from quickbot_segment_plugin.cli import main
from quickbot_segment_plugin.collector.service import Collector, Fault
from quickbot_segment_plugin.core.counters import Counters
from quickbot_segment_plugin.core.redaction import fingerprint
from quickbot_segment_plugin.credentials.keyring import KeyRing
from quickbot_segment_plugin.deadletters import DeadLetterStore

EVENTS = 5


@pytest.fixture
def segment(local_segment: Collector, monkeypatch: pytest.MonkeyPatch) -> Collector:
    monkeypatch.setenv("QUICKBOT_SEGMENT_MAX_RETRIES", "0")
    return local_segment


@pytest.fixture
def store(segment: Collector, store_location: str) -> Iterator[DeadLetterStore]:
    opened = DeadLetterStore(store_location, counters=Counters())
    yield opened
    opened.close()


def fill(store: DeadLetterStore, segment: Collector, count: int = EVENTS, prefix: str = "order") -> None:
    token = KeyRing.from_env().seal({"writeKey": WRITE_KEY, "region": "us"}, WORKSPACE)
    messages = [
        {"type": "track", "event": "Order Completed", "userId": f"user-{n}", "messageId": f"{prefix}-{n}"}
        for n in range(count)
    ]
    store.add(
        WORKSPACE,
        messages,
        "retries_exhausted",
        credentials_token=token,
        write_key_fingerprint=fingerprint(WRITE_KEY),
        endpoint=segment.url,
    )


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def received(segment: Collector) -> list[str]:
    return sorted(str(message["messageId"]) for message in segment.messages())


def wait_for(condition: object, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_a_second_replay_process_refuses_while_the_first_runs(
    segment: Collector, store: DeadLetterStore, store_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(store, segment)
    # The first replay's batch hangs 3 s and is dropped, then its retry goes through: it holds the lock a while.
    segment.inject_faults([Fault(delay=3.0, drop=True, repeat=1)])
    first = subprocess.Popen(
        [sys.executable, "-m", "quickbot_segment_plugin.cli", "dead-letters", "replay", "--db", store_location],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "QUICKBOT_SEGMENT_MAX_RETRIES": "1"},
    )
    try:
        wait_for(lambda: store._read("SELECT holder FROM leases"))  # the first holds the lock

        status, output = run(capsys, "dead-letters", "replay", "--db", store_location)

        assert status == 1
        assert "another replay of" in output and "is running" in output
        assert "Replayed" not in output
        first_output, _ = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 0, first_output
    assert f"Replayed {EVENTS} of {EVENTS}" in first_output
    assert received(segment) == [f"order-{n}" for n in range(EVENTS)]  # each once: the refused one sent nothing
    assert store.count(state="replayed") == EVENTS
    assert store._read("SELECT holder FROM leases") == []  # released


def test_rows_in_flight_at_the_deadline_are_kept_in_doubt_and_not_resent(
    segment: Collector, store: DeadLetterStore, store_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(store, segment)
    segment.inject_faults([Fault(delay=3.0, drop=True, repeat=1)])  # no answer before the replay gives up

    status, output = run(capsys, "dead-letters", "replay", "--db", store_location, "--timeout", "1")

    assert status == 1, output
    assert f"Replayed 0 of {EVENTS} dead letter(s): 0 failed again (kept, attempts + 1), {EVENTS} in doubt" in output
    assert "failed again: " not in output
    assert "--include-in-doubt" in output
    assert store.count(state="in_doubt") == EVENTS
    assert {row.attempts for row in store.list(state="in_doubt")} == {1}  # not counted as a failure

    status, output = run(capsys, "dead-letters", "replay", "--db", store_location)

    assert (status, output.strip().splitlines()[-1]) == (
        0,
        "Replayed 0 of 0 dead letter(s): 0 failed again (kept, attempts + 1), 0 in doubt (kept, not resent), 0 skipped (kept as they were).",
    )
    time.sleep(0.3)
    assert received(segment) == []  # nothing resent silently

    status, output = run(capsys, "dead-letters", "list", "--db", store_location, "--state", "in_doubt")
    assert status == 0 and output.count("in doubt") == EVENTS

    status, output = run(capsys, "dead-letters", "replay", "--db", store_location, "--include-in-doubt")

    assert status == 0, output
    assert f"Replayed {EVENTS} of {EVENTS}" in output
    assert received(segment) == [f"order-{n}" for n in range(EVENTS)]  # the same messageIds
    assert store.count(state="replayed") == EVENTS


def test_an_operator_confirms_in_doubt_rows(
    segment: Collector, store: DeadLetterStore, store_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(store, segment, count=2)
    ids = [row.id for row in store.list()]
    store.mark_in_doubt(ids)  # what a killed replay leaves behind

    status, output = run(capsys, "dead-letters", "confirm", "--db", store_location, "--id", str(ids[0]), "--delivered")
    assert (status, "Marked 1 in-doubt dead letter(s) replayed" in output) == (0, True)
    status, output = run(capsys, "dead-letters", "confirm", "--db", store_location, "--not-delivered")
    assert (status, "Made 1 in-doubt dead letter(s) pending again" in output) == (0, True)

    status, output = run(capsys, "dead-letters", "replay", "--db", store_location)

    assert status == 0, output
    assert received(segment) == ["order-1"]


def test_replaying_rows_older_than_the_deduplication_window_warns(
    segment: Collector, store_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=30)
    old = DeadLetterStore(store_location, counters=Counters(), clock=lambda: long_ago)
    fill(old, segment, count=2, prefix="old")
    old.close()
    recent = DeadLetterStore(store_location, counters=Counters())
    fill(recent, segment, count=1, prefix="new")
    recent.close()

    status, output = run(capsys, "dead-letters", "replay", "--db", store_location)

    assert status == 0, output
    assert "warning: 2 replayed row(s) first failed more than 24 hours ago" in output
    assert "counted twice" in output
    assert received(segment) == ["new-0", "old-0", "old-1"]


def test_recent_rows_replay_without_a_warning(
    segment: Collector, store: DeadLetterStore, store_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(store, segment, count=2)

    status, output = run(capsys, "dead-letters", "replay", "--db", store_location)

    assert status == 0 and "warning" not in output


def test_replaying_a_store_that_does_not_exist_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo.sqlite3"

    status, output = run(capsys, "dead-letters", "replay", "--db", str(missing))

    assert (status, "Replayed 0 of 0" in output) == (0, True)
    assert not missing.exists()
