"""`quickbot-segment run` as a bot builder uses it, through the installed console script.

The README's loop (a collector in one terminal, `run` in another) is driven end to end: the
collector is a real subprocess, the events go through the real Segment library over HTTP,
and the check is the collector's own /events API, not what `run` claims.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quickbot_segment_plugin.collector.faults import Fault
from quickbot_segment_plugin.collector.service import Collector

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FLOW = str(EXAMPLES / "onboarding-flow.json")
CLI = str(Path(sys.executable).with_name("quickbot-segment"))


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env or dict(os.environ), timeout=timeout)


def scratch_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a newcomer: no dead-letter path, a HOME of its own to check for stray files."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("QUICKBOT_SEGMENT_")}
    env["HOME"] = str(tmp_path / "home")
    env["XDG_STATE_HOME"] = str(tmp_path / "home" / ".local" / "state")
    env["TMPDIR"] = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir(parents=True)
    env.update(extra)
    return env


@pytest.fixture
def collector_process(tmp_path: Path) -> Iterator[str]:
    """`quickbot-segment collector --port 0` in a subprocess, as the README starts it; yields its URL."""
    process = subprocess.Popen(
        [CLI, "collector", "--port", "0"], stdout=subprocess.PIPE, text=True, env=scratch_env(tmp_path / "c")
    )
    assert process.stdout is not None
    try:
        first = process.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert found, f"the collector did not say where it listens: {first!r}"
        yield found.group(0)
    finally:
        process.terminate()
        process.wait(10)


def events_at(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/events?limit=100", timeout=10) as response:
        page: dict[str, Any] = json.loads(response.read())
    events: list[dict[str, Any]] = page["events"]
    return events


def test_the_readme_loop_sends_to_the_running_collector_without_any_key(collector_process: str, tmp_path: Path) -> None:
    env = scratch_env(tmp_path, QUICKBOT_SEGMENT_ENDPOINT=collector_process)
    completed = cli("run", FLOW, "--json", env=env)
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    sent = {result["message_id"] for result in report["results"] if result["status"] == "queued"}
    assert len(sent) == 6
    assert {result["delivery"]["outcome"] for result in report["results"] if "delivery" in result} == {"delivered"}
    stored = events_at(collector_process)
    assert {event["message_id"] for event in stored} == sent
    assert {event["type"] for event in stored} == {"alias", "identify", "group", "page", "screen", "track"}
    # A demo run writes no counters or dead letters into the operator's store.
    assert not (tmp_path / "home" / ".local" / "state" / "quickbot-segment").exists()
    assert list((tmp_path / "tmp").iterdir()) == []  # the scratch store is gone: nothing was dead-lettered


def test_run_says_where_the_events_went_and_how_many_arrived(collector_process: str, tmp_path: Path) -> None:
    completed = cli("run", FLOW, "--endpoint", collector_process, env=scratch_env(tmp_path))
    assert completed.returncode == 0, completed.stderr
    assert f"Delivered 6 of 6 event(s) to the collector at {collector_process}." in completed.stdout
    assert "== block identify-user: delivered (message " in completed.stdout
    assert "Waiting up to 10 s for 6 event(s)" in completed.stderr


def test_without_an_endpoint_run_says_it_uses_a_temporary_collector(tmp_path: Path) -> None:
    completed = cli("run", FLOW, env=scratch_env(tmp_path))
    assert completed.returncode == 0, completed.stderr
    assert "No endpoint given (QUICKBOT_SEGMENT_ENDPOINT or --endpoint): using a temporary collector" in (
        completed.stderr
    )
    assert "Delivered 6 of 6 event(s) to a temporary collector at http://127.0.0.1:" in completed.stdout


def test_a_refused_endpoint_fails_the_run_and_names_the_refusal(tmp_path: Path) -> None:
    with Collector() as closed:
        url = closed.url  # a port that was just free: nothing listens there once the collector stops
    completed = cli("run", FLOW, "--endpoint", url, "--timeout", "2", env=scratch_env(tmp_path))
    assert completed.returncode == 3, completed.stdout + completed.stderr
    assert "Delivered 0 of 6 event(s)" in completed.stdout
    assert "6 dead-lettered" in completed.stdout
    blocks = [line for line in completed.stdout.splitlines() if line.startswith("== block ")]
    refused = [line for line in blocks if "connection refused by 127.0.0.1:" in line]
    assert len(refused) == 6, blocks
    # The dead letters are kept (the scratch store is not deleted) and the output says where.
    kept = re.search(r"They are kept in (\S+);", completed.stdout)
    assert kept and Path(kept.group(1)).exists()


def test_an_endpoint_answering_404_fails_the_run_and_names_the_status(tmp_path: Path) -> None:
    with Collector() as collector:
        collector.inject_faults([Fault(status=404, body={"message": "no such route"}, repeat=10)])
        completed = cli("run", FLOW, "--endpoint", collector.url, "--timeout", "5", env=scratch_env(tmp_path))
    assert completed.returncode == 3, completed.stdout + completed.stderr
    assert "Delivered 0 of 6 event(s)" in completed.stdout
    assert re.search(
        r"dead-lettered \(message [0-9a-f-]+\) \[rejected\]: HTTP 404 from 127\.0\.0\.1:\d+", completed.stdout
    )


def test_a_trailing_v1_batch_is_removed_and_said(collector_process: str, tmp_path: Path) -> None:
    completed = cli("run", FLOW, "--endpoint", f"{collector_process}/v1/batch", env=scratch_env(tmp_path))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"--endpoint ends in /v1/batch; sending to {collector_process}" in completed.stderr
    assert len(events_at(collector_process)) == 6


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("ftp://127.0.0.1:1", "--endpoint must start with http:// or https://"),
        ("http://", "--endpoint has no host name"),
        ("https://proxy.example.com", "not on this machine, and no --credentials were given"),
    ],
)
def test_an_endpoint_that_cannot_work_is_refused_before_anything_is_sent(
    tmp_path: Path, endpoint: str, expected: str
) -> None:
    completed = cli("run", FLOW, "--endpoint", endpoint, env=scratch_env(tmp_path))
    assert completed.returncode == 2
    assert expected in completed.stderr
    assert "Traceback" not in completed.stderr


def test_the_environment_variable_is_named_when_it_is_wrong(tmp_path: Path) -> None:
    completed = cli("run", FLOW, env=scratch_env(tmp_path, QUICKBOT_SEGMENT_ENDPOINT="127.0.0.1:8787"))
    assert completed.returncode == 2
    assert "QUICKBOT_SEGMENT_ENDPOINT must start with http:// or https://" in completed.stderr


def test_dead_letters_go_where_the_operator_says(tmp_path: Path) -> None:
    with Collector() as closed:
        url = closed.url
    store = tmp_path / "mine.sqlite3"
    completed = cli("run", FLOW, "--endpoint", url, "--timeout", "1", "--db", str(store), env=scratch_env(tmp_path))
    assert completed.returncode == 3
    listing = cli("dead-letters", "list", "--db", str(store), "--json", env=scratch_env(tmp_path / "x"))
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout)["total"] == 6
