"""The counter flusher runs only where a server starts it, never from the block itself.

A demo `run` or a test that uses the block must not write counters into the operator's
dead-letter store; the docs say a server calls `store.start_counter_flusher()` to get them.
"""

from __future__ import annotations

import threading
from typing import Any


def _flushers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "quickbot-segment-counters"]


def test_using_the_block_starts_no_counter_flusher(block: Any, token: str) -> None:
    before = len(_flushers())
    result = block.execute(
        {"action": "track", "event": "Lead Qualified", "userId": "u-1"},
        {"workspace_id": "ws-test", "credentials": token, "variables": {}},
    )
    assert result["status"] == "queued"
    block.pool()
    assert len(_flushers()) == before
    assert block.dead_letters().store.persisted_counters() == {}
