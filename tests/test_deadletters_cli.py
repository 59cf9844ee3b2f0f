"""`quickbot-segment dead-letters list|purge` and `quickbot-segment stats`, as an operator runs them."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quickbot_segment_plugin.cli import main
from quickbot_segment_plugin.cli.operations import parse_age
from quickbot_segment_plugin.core.counters import Counters
from quickbot_segment_plugin.deadletters import DeadLetterStore

NOW = datetime.now(UTC)


@pytest.fixture
def path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "dl.sqlite3"
    monkeypatch.setenv("QUICKBOT_SEGMENT_DEAD_LETTER_PATH", str(where))
    return where


@pytest.fixture
def filled(path: Path) -> DeadLetterStore:
    """Three hours ago: 2 queue_full in ws-a. Now: 1 rejected in ws-a (no token), 1 queue_full in ws-b."""
    earlier = DeadLetterStore(path, clock=lambda: NOW - timedelta(hours=3), counters=Counters())
    earlier.add(
        "ws-a",
        [message("a-old-1"), message("a-old-2")],
        "queue_full",
        "queue full",
        None,
        "qbseg.v1.k.t",
        "sha256:0123456789ab",
        "https://api.segment.io",
    )
    store = DeadLetterStore(path, counters=Counters())
    store.add(
        "ws-a", [message("a-new")], "rejected", "HTTP 400", 400, None, "sha256:0123456789ab", "https://api.segment.io"
    )
    store.add(
        "ws-b",
        [message("b-new")],
        "queue_full",
        "queue full",
        None,
        "qbseg.v1.k.t",
        "sha256:ba9876543210",
        "https://api.segment.io",
    )
    return store


def message(message_id: str) -> dict[str, object]:
    return {"type": "track", "event": "Signed Up", "userId": "u-1", "messageId": message_id}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_list_shows_a_table_of_pending_rows_and_how_many_match(
    filled: DeadLetterStore, capsys: pytest.CaptureFixture[str]
) -> None:
    status, output = run(capsys, "dead-letters", "list")
    assert status == 0
    lines = output.splitlines()
    assert lines[0].split() == [
        "ID",
        "WORKSPACE",
        "REASON",
        "STATUS",
        "ATTEMPTS",
        "LAST",
        "FAILED",
        "(UTC)",
        "TYPE",
        "MESSAGE",
        "ID",
        "REPLAY",
    ]
    assert [line.split()[1:3] for line in lines[1:5]] == [
        ["ws-a", "queue_full"],
        ["ws-a", "queue_full"],
        ["ws-a", "rejected"],
        ["ws-b", "queue_full"],
    ]
    assert "track:Signed Up" in output
    assert "no token" in lines[3] and lines[1].rstrip().endswith("yes")
    assert "1-4 of 4 pending dead letter(s)" in output
    assert "cannot be replayed" in output


def test_list_filters_by_workspace_reason_and_age(filled: DeadLetterStore, capsys: pytest.CaptureFixture[str]) -> None:
    def listed(*filters: str) -> list[str]:
        status, output = run(capsys, "dead-letters", "list", "--json", *filters)
        assert status == 0
        return [row["message_id"] for row in json.loads(output)["dead_letters"]]

    assert listed("--workspace", "ws-a") == ["a-old-1", "a-old-2", "a-new"]
    assert listed("--reason", "queue_full") == ["a-old-1", "a-old-2", "b-new"]
    assert listed("--older-than", "2h") == ["a-old-1", "a-old-2"]
    assert listed("--newer-than", "90m") == ["a-new", "b-new"]
    assert listed("--older-than", (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")) == ["a-old-1", "a-old-2"]
    assert listed("--workspace", "ws-b", "--reason", "rejected") == []
    assert listed("--limit", "1", "--offset", "2") == ["a-new"]


def test_list_json_carries_the_message_but_never_the_token(
    filled: DeadLetterStore, capsys: pytest.CaptureFixture[str]
) -> None:
    status, output = run(capsys, "dead-letters", "list", "--json", "--workspace", "ws-b")
    document = json.loads(output)
    assert status == 0 and document["total"] == 1
    [row] = document["dead_letters"]
    assert row["message"] == message("b-new")
    assert (row["reason"], row["attempts"], row["has_credentials"]) == ("queue_full", 1, True)
    assert "qbseg.v1.k.t" not in output


def test_listing_by_id_finds_a_row_whatever_its_state(
    filled: DeadLetterStore, capsys: pytest.CaptureFixture[str]
) -> None:
    row = filled.list(workspace_id="ws-b")[0]
    filled.mark_replayed([row.id])
    assert "No pending dead letters match" in run(capsys, "dead-letters", "list", "--workspace", "ws-b")[1]
    status, output = run(capsys, "dead-letters", "list", "--id", str(row.id))
    assert status == 0 and "b-new" in output and "done" in output


def test_an_empty_or_missing_store_says_so(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, output = run(capsys, "dead-letters", "list")
    assert status == 0
    assert "No pending dead letters match" in output and "does not exist yet" in output
    assert not path.exists()


def test_purge_without_yes_only_counts_and_deletes_nothing(
    filled: DeadLetterStore, capsys: pytest.CaptureFixture[str]
) -> None:
    status, output = run(capsys, "dead-letters", "purge", "--workspace", "ws-a")
    assert status == 1
    assert "Would purge 3 pending dead letter(s)" in output and "--yes" in output
    assert filled.count() == 4


def test_purge_with_yes_deletes_exactly_the_selection_and_stats_remember_it(
    filled: DeadLetterStore, capsys: pytest.CaptureFixture[str]
) -> None:
    status, output = run(capsys, "dead-letters", "purge", "--older-than", "2h", "--yes")
    assert status == 0 and "Purged 2 dead letter(s)" in output
    assert sorted(row.message_id for row in filled.list()) == ["a-new", "b-new"]

    status, output = run(capsys, "stats", "--json")
    assert json.loads(output)["removed"] == {"ws-a": {"purged": 2}}


def test_stats_shows_rows_per_workspace_and_reason_with_totals(
    filled: DeadLetterStore, capsys: pytest.CaptureFixture[str]
) -> None:
    filled.mark_replayed([filled.list(workspace_id="ws-b")[0].id])
    status, output = run(capsys, "stats")
    assert status == 0
    rows = {tuple(line.split()[:4]) for line in output.splitlines()}
    assert ("ws-a", "queue_full", "2", "0") in rows
    assert ("ws-a", "rejected", "1", "0") in rows
    assert ("ws-b", "queue_full", "0", "1") in rows
    assert ("TOTAL", "3", "1") in {tuple(line.split()[:3]) for line in output.splitlines()}
    assert "COUNTERS.snapshot()" in output  # where the live numbers are, since none were flushed


def test_stats_shows_counters_flushed_by_workers(filled: DeadLetterStore, capsys: pytest.CaptureFixture[str]) -> None:
    filled.record_counters({("ws-a", "executed"): 10, ("ws-a", "queued"): 9, ("ws-b", "executed"): 1})
    status, output = run(capsys, "stats")
    assert status == 0
    lines = [line.split() for line in output.splitlines()]
    assert ["WORKSPACE", "EXECUTED", "QUEUED"] in lines
    assert ["ws-a", "10", "9"] in lines and ["TOTAL", "11", "9"] in lines

    document = json.loads(run(capsys, "stats", "--json")[1])
    assert document["counters"] == {"ws-a": {"executed": 10, "queued": 9}, "ws-b": {"executed": 1}}
    assert {(entry["workspace_id"], entry["reason"], entry["pending"]) for entry in document["dead_letters"]} == {
        ("ws-a", "queue_full", 2),
        ("ws-a", "rejected", 1),
        ("ws-b", "queue_full", 1),
    }


def test_the_db_option_reads_another_file(
    tmp_path: Path, filled: DeadLetterStore, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.sqlite3"
    DeadLetterStore(other, counters=Counters()).add("ws-z", [message("z")], "queue_full")
    status, output = run(capsys, "dead-letters", "list", "--db", str(other), "--json")
    assert status == 0
    assert [row["message_id"] for row in json.loads(output)["dead_letters"]] == ["z"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("3d", timedelta(days=3)),
        ("1w", timedelta(weeks=1)),
        ("1.5h", timedelta(minutes=90)),
        ("2 H", timedelta(hours=2)),
    ],
)
def test_ages_read_as_an_operator_writes_them(text: str, expected: timedelta) -> None:
    assert parse_age(text) == expected


def test_a_date_is_a_cutoff_in_utc_unless_it_says_otherwise() -> None:
    assert parse_age("2024-05-01T12:00") == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_age("2024-05-01T12:00Z") == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_age("2024-05-01T14:00+02:00") == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@given(st.text(max_size=12).filter(lambda text: not any(char.isdigit() for char in text)))
def test_anything_else_is_refused_with_the_forms_that_work(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="90s, 30m, 2h, 3d or 1w"):
        parse_age(text)


def test_a_bad_age_on_the_command_line_is_a_usage_error(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["dead-letters", "list", "--older-than", "yesterday"])
    assert exit_info.value.code == 2
    assert "--older-than: must be an age such as 90s" in capsys.readouterr().err


def test_a_file_that_is_not_a_store_is_one_clear_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("this is not SQLite " * 100)
    for command in (["dead-letters", "list"], ["dead-letters", "purge", "--yes"], ["stats"]):
        status, output = run(capsys, *command, "--db", str(not_a_database))
        assert status == 2
        assert output.startswith(f"quickbot-segment: error: cannot use {not_a_database}:")
        assert "Traceback" not in output
