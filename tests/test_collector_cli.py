"""`quickbot-segment collector` and `quickbot-segment events`, as an operator runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from segment.analytics import Client

from quickbot_segment_plugin.cli import main
from quickbot_segment_plugin.collector.service import Collector

WRITE_KEY = "wk_test_cli_P3m7"


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector() as running:
        batch = [
            {"type": "identify", "userId": "u1", "messageId": "m-identify", "traits": {"email": 42, "plan": "pro"}},
            {"type": "track", "userId": "u1", "event": "Order Completed", "messageId": "m-track-1"},
            {"type": "track", "anonymousId": "anon-9", "event": "Viewed", "messageId": "m-track-2"},
            {"type": "page", "userId": "u2", "name": "Pricing", "messageId": "m-page"},
        ]
        response = requests.post(running.url + "/v1/batch", json={"writeKey": WRITE_KEY, "batch": batch}, timeout=5)
        assert response.status_code == 200
        yield running


def test_events_prints_a_table_newest_first_with_warnings(
    collector: Collector, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["events", "--url", collector.url])
    lines = capsys.readouterr().out.splitlines()

    assert status == 0
    assert lines[0].split() == ["RECEIVED", "TYPE", "USER", "EVENT", "/", "NAME", "MESSAGE", "ID", "FLAGS"]
    rows = [line for line in lines[1:] if line.startswith("20") or line[:1].isdigit()]
    assert [row.split()[1] for row in rows] == ["page", "track", "track", "identify"]
    assert "Pricing" in rows[0]
    assert "anon:anon-9" in rows[1]
    assert "Order Completed" in rows[2]
    assert "!1" in rows[3]
    assert any(line.strip().startswith("! traits.email") for line in lines)
    assert lines[-1] == "showing 1-4 of 4"


def test_events_as_json_with_filters(collector: Collector, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["events", "--url", collector.url, "--type", "track", "--user-id", "u1", "--json"])
    printed = json.loads(capsys.readouterr().out)

    assert status == 0
    assert printed == collector.events(type="track", user_id="u1")
    assert [event["message"]["event"] for event in printed] == ["Order Completed"]


def test_events_pages_and_says_how_to_get_the_next_page(
    collector: Collector, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["events", "--url", collector.url, "--limit", "1", "--event", "Viewed"])
    only = capsys.readouterr().out
    main(["events", "--url", collector.url, "--limit", "2", "--offset", "1"])
    paged = capsys.readouterr().out.splitlines()

    assert "m-track-2" in only
    assert only.splitlines()[-1] == "showing 1-1 of 1"
    assert paged[-1] == "showing 2-3 of 4; next page: --offset 3"


def test_events_reads_the_url_from_the_environment(
    collector: Collector, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUICKBOT_SEGMENT_COLLECTOR_URL", collector.url)
    assert main(["events", "--json", "--message-id", "m-page"]) == 0
    assert [event["message_id"] for event in json.loads(capsys.readouterr().out)] == ["m-page"]


def test_events_explains_an_unreachable_collector_and_a_bad_filter(
    collector: Collector, capsys: pytest.CaptureFixture[str]
) -> None:
    with Collector() as stopped_soon:
        gone = stopped_soon.url
    unreachable = main(["events", "--url", gone])
    unreachable_error = capsys.readouterr().err
    bad_since = main(["events", "--url", collector.url, "--since", "yesterday-ish"])
    bad_since_error = capsys.readouterr().err

    assert unreachable == 2
    assert f"cannot reach a collector at {gone}" in unreachable_error
    assert "Traceback" not in unreachable_error
    assert bad_since == 2
    assert "since must be an ISO-8601 date" in bad_since_error


def test_collector_refuses_a_public_address_without_allow_remote(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["collector", "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_collector_reports_a_malformed_port_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUICKBOT_SEGMENT_COLLECTOR_PORT", "eighty")
    assert main(["collector"]) == 2
    assert "QUICKBOT_SEGMENT_COLLECTOR_PORT" in capsys.readouterr().err


def test_collector_command_runs_until_interrupted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = tmp_path / "demo.sqlite3"
    process = subprocess.Popen(
        [sys.executable, "-m", "quickbot_segment_plugin.cli", "collector", "--port", "0", "--db", str(database)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("Segment-compatible collector listening on http://127.0.0.1:"), banner
        url = banner.rsplit(" ", 1)[1].strip()
        client = Client(WRITE_KEY, host=url, sync_mode=True)
        client.track("demo-user", "Tried the block")

        assert main(["events", "--url", url]) == 0
        assert "Tried the block" in capsys.readouterr().out
    finally:
        process.send_signal(signal.SIGINT)
        output, errors = process.communicate(timeout=20)

    assert process.returncode == 0, errors
    assert "Stopped; 1 event(s) stored." in output
    assert database.exists()
    with Collector(database) as reopened:
        assert [message["event"] for message in reopened.messages()] == ["Tried the block"]
