"""End to end: events a failing Segment refused land in the dead-letter store through the real
delivery pool, and `quickbot-segment dead-letters replay` sends them again, with the same
messageIds, to the embedded collector over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import WORKSPACE, WRITE_KEY

from quickbot_segment_plugin.cli import main
from quickbot_segment_plugin.collector.service import Collector, Fault
from quickbot_segment_plugin.core.redaction import fingerprint
from quickbot_segment_plugin.credentials.keyring import KeyRing
from quickbot_segment_plugin.deadletters import DeadLetterRecorder, DeadLetterStore
from quickbot_segment_plugin.delivery.pool import DeliveryPool, DeliverySettings

EVENTS = 6


@pytest.fixture
def segment(local_segment: Collector, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Collector:
    """The collector as Segment, one attempt per batch (no backoff), a private dead-letter file."""
    monkeypatch.setenv("QUICKBOT_SEGMENT_MAX_RETRIES", "0")
    monkeypatch.setenv("QUICKBOT_SEGMENT_DEAD_LETTER_PATH", str(tmp_path / "dead-letters.sqlite3"))
    return local_segment


@pytest.fixture
def ring(segment: Collector) -> KeyRing:
    return KeyRing.from_env()


@pytest.fixture
def token(ring: KeyRing) -> str:
    return ring.seal({"writeKey": WRITE_KEY, "region": "us"}, WORKSPACE)


@pytest.fixture
def store(segment: Collector) -> Iterator[DeadLetterStore]:
    opened = DeadLetterStore()
    yield opened
    opened.close()


def wire_message(n: int) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": f"user-{n}",
        "messageId": f"order-{n}",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "properties": {"total": n * 10, "currency": "EUR"},
    }


def dead_letter_through_the_pool(
    store: DeadLetterStore, token: str | None, endpoint: str, *, count: int = EVENTS, first: int = 0
) -> None:
    """What production does: the pool fails to deliver and reports to the recorder, which stores."""
    recorder = DeadLetterRecorder(store)
    if token is not None:
        recorder.remember_token(WORKSPACE, fingerprint(WRITE_KEY), token)
    pool = DeliveryPool(DeliverySettings.from_env(), on_undeliverable=recorder)
    for n in range(first, first + count):
        assert pool.enqueue(WORKSPACE, WRITE_KEY, endpoint, wire_message(n)).accepted
    pool.shutdown(10)


def failing(segment: Collector, requests: int = 50) -> None:
    segment.inject_faults([Fault(status=500, repeat=requests)])


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def delivered_ids(segment: Collector) -> list[str]:
    return sorted(str(message["messageId"]) for message in segment.messages())


def test_events_segment_refused_are_stored_with_their_token_and_reason(
    segment: Collector, store: DeadLetterStore, token: str
) -> None:
    failing(segment)
    dead_letter_through_the_pool(store, token, segment.url)

    rows = store.list()
    assert sorted(row.message_id for row in rows) == [f"order-{n}" for n in range(EVENTS)]
    assert {(row.reason, row.status, row.attempts) for row in rows} == {("retries_exhausted", 500, 1)}
    assert {row.credentials_token for row in rows} == {token}
    assert {row.write_key_fingerprint for row in rows} == {fingerprint(WRITE_KEY)}
    assert rows[0].message["properties"] == {"total": 0, "currency": "EUR"}
    assert segment.count() == 0


def test_replay_delivers_every_dead_letter_with_its_own_message_id(
    segment: Collector, store: DeadLetterStore, token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    failing(segment)
    dead_letter_through_the_pool(store, token, segment.url)
    segment.clear_faults()

    status, output = run(capsys, "dead-letters", "replay", "--timeout", "10")

    assert status == 0, output
    assert f"Replayed {EVENTS} of {EVENTS}" in output
    assert delivered_ids(segment) == [f"order-{n}" for n in range(EVENTS)]
    arrived = {message["messageId"]: message for message in segment.messages()}
    assert arrived["order-3"]["properties"] == {"total": 30, "currency": "EUR"}
    assert arrived["order-3"]["timestamp"].startswith("2024-05-01T12:00:00")
    assert store.count() == 0
    assert store.count(state="replayed") == EVENTS
    assert store.tallies() == {WORKSPACE: {"replayed": EVENTS}}


def test_replaying_twice_sends_duplicates_that_segment_deduplicates(
    segment: Collector, store: DeadLetterStore, token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    failing(segment)
    dead_letter_through_the_pool(store, token, segment.url)
    segment.clear_faults()
    assert run(capsys, "dead-letters", "replay")[0] == 0
    assert run(capsys, "dead-letters", "replay")[1].startswith("Replayed 0 of 0")  # nothing pending any more

    status, output = run(capsys, "dead-letters", "replay", "--state", "replayed")

    assert status == 0, output
    assert segment.count() == 2 * EVENTS
    assert segment.count(distinct=True) == EVENTS
    events = segment.events(limit=100)
    assert sum(event["duplicate"] for event in events) == EVENTS
    assert {event["message_id"] for event in events if event["duplicate"]} == {f"order-{n}" for n in range(EVENTS)}


def test_a_replay_that_fails_again_keeps_each_row_with_one_more_attempt(
    segment: Collector, store: DeadLetterStore, token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    failing(segment)
    dead_letter_through_the_pool(store, token, segment.url)
    failing(segment)  # still down when the operator replays

    status, output = run(capsys, "dead-letters", "replay", "--timeout", "10")

    assert status == 1
    assert f"{EVENTS} failed again" in output
    assert output.count("failed again: retries_exhausted") == EVENTS
    rows = store.list()
    assert len(rows) == EVENTS
    assert {(row.attempts, row.reason, row.status, row.replayed_at) for row in rows} == {
        (2, "retries_exhausted", 500, None)
    }
    assert segment.count() == 0

    segment.clear_faults()  # Segment is back: the same rows now go through
    assert run(capsys, "dead-letters", "replay")[0] == 0
    assert delivered_ids(segment) == [f"order-{n}" for n in range(EVENTS)]


def test_a_replay_to_an_endpoint_that_refuses_connections_keeps_the_rows(
    segment: Collector,
    store: DeadLetterStore,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    failing(segment)
    dead_letter_through_the_pool(store, token, segment.url, count=2)
    monkeypatch.setenv("QUICKBOT_SEGMENT_ENDPOINT", closed_port_url())

    status, _ = run(capsys, "dead-letters", "replay", "--timeout", "10")

    assert status == 1
    assert {(row.attempts, row.reason) for row in store.list()} == {(2, "retries_exhausted")}


def test_replay_sends_to_the_endpoint_configured_now_not_the_one_that_failed(
    segment: Collector, store: DeadLetterStore, token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = closed_port_url()  # say, an endpoint override the operator has since fixed
    dead_letter_through_the_pool(store, token, wrong, count=3)
    assert {row.endpoint for row in store.list()} == {wrong}

    status, output = run(capsys, "dead-letters", "replay", "--timeout", "10")

    assert status == 0, output
    assert delivered_ids(segment) == ["order-0", "order-1", "order-2"]


def test_rows_that_cannot_be_replayed_are_named_one_by_one_and_left_as_they_were(
    segment: Collector, store: DeadLetterStore, ring: KeyRing, token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    failing(segment)
    dead_letter_through_the_pool(store, token, segment.url, count=1, first=0)  # replayable
    dead_letter_through_the_pool(store, None, segment.url, count=1, first=1)  # no token known
    other_workspace = ring.seal({"writeKey": WRITE_KEY, "region": "us"}, "another-workspace")
    dead_letter_through_the_pool(store, other_workspace, segment.url, count=1, first=2)  # will not open here
    other_key = ring.seal({"writeKey": "another-key-0123456789", "region": "us"}, WORKSPACE)
    dead_letter_through_the_pool(store, other_key, segment.url, count=1, first=3)  # opens another key
    segment.clear_faults()

    status, output = run(capsys, "dead-letters", "replay", "--timeout", "10")

    assert status == 1
    by_id = {row.message_id: row for row in store.list(state="all")}
    assert "Replayed 1 of 4" in output and "3 skipped" in output
    assert (
        f"dead letter {by_id['order-1'].id} (workspace {WORKSPACE}, messageId order-1): skipped: no credentials token"
        in output
    )
    assert "messageId order-2): skipped: its credentials do not open" in output
    assert (
        f"messageId order-3): skipped: its credentials now hold write key {fingerprint('another-key-0123456789')}"
        in output
    )
    assert delivered_ids(segment) == ["order-0"]
    assert [row.attempts for row in store.list()] == [1, 1, 1]
    assert "another-key-0123456789" not in output


def test_replay_without_the_encryption_keys_says_so_and_changes_nothing(
    segment: Collector,
    store: DeadLetterStore,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    failing(segment)
    dead_letter_through_the_pool(store, token, segment.url, count=2)
    monkeypatch.delenv("QUICKBOT_ENCRYPTION_KEYS")

    status, output = run(capsys, "dead-letters", "replay")

    assert status == 2
    assert "QUICKBOT_ENCRYPTION_KEYS is not set" in output
    assert {row.attempts for row in store.list()} == {1}


def test_no_command_output_and_no_byte_of_the_store_holds_the_write_key(
    segment: Collector, store: DeadLetterStore, token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    failing(segment)
    dead_letter_through_the_pool(store, token, segment.url)
    outputs = [
        run(capsys, "dead-letters", "list"),
        run(capsys, "dead-letters", "list", "--json"),
        run(capsys, "dead-letters", "replay", "--timeout", "10"),  # fails again: per-row lines
        run(capsys, "dead-letters", "replay", "--json", "--timeout", "10"),
        run(capsys, "stats"),
        run(capsys, "stats", "--json"),
        run(capsys, "dead-letters", "purge"),
    ]
    text = "\n".join(output for _, output in outputs)
    assert "order-0" in text and "failed again" in text  # the commands did show their rows
    assert WRITE_KEY not in text
    raw = b"".join(p.read_bytes() for p in store.path.parent.iterdir() if p.name.startswith(store.path.name))
    assert WRITE_KEY.encode() not in raw
    assert token.encode() in raw
    listed = json.loads(outputs[1][1])
    assert listed["total"] == EVENTS and "credentials_token" not in listed["dead_letters"][0]
