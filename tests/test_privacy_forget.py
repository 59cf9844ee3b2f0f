"""Erasure end to end: events reach the dead-letter store (a rejected batch) and the collector
through the real delivery path; `quickbot-segment privacy forget` removes one user's, and not a
byte of that userId is left in either SQLite file."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from support import WORKSPACE

from quickbot_segment_plugin.block import SegmentBlock
from quickbot_segment_plugin.cli import main
from quickbot_segment_plugin.collector.faults import Fault
from quickbot_segment_plugin.collector.service import Collector
from quickbot_segment_plugin.collector.store import EventStore
from quickbot_segment_plugin.deadletters import DeadLetterStore

FORGET = "user-forget-me-7c41"
KEEP = "user-keep-me-19ad"


def send(block: SegmentBlock, token: str, user: str, event: str) -> str:
    options = {"action": "track", "event": event, "userId": "{{User}}", "properties": [{"key": "n", "value": "1"}]}
    result = block.execute(options, {"workspace_id": WORKSPACE, "credentials": token, "variables": {"User": user}})
    assert result["status"] == "queued", result
    return str(result["message_id"])


def wait_until(condition: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def file_bytes(path: Path) -> bytes:
    """The database file and its side files, as a reader of the disk would see them."""
    data = b""
    for suffix in ("", "-wal", "-journal"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            data += side.read_bytes()
    return data


def test_forget_removes_the_users_events_from_the_dead_letter_store_and_the_collector(
    block: SegmentBlock, token: str, local_segment: Collector, capsys: pytest.CaptureFixture[str]
) -> None:
    dead_letter_path = Path(os.environ["QUICKBOT_SEGMENT_DEAD_LETTER_PATH"])
    store = DeadLetterStore()
    # Phase 1: Segment refuses every batch (400): the events are dead-lettered as "rejected".
    local_segment.inject_faults([Fault(status=400, repeat=50)])
    dead_forget = send(block, token, FORGET, "Dead Forget")
    dead_keep = send(block, token, KEEP, "Dead Keep")
    wait_until(lambda: len(store.list(workspace_id=WORKSPACE, state="all")) == 2, "2 dead letters")
    # Phase 2: delivered to the collector, the two users' events mixed in the same batches.
    local_segment.clear_faults()
    delivered_forget = [send(block, token, FORGET, f"Live Forget {n}") for n in range(3)]
    delivered_keep = send(block, token, KEEP, "Live Keep")
    assert local_segment.wait_for(4, timeout=15.0)
    block.shutdown(10.0)
    assert FORGET.encode() in file_bytes(dead_letter_path)
    assert FORGET.encode() in file_bytes(local_segment.db_path)

    status = main(
        [
            "privacy",
            "forget",
            "--workspace",
            WORKSPACE,
            "--user-id",
            FORGET,
            "--collector-db",
            str(local_segment.db_path),
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0
    assert "removed 1 event(s)" in printed and "removed 3 event(s)" in printed
    for message_id in (dead_forget, *delivered_forget):
        assert message_id in printed
    assert dead_keep not in printed and delivered_keep not in printed
    assert "Segment's copy needs its own request" in printed

    remaining_dead = store.list(workspace_id=WORKSPACE, state="all")
    assert [row.message["userId"] for row in remaining_dead] == [KEEP]
    remaining = local_segment.messages()
    assert [message["userId"] for message in remaining] == [KEEP]
    for event in local_segment.events():
        batch = local_segment.batch(event["batch_id"])
        assert batch is None or FORGET not in json.dumps(batch["body"])
    # Not only unlisted: gone from the files (secure delete, WAL checkpointed).
    assert FORGET.encode() not in file_bytes(dead_letter_path)
    assert FORGET.encode() not in file_bytes(local_segment.db_path)
    assert KEEP.encode() in file_bytes(local_segment.db_path)
    # The removed undelivered dead letter is accounted for as an operator's removal.
    assert store.tallies().get(WORKSPACE, {}).get("purged") == 1


def test_forget_json_output_by_anonymous_id_and_nothing_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = DeadLetterStore()
    store.add(WORKSPACE, [{"type": "track", "event": "E", "anonymousId": "anon-1", "messageId": "m-1"}], "rejected")
    store.add(
        "other-workspace", [{"type": "track", "event": "E", "anonymousId": "anon-1", "messageId": "m-2"}], "rejected"
    )
    assert main(["privacy", "forget", "--workspace", WORKSPACE, "--anonymous-id", "anon-1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["message_id"] for row in report["dead_letters"]["removed"]] == ["m-1"]
    assert report["collectors"] == []
    # Another workspace's end user is not this request's: untouched.
    assert [row.message_id for row in store.list(state="all")] == ["m-2"]
    assert main(["privacy", "forget", "--workspace", WORKSPACE, "--user-id", "nobody"]) == 0
    assert "removed 0 event(s)" in capsys.readouterr().out


def test_forget_needs_a_user_and_an_existing_collector_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["privacy", "forget", "--workspace", WORKSPACE]) == 2
    assert "--user-id or --anonymous-id" in capsys.readouterr().err
    missing = str(tmp_path / "nope.sqlite3")
    assert main(["privacy", "forget", "--workspace", WORKSPACE, "--user-id", "u", "--collector-db", missing]) == 2
    assert "no such collector file" in capsys.readouterr().err


def test_privacy_check_prints_the_effective_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "tracking-plans" / "demo-workspace.privacy.json"
    assert main(["privacy", "check", "--file", str(example), "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["detectors"] == {"iban": "mask", "card": "refuse", "ssn": "mask", "phone": "mask"}
    assert "traits.address.street" in described["deny_paths"]
    broken = tmp_path / "broken.privacy.json"
    broken.write_text('{"detectors": {"card": "shred"}}', encoding="utf-8")
    assert main(["privacy", "check", "--file", str(broken)]) == 2
    assert "detectors.card" in capsys.readouterr().err


def _stored(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "messageId": f"m-{time.monotonic_ns()}", "timestamp": "2026-01-01T00:00:00.000Z", **fields}


def test_both_stores_erase_an_alias_whose_previous_id_is_a_number(tmp_path: Path) -> None:
    """Segment compares ids as text; an alias from a numeric anonymous id is the user's in either store."""
    alias = _stored("alias", userId="user-9", previousId=4207)
    other = _stored("alias", userId="user-8", previousId=4208)
    events = EventStore(tmp_path / "events.sqlite3")
    dead = DeadLetterStore(tmp_path / "dead.sqlite3")
    try:
        events.add(
            [alias, other],
            [[], []],
            received_at="2026-01-01T00:00:01.000Z",
            batch_id="b1",
            write_key_fingerprint="sha256:x",
        )
        dead.add(WORKSPACE, [alias, other], "rejected")
        assert [row["message_id"] for row in events.forget("4207")] == [alias["messageId"]]
        assert [row["message_id"] for row in dead.forget(WORKSPACE, "4207")] == [alias["messageId"]]
        assert [message["messageId"] for message in events.messages()] == [other["messageId"]]
        assert [letter.message_id for letter in dead.list(workspace_id=WORKSPACE, state="all")] == [other["messageId"]]
    finally:
        events.close()
        dead.close()


