"""Segment's own Node library bursts events at the collector: none refused, retried or doubled.

analytics-node sends a burst as parallel batches of 15 events, one connection each, so
2,000 events arrive over about 134 connections at once: the collector's default
connection cap and backlog are sized for this. Runs the pinned library from
tests/node/package-lock.json (installed by .ci/node-deps.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from quickbot_segment_plugin.collector.service import Collector

NODE_DIR = Path(__file__).parent / "node"
# Read at import: the test environment removes QUICKBOT_* variables before each test.
NODE_MODULES = Path(os.environ.get("QUICKBOT_TEST_NODE_MODULES") or NODE_DIR / "node_modules")
EVENTS = 2000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("node") is None or shutil.which("npm") is None,
        reason="node and npm are not installed; CI installs them and runs .ci/node-deps.sh",
    ),
]


def _installed_library() -> Path:
    if not (NODE_MODULES / "@segment" / "analytics-node").is_dir():
        # Same as CI: `npm ci` from the committed lock file.
        subprocess.run([str(NODE_DIR.parent.parent / ".ci" / "node-deps.sh")], check=True, timeout=300)
    return NODE_MODULES


def test_analytics_node_burst_arrives_once_with_no_503_and_no_retry() -> None:
    modules = _installed_library()
    with Collector() as collector:
        environment = {
            **os.environ,
            "COLLECTOR_URL": collector.url,
            "EVENTS": str(EVENTS),
            "NODE_PATH": str(modules),
        }
        finished = subprocess.run(
            ["node", str(NODE_DIR / "burst.cjs")],
            capture_output=True,
            text=True,
            env=environment,
            timeout=180,
            check=False,
        )
        assert finished.returncode == 0, finished.stderr
        seen = json.loads(finished.stdout.strip().splitlines()[-1])
        log = collector.request_log()
        stored = [event["message_id"] for event in collector.events(limit=1000)]
        stored += [event["message_id"] for event in collector.events(limit=1000, offset=1000)]
        total = collector.count()

    assert seen["errors"] == []
    assert Counter(entry["status"] for entry in log) == Counter({200: len(log)})  # no 503, no timeout
    assert [entry for entry in log if entry["retry_count"]] == []
    assert seen["requests"] == len(log)  # the library made no request the collector did not answer
    assert total == EVENTS
    duplicates = [message_id for message_id, times in Counter(stored).items() if times > 1]
    assert duplicates == []
    assert set(stored) == {f"burst-{index}" for index in range(EVENTS)}
