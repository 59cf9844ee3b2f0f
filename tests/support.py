"""Constants and small helpers shared by the tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import sys
from typing import Any

WRITE_KEY = "LEAKCANARYqbseg7Hn2Kx9Pw4Rt6Vz"  # recognisable, so leak scans can look for it
WORKSPACE = "ws-test"


def message(message_id: str) -> dict[str, object]:
    return {"type": "track", "event": "Chat Started", "userId": "u", "messageId": message_id}


def add_from_another_process(path: str, worker: int, count: int, go: Any) -> None:
    """Runs in a spawned process: a fresh interpreter, as a second QuickBot worker would be."""
    from quickbot_segment_plugin.deadletters import DeadLetterStore

    store = DeadLetterStore(path, prune_every=50)
    go.wait(60)  # both workers start writing together, not one after the other
    for n in range(count):
        if store.add(f"ws-{worker}", [message(f"p{worker}-{n}")], "retries_exhausted", "", 500, None, "", "") != 1:
            sys.exit(3)
    store.record_counters({(f"ws-{worker}", "executed"): count})
