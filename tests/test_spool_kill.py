"""SIGKILL at random moments: every event `execute` answered `queued` still reaches Segment.

A child process (the real plugin, found through its entry point by the reference host) runs
a stream of `execute` calls against the embedded collector, which answers slowly and now and
then fails; after each `queued` it appends the messageId to a file. The test kills it with
SIGKILL at a random moment, at least 20 times, each time starting the next child on the same
spool directory; a last child runs to the end and shuts down. Then:

- every messageId a child wrote was received by the collector, and nothing was dead-lettered;
- copies exist only for what was in flight at a kill: both copies of an event straddle a kill
  (the first arrived before it, the copy after), and no kill accounts for more copies than the
  requests that could be in flight then plus one recovery chunk;
- the spool is empty at the end.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from quickbot_segment_plugin.collector.faults import Fault
from quickbot_segment_plugin.credentials.keyring import ENCRYPTION_KEYS_ENV, KeyRing
from quickbot_segment_plugin.deadletters import DeadLetterStore
from quickbot_segment_plugin.delivery.recovery import CHUNK, status
from quickbot_segment_plugin.delivery.spool_format import FILE_SUFFIX

pytestmark = pytest.mark.slow

KILLS = 20
BATCH_SIZE = 20
MAX_IN_FLIGHT = 4
WORKSPACE = "ws-kill"

CHILD = r"""
import os, sys, time
from quickbot_segment_plugin.host import ReferenceHost
from quickbot_segment_plugin.delivery.recovery import status

run, ids_path, token, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
host = ReferenceHost().load()
block = host.block_type("segment")
out = os.open(ids_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
options = {"action": "track", "event": "Kill Test", "userId": "{{user}}", "properties": [{"key": "n", "value": "{{n}}"}]}
n = 0
while limit < 0 or n < limit:
    if n == 1:
        print("ready", flush=True)  # the pool (and recovery) started: from here on, a kill can land anywhere
    context = {"workspace_id": "ws-kill", "variables": {"user": f"u{n % 7}", "n": n}, "credentials": token,
               "execution_id": f"{run}-{n}"}
    result = block.execute(options, context)
    if result["status"] == "queued":
        os.write(out, (result["message_id"] + "\n").encode())
    n += 1
    time.sleep(0.003)
pool = block.pool()
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    if pool.spool is None:
        break
    orphans = [f for f in status(pool.spool.directory) if f.owner == "orphan"]
    if not orphans and pool.spool.pending == 0:
        break
    time.sleep(0.05)
host.shutdown(20)
print("done", flush=True)
"""


def _start(run: str, ids: Path, token: str, limit: int, env: dict[str, str]) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, run, str(ids), token, str(limit)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    assert line == "ready", f"child {run} did not start: {line!r}"
    return child


def _rows(collector: Any) -> list[dict[str, Any]]:
    """Every stored row, oldest first (the collector hands them out a page at a time)."""
    rows: list[dict[str, Any]] = []
    while True:
        page = collector.events(limit=1000, offset=len(rows))
        if not page:
            return sorted(rows, key=lambda row: row["id"])
        rows += page


def test_sigkill_at_random_moments_loses_no_queued_event(collector: Any, encryption_key: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("KILL_TEST_SEED", str(random.randrange(1_000_000))))
    chance = random.Random(seed)
    spool_dir = tmp_path / "spool"
    dead_letters = tmp_path / "dead-letters.sqlite3"
    ids = tmp_path / "queued-ids.txt"
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("QUICKBOT_")},
        ENCRYPTION_KEYS_ENV: encryption_key,
        "QUICKBOT_SEGMENT_ENDPOINT": collector.url,
        "QUICKBOT_SEGMENT_DEAD_LETTER_PATH": str(dead_letters),
        "QUICKBOT_SEGMENT_SPOOL_DIR": str(spool_dir),
        "QUICKBOT_SEGMENT_FLUSH_INTERVAL": "0.05",
        "QUICKBOT_SEGMENT_BATCH_SIZE": str(BATCH_SIZE),
        "QUICKBOT_SEGMENT_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
        "QUICKBOT_SEGMENT_MAX_RETRIES": "20",
        "QUICKBOT_SEGMENT_MAX_BACKOFF_SECONDS": "60",
        "QUICKBOT_SEGMENT_SPOOL_SEGMENT_BYTES": str(64 * 1024),  # rotation and compaction happen too
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    token = KeyRing.from_env().seal({"writeKey": "killTestWriteKey0123456789", "region": "us"}, WORKSPACE)
    collector.latency = 0.08  # every batch is in flight for a while: kills land mid-request

    watermarks: list[int] = []
    for kill in range(KILLS):
        if kill % 4 == 1:  # a failing Segment: retried batches are in flight longer
            collector.inject_faults([Fault(status=503, repeat=2), Fault(status=500), Fault(drop=True)])
        child = _start(f"r{kill}", ids, token, -1, env)
        time.sleep(chance.uniform(0.05, 0.7))
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        time.sleep(collector.latency + 0.1)  # requests already received finish storing
        rows = _rows(collector)
        watermarks.append(rows[-1]["id"] if rows else 0)

    collector.clear_faults()
    final = _start("final", ids, token, 30, env)
    assert final.stdout is not None
    assert final.stdout.readline().strip() == "done", f"the last child did not finish (seed {seed})"
    assert final.wait(30) == 0

    queued = [line for line in ids.read_text().splitlines() if line]
    rows = _rows(collector)
    received: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        received[row["message_id"]].append(row["id"])
    missing = [message_id for message_id in queued if message_id not in received]
    assert len(queued) >= KILLS * 5, f"too few events were queued to mean anything ({len(queued)})"
    left = [entry.as_dict() for entry in status(spool_dir)]
    letters = DeadLetterStore(dead_letters).counts_by_reason(state="all")
    left.append(letters)
    assert not missing, (
        f"{len(missing)} of {len(queued)} queued events never arrived (seed {seed}): {missing[:5]}; spool: {left}"
    )
    assert DeadLetterStore(dead_letters).count(state="all") == 0, f"events were dead-lettered (seed {seed})"

    copies_per_kill: dict[int, int] = defaultdict(int)
    for message_id, row_ids in received.items():
        for first, again in itertools.pairwise(row_ids):
            straddled = [k for k, mark in enumerate(watermarks) if first <= mark < again]
            assert straddled, f"{message_id} arrived twice without a kill in between (seed {seed})"
            copies_per_kill[straddled[0]] += 1
    for kill, copies in copies_per_kill.items():
        assert copies <= MAX_IN_FLIGHT * BATCH_SIZE + CHUNK, (
            f"kill {kill} left {copies} copies: more than could have been in flight (seed {seed})"
        )
    print(
        f"seed {seed}: {len(queued)} queued, {len(received)} distinct received, {len(rows) - len(received)} copies, "
        f"copies per kill {dict(copies_per_kill)}"
    )
    assert not [path.name for path in spool_dir.iterdir() if path.name.endswith(FILE_SUFFIX)], (
        "delivered events were left in the spool"
    )
