"""Per-workspace counters: exact under concurrency, bounded, and visible to another process once flushed."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quickbot_segment_plugin.core.counters import (
    COUNTERS,
    OTHER_WORKSPACES,
    STANDARD_COUNTERS,
    CounterFlusher,
    Counters,
)
from quickbot_segment_plugin.deadletters import DeadLetterStore


def test_snapshot_gives_each_workspace_its_own_numbers_and_the_totals() -> None:
    counters = Counters()
    counters.executed("ws-a", 3)
    counters.queued("ws-a", 2)
    counters.dead_lettered("ws-a")
    counters.executed("ws-b")
    counters.inc("ws-b", "rendered_empty_value", 4)

    snapshot = counters.snapshot()

    assert snapshot["workspaces"] == {
        "ws-a": {"executed": 3, "queued": 2, "dead_lettered": 1},
        "ws-b": {"executed": 1, "rendered_empty_value": 4},
    }
    assert snapshot["totals"]["executed"] == 4
    assert snapshot["totals"]["delivered"] == 0  # standard columns are always there
    assert snapshot["totals"]["rendered_empty_value"] == 4
    assert set(STANDARD_COUNTERS) <= set(snapshot["totals"])
    assert counters.get("ws-a", "queued") == 2
    assert counters.get("nowhere", "queued") == 0


def test_a_snapshot_is_a_copy_that_later_increments_do_not_change() -> None:
    counters = Counters()
    counters.delivered("ws", 5)
    before = counters.snapshot()
    counters.delivered("ws", 5)
    assert before["workspaces"]["ws"]["delivered"] == 5
    assert counters.snapshot()["workspaces"]["ws"]["delivered"] == 10


def test_counters_only_grow() -> None:
    with pytest.raises(ValueError, match="only grow"):
        Counters().inc("ws", "queued", -1)


def test_eight_threads_counting_at_once_lose_nothing() -> None:
    counters = Counters()
    start = threading.Barrier(8)

    def work(thread: int) -> None:
        start.wait()
        for i in range(5000):
            counters.queued(f"ws-{i % 4}")
            counters.inc(f"ws-{thread}", "mine")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    snapshot = counters.snapshot()
    assert snapshot["totals"]["queued"] == 8 * 5000
    assert all(snapshot["workspaces"][f"ws-{n}"]["mine"] == 5000 for n in range(8))


def test_workspaces_beyond_the_cap_are_counted_together_not_dropped() -> None:
    counters = Counters(max_workspaces=3)
    for n in range(10):
        counters.executed(f"ws-{n}")
    snapshot = counters.snapshot()
    assert len(snapshot["workspaces"]) == 4
    assert snapshot["workspaces"][OTHER_WORKSPACES]["executed"] == 7
    assert snapshot["totals"]["executed"] == 10


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(STANDARD_COUNTERS), st.integers(0, 50))))
def test_totals_are_the_sum_of_every_increment(increments: list[tuple[str, str, int]]) -> None:
    counters = Counters()
    for workspace, name, n in increments:
        counters.inc(workspace, name, n)
    totals = counters.snapshot()["totals"]
    for name in STANDARD_COUNTERS:
        assert totals[name] == sum(n for _, counted, n in increments if counted == name)


def test_flushed_counters_add_up_across_flushes_and_stores_sharing_a_file(tmp_path: Path) -> None:
    path = tmp_path / "dl.sqlite3"
    worker_a, worker_b = Counters(), Counters()
    flusher_a = CounterFlusher(worker_a, DeadLetterStore(path), interval=60)
    flusher_b = CounterFlusher(worker_b, DeadLetterStore(path), interval=60)

    worker_a.executed("ws", 3)
    assert flusher_a.flush()
    worker_a.executed("ws", 2)  # only the difference is sent next time
    worker_b.executed("ws", 10)
    worker_b.delivered("other", 1)
    assert flusher_a.flush() and flusher_b.flush()
    assert flusher_a.flush()  # nothing new: nothing added

    seen_elsewhere = DeadLetterStore(path).persisted_counters()
    assert seen_elsewhere == {"other": {"delivered": 1}, "ws": {"executed": 15}}


def test_a_reset_is_not_flushed_as_a_negative_and_later_counts_still_arrive(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path / "dl.sqlite3")
    counters = Counters()
    flusher = CounterFlusher(counters, store, interval=60)
    counters.queued("ws", 5)
    flusher.flush()
    counters.reset()
    counters.queued("ws", 2)
    flusher.flush()
    assert store.persisted_counters() == {"ws": {"queued": 7}}


def test_a_sink_that_fails_gets_the_same_increments_again_on_the_next_flush(tmp_path: Path) -> None:
    class Flaky:
        def __init__(self) -> None:
            self.fail = True
            self.received: list[dict[tuple[str, str], int]] = []

        def record_counters(self, deltas: dict[tuple[str, str], int]) -> bool:
            if self.fail:
                raise OSError("disk full")
            self.received.append(dict(deltas))
            return True

    sink = Flaky()
    counters = Counters()
    flusher = CounterFlusher(counters, sink, interval=60)
    counters.failed("ws", 2)
    assert not flusher.flush()
    counters.failed("ws", 1)
    sink.fail = False
    assert flusher.flush()
    assert sink.received == [{("ws", "failed"): 3}]


def test_the_background_flusher_persists_without_being_asked_and_on_stop(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path / "dl.sqlite3")
    counters = Counters()
    flusher = store.start_counter_flusher(counters, interval=0.05)
    counters.executed("ws", 4)
    for _ in range(200):  # polls for the background write; the bound is generous, not a timing claim
        if store.persisted_counters().get("ws", {}).get("executed") == 4:
            break
        time.sleep(0.05)
    assert store.persisted_counters() == {"ws": {"executed": 4}}
    counters.executed("ws", 1)
    flusher.stop()
    assert store.persisted_counters() == {"ws": {"executed": 5}}


def _count_in_forked_child(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    COUNTERS.queued("child-ws")
    queue.put(COUNTERS.snapshot()["workspaces"])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_from_zero_so_the_parents_counts_are_not_reported_twice() -> None:
    COUNTERS.queued("parent-ws", 7)
    try:
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_count_in_forked_child, args=(queue,))
        child.start()
        seen = queue.get(timeout=30)
        child.join(30)
        assert seen == {"child-ws": {"queued": 1}}
        assert COUNTERS.get("parent-ws", "queued") >= 7
    finally:
        COUNTERS.reset()
