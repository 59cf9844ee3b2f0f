"""`quickbot-segment privacy forget` says what it erased, store by store, and only erases from
stores that are what their option says: run through the installed command."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from segment.analytics.request import post as library_post

from quickbot_segment_plugin.collector.service import Collector
from quickbot_segment_plugin.collector.store import EventStore
from quickbot_segment_plugin.core.erasure_values import ERASED, MIN_FREE_TEXT_LENGTH, scrub
from quickbot_segment_plugin.deadletters import DeadLetterStore

COMMAND = str(Path(sys.executable).with_name("quickbot-segment"))
WORKSPACE = "ws-erasure"
FORGET = "user-forget-8d21"
KEEP = "user-keep-5e07"
EMAIL = "zoe.forget@example.com"
WRITE_KEY = "wk_erasure_test_key_0001"


def forget(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMAND, "privacy", "forget", "--workspace", WORKSPACE, "--user-id", FORGET, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        names = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    return names - {"sqlite_sequence"}


def dead_letters(path: Path) -> DeadLetterStore:
    store = DeadLetterStore(path)
    store.add(
        WORKSPACE,
        [
            {"type": "identify", "userId": FORGET, "traits": {"email": EMAIL}, "messageId": "dl-forget"},
            {
                "type": "track",
                "event": "Invite Sent",
                "userId": KEEP,
                "properties": {"invited": EMAIL, "note": f"invited {EMAIL} today", "plan": "pro"},
                "messageId": "dl-keep",
            },
        ],
        "rejected",
    )
    store.close()
    return store


def collector_file(path: Path) -> None:
    EventStore(path).close()


def test_a_mistyped_db_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "dead-leters.sqlite3"
    result = forget("--db", str(typo))
    assert result.returncode == 2
    assert "no such file, so nothing was erased" in result.stderr
    assert not typo.exists()
    assert "removed 0" not in result.stdout


def test_swapped_db_and_collector_db_change_neither_file(tmp_path: Path) -> None:
    dead, events = tmp_path / "dl.sqlite3", tmp_path / "events.sqlite3"
    dead_letters(dead)
    collector_file(events)
    before = (tables(dead), tables(events))
    result = forget("--db", str(events), "--collector-db", str(dead))
    assert result.returncode == 2
    assert "is the plugin's collector event store, not a dead-letter store" in result.stderr
    result = forget("--db", str(dead), "--collector-db", str(dead))
    assert result.returncode == 2
    assert "is the plugin's dead-letter store, not a collector event store" in result.stderr
    assert (tables(dead), tables(events)) == before
    assert [row.message_id for row in DeadLetterStore(dead).list(state="all")] == ["dl-forget", "dl-keep"]


def test_a_file_that_is_not_sqlite_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    dead = tmp_path / "dl.sqlite3"
    dead_letters(dead)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n" * 20)
    notes.chmod(0o600)
    for argv in (["--db", str(notes)], ["--db", str(dead), "--collector-db", str(notes)]):
        result = forget(*argv)
        assert result.returncode == 2
        assert f"{notes} is not an SQLite file" in result.stderr
        assert "Traceback" not in result.stderr
    # Nothing was erased from the good store while the bad one was refused.
    assert len(DeadLetterStore(dead).list(state="all")) == 2


def test_the_users_identifiers_are_erased_from_other_users_events_and_raw_batches(tmp_path: Path) -> None:
    dead = tmp_path / "dl.sqlite3"
    dead_letters(dead)
    with Collector(tmp_path / "events.sqlite3") as collector:
        forgotten = {"type": "identify", "userId": FORGET, "traits": {"email": EMAIL}, "messageId": str(uuid.uuid4())}
        kept: dict[str, Any] = {
            "type": "track",
            "event": "Invite Sent",
            "userId": KEEP,
            "properties": {"invited": EMAIL, "plan": "pro", "referrer": FORGET},
            "messageId": str(uuid.uuid4()),
        }
        response = library_post(
            WRITE_KEY,
            host=collector.url,
            timeout=5,
            batch=[forgotten, kept],
            context={"traits": {"email": EMAIL}, "library": {"name": "test"}},
        )
        assert response.status_code == 200
        assert collector.wait_for(2, timeout=10, distinct=False)
        batch_id = collector.events()[0]["batch_id"]

        result = forget("--db", str(dead), "--collector-db", str(collector.db_path), "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert [row["message_id"] for row in report["dead_letters"]["removed"]] == ["dl-forget"]
        assert report["dead_letters"]["rewritten_events"] == 1
        (erased,) = report["collectors"]
        assert [row["message_id"] for row in erased["removed"]] == [forgotten["messageId"]]
        assert (erased["rewritten_events"], erased["rewritten_batches"]) == (1, 1)

        (remaining,) = collector.events()
        assert remaining["message"]["properties"] == {"invited": ERASED, "plan": "pro", "referrer": ERASED}
        assert remaining["message"]["userId"] == KEEP
        body = collector.batch(batch_id)
        assert body is not None
        assert body["body"]["context"] == {"traits": {"email": ERASED}, "library": {"name": "test"}}
        assert [message["userId"] for message in body["body"]["batch"]] == [KEEP]
        for text in (json.dumps(remaining), json.dumps(body)):
            assert EMAIL not in text and FORGET not in text
    (row,) = DeadLetterStore(dead).list(state="all")
    assert row.message["properties"] == {"invited": ERASED, "note": f"invited {ERASED} today", "plan": "pro"}
    assert row.message["userId"] == KEEP

    text = forget("--db", str(dead), "--collector-db", str(tmp_path / "events.sqlite3"))
    assert text.returncode == 0
    assert "removed 0 event(s)" in text.stdout and "0 other event(s)" in text.stdout


identifier = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=15,
)


@settings(deadline=None)  # a busy machine is not a failure
@given(value=json_values, secret=identifier, before=st.text(max_size=5), after=st.text(max_size=5))
def test_scrub_leaves_no_long_identifier_and_changes_nothing_else(
    value: Any, secret: str, before: str, after: str
) -> None:
    planted = {"kept": value, "mention": before + secret + after, "email": secret}
    scrubbed, changed = scrub(planted, frozenset({secret}))
    assert changed
    assert scrubbed["email"] == ERASED
    if len(secret) >= MIN_FREE_TEXT_LENGTH and secret not in ERASED:
        assert secret not in json.dumps(scrubbed, ensure_ascii=False)
    if not _mentions(value, secret) and ERASED.find(secret) < 0:
        assert scrubbed["kept"] == value


def _mentions(value: Any, secret: str) -> bool:
    """Whether any text in `value` (keys included) holds `secret`; JSON would escape control characters."""
    if isinstance(value, str):
        return secret in value
    if isinstance(value, list):
        return any(_mentions(item, secret) for item in value)
    if isinstance(value, dict):
        return any(_mentions(key, secret) or _mentions(item, secret) for key, item in value.items())
    return False