def test_the_collector_summary_stops_counting_erased_events(tmp_path: Path) -> None:
    events = EventStore(tmp_path / "events.sqlite3")
    try:
        messages = [_stored("track", userId=user, event="E") for user in (FORGET, KEEP)]
        events.add(
            messages, [[], []], received_at="2026-01-01T00:00:01.000Z", batch_id="b1", write_key_fingerprint="sha256:x"
        )
        assert events.summary(5, "2026-01-01T00:00:02.000Z")["total"] == 2
        events.forget(FORGET)
        assert events.summary(5, "2026-01-01T00:00:02.000Z")["total"] == 1
    finally:
        events.close()


def test_an_erasure_that_cannot_empty_the_write_ahead_log_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A reader holding a snapshot keeps the -wal file from being emptied: retried, then a warning."""
    monkeypatch.setattr("quickbot_segment_plugin.erasure.CHECKPOINT_SECONDS", 0.2)
    path = tmp_path / "events.sqlite3"
    events = EventStore(path)
    reader = sqlite3.connect(path)
    try:
        events.add(
            [_stored("track", userId=FORGET, event="E")],
            [[]],
            received_at="2026-01-01T00:00:01.000Z",
            batch_id="b1",
            write_key_fingerprint="sha256:x",
        )
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM events").fetchone()  # a read transaction pins the log
        with caplog.at_level(logging.WARNING, logger="quickbot_segment_plugin.erasure"):
            assert len(events.forget(FORGET)) == 1
        assert any("write-ahead log could not be emptied" in record.getMessage() for record in caplog.records)
        reader.execute("COMMIT")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="quickbot_segment_plugin.erasure"):
            events.forget(KEEP)  # nothing to erase, but the log can now be emptied: no warning
        assert caplog.records == []
    finally:
        reader.close()
        events.close()
