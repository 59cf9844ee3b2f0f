"""Two replicas (two real processes) on one PostgreSQL database: each dead-letters its own
events there, and any process lists them all, replays them all to the embedded collector,
shows counters summed and per replica, and erases one end user from the shared store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from support import WORKSPACE, WRITE_KEY

from quickbot_segment_plugin.collector.service import Collector, Fault

REPLICA = r"""
import sys
from quickbot_segment_plugin.core import COUNTERS
from quickbot_segment_plugin.credentials import KeyRing
from quickbot_segment_plugin.deadletters import DeadLetterRecorder, DeadLetterStore
from quickbot_segment_plugin.delivery import DeliveryPool, DeliverySettings
from quickbot_segment_plugin.core import fingerprint

name, endpoint, write_key, workspace = sys.argv[1:5]
store = DeadLetterStore()  # QUICKBOT_SEGMENT_DATABASE_URL: the shared database
flusher = store.start_counter_flusher(COUNTERS, interval=60)
recorder = DeadLetterRecorder(store)
recorder.remember_token(workspace, fingerprint(write_key), KeyRing.from_env().seal({"writeKey": write_key}, workspace))
pool = DeliveryPool(DeliverySettings.from_env(), on_undeliverable=recorder)
users = [f"{name}-user-0", f"{name}-user-1", "alice"]
for n, user in enumerate(users):
    COUNTERS.executed(workspace)
    assert pool.enqueue(workspace, write_key, endpoint, {
        "type": "track", "event": "Order Completed", "userId": user, "messageId": f"{name}-{n}",
    }).accepted
pool.shutdown(20)
flusher.stop()
print(store.location)
"""


def cli(url: str, replica: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QUICKBOT_SEGMENT_DATABASE_URL": url, "QUICKBOT_SEGMENT_REPLICA_ID": replica}
    return subprocess.run(
        [sys.executable, "-m", "quickbot_segment_plugin.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def replicas(local_segment: Collector, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Collector:
    """pod-a and pod-b ran at the same time against a Segment that answered 500: 3 dead letters each."""
    monkeypatch.setenv("QUICKBOT_SEGMENT_MAX_RETRIES", "0")
    local_segment.inject_faults([Fault(status=500, repeat=100)])
    children = [
        subprocess.Popen(
            [sys.executable, "-c", REPLICA, name, local_segment.url, WRITE_KEY, WORKSPACE],
            env={**os.environ, "QUICKBOT_SEGMENT_DATABASE_URL": postgres_url, "QUICKBOT_SEGMENT_REPLICA_ID": name},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("pod-a", "pod-b")
    ]
    for child in children:
        output, _ = child.communicate(timeout=120)
        assert child.returncode == 0, output
    local_segment.clear_faults()
    assert local_segment.count() == 0
    return local_segment


def listed(url: str, replica: str) -> list[dict[str, Any]]:
    done = cli(url, replica, "dead-letters", "list", "--json", "--state", "all")
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)["dead_letters"]
    return rows


def test_every_replica_sees_the_dead_letters_of_both(replicas: Collector, postgres_url: str) -> None:
    expected = ["pod-a-0", "pod-a-1", "pod-a-2", "pod-b-0", "pod-b-1", "pod-b-2"]
    for reader in ("pod-a", "pod-b"):
        assert sorted(row["message_id"] for row in listed(postgres_url, reader)) == expected
    rows = listed(postgres_url, "pod-a")
    assert {row["reason"] for row in rows} == {"retries_exhausted"}
    assert all(row["has_credentials"] for row in rows)


def test_a_replay_from_one_replica_delivers_the_dead_letters_of_both(replicas: Collector, postgres_url: str) -> None:
    done = cli(postgres_url, "pod-b", "dead-letters", "replay", "--timeout", "20")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Replayed 6 of 6" in done.stdout
    assert sorted(str(m["messageId"]) for m in replicas.messages()) == [
        "pod-a-0",
        "pod-a-1",
        "pod-a-2",
        "pod-b-0",
        "pod-b-1",
        "pod-b-2",
    ]
    assert {row["state"] for row in listed(postgres_url, "pod-a")} == {"replayed"}
    again = cli(postgres_url, "pod-a", "dead-letters", "replay")
    assert "Replayed 0 of 0" in again.stdout  # pod-a sees them replayed: nothing is sent twice


def test_stats_sums_both_replicas_and_shows_each(replicas: Collector, postgres_url: str) -> None:
    done = cli(postgres_url, "pod-a", "stats", "--json")
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)

    assert stats["backend"] == "postgresql"
    assert stats["counters"][WORKSPACE]["executed"] == 6
    assert stats["counters"][WORKSPACE]["dead_lettered"] == 6
    assert {replica: entry["counters"]["dead_lettered"] for replica, entry in stats["replicas"].items()} == {
        "pod-a": 3,
        "pod-b": 3,
    }
    assert sum(entry["pending"] for entry in stats["dead_letters"]) == 6

    text = cli(postgres_url, "pod-b", "stats").stdout
    lines = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith("pod-")}
    assert set(lines) == {"pod-a", "pod-b"}


def test_privacy_forget_erases_the_user_from_the_shared_store(replicas: Collector, postgres_url: str) -> None:
    done = cli(postgres_url, "pod-b", "privacy", "forget", "--workspace", WORKSPACE, "--user-id", "alice", "--json")

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert sorted(row["message_id"] for row in report["dead_letters"]["removed"]) == ["pod-a-2", "pod-b-2"]
    remaining = listed(postgres_url, "pod-a")
    assert sorted(row["message_id"] for row in remaining) == ["pod-a-0", "pod-a-1", "pod-b-0", "pod-b-1"]
    assert all(row["message"]["userId"] != "alice" for row in remaining)
