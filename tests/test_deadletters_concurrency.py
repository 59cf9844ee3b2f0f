"""Many threads and several worker processes writing one dead-letter file lose nothing."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

# In support.py: a spawned child imports the target by module name, and only tests/ (not the
# repository root) is on its sys.path when the suite runs against the installed wheel.
from support import add_from_another_process, message

from quickbot_segment_plugin.core.counters import Counters
from quickbot_segment_plugin.deadletters import DeadLetterStore

THREADS = 8
ADDS_PER_THREAD = 500
PROCESSES = 2
ADDS_PER_PROCESS = 500


def test_eight_threads_adding_500_each_to_one_store_lose_nothing(tmp_path: Path) -> None:
    counters = Counters()
    store = DeadLetterStore(tmp_path / "dl.sqlite3", counters=counters, prune_every=100)
    start = threading.Barrier(THREADS)
    recorded = [0] * THREADS

    def work(thread: int) -> None:
        start.wait()
        for n in range(ADDS_PER_THREAD):
            # every fifth report is the same event again: it must raise attempts, not add a row
            message_id = f"t{thread}-{n}" if n % 5 else f"t{thread}-again"
            recorded[thread] += store.add(
                f"ws-{thread % 3}", [message(message_id)], "queue_full", "", None, None, "", ""
            )

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(recorded) == THREADS * ADDS_PER_THREAD
    rows = store.list(limit=THREADS * ADDS_PER_THREAD, state="all")
    expected_ids = {f"t{t}-{n}" for t in range(THREADS) for n in range(ADDS_PER_THREAD) if n % 5}
    expected_ids |= {f"t{t}-again" for t in range(THREADS)}
    assert {row.message_id for row in rows} == expected_ids
    assert sum(row.attempts for row in rows) == THREADS * ADDS_PER_THREAD
    assert counters.snapshot()["totals"]["dead_lettered"] == THREADS * ADDS_PER_THREAD
    assert counters.snapshot()["totals"].get("dead_letter_write_failed", 0) == 0


def test_two_processes_adding_to_the_same_file_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "dl.sqlite3"
    context = multiprocessing.get_context("spawn")
    go = context.Barrier(PROCESSES)
    workers = [
        context.Process(target=add_from_another_process, args=(str(path), worker, ADDS_PER_PROCESS, go))
        for worker in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES

    store = DeadLetterStore(path)
    assert store.count() == PROCESSES * ADDS_PER_PROCESS
    for worker in range(PROCESSES):
        ids = {row.message_id for row in store.list(workspace_id=f"ws-{worker}", limit=10_000)}
        assert ids == {f"p{worker}-{n}" for n in range(ADDS_PER_PROCESS)}
    assert store.persisted_counters() == {f"ws-{w}": {"executed": ADDS_PER_PROCESS} for w in range(PROCESSES)}


def add_in_forked_child(store: DeadLetterStore) -> None:
    """A prefork worker (gunicorn --preload) inherits the parent's store object and its connection."""
    if store.add("ws-child", [message(f"child-{n}") for n in range(50)], "queue_full") != 50:
        sys.exit(3)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_writes_through_its_own_connection_and_the_parent_keeps_working(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path / "dl.sqlite3")
    store.add("ws-parent", [message("before-fork")], "queue_full")  # the parent's connection is open
    # A delivery thread of the parent is inside the store at the moment of the fork: the child
    # must not inherit that thread's hold on the store (it would wait for it forever).
    inside, leave = threading.Event(), threading.Event()

    def delivery_thread_mid_write() -> None:
        with store._lock:
            inside.set()
            leave.wait(60)

    busy = threading.Thread(target=delivery_thread_mid_write)
    busy.start()
    inside.wait(10)
    context = multiprocessing.get_context("fork")
    child = context.Process(target=add_in_forked_child, args=(store,))
    try:
        child.start()
        child.join(30)
    finally:
        leave.set()
        busy.join()
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    assert store.add("ws-parent", [message("after-fork")], "queue_full") == 1

    fresh = DeadLetterStore(tmp_path / "dl.sqlite3")
    assert fresh.count(workspace_id="ws-child") == 50
    assert [row.message_id for row in fresh.list(workspace_id="ws-parent")] == ["before-fork", "after-fork"]
    integrity = sqlite3.connect(tmp_path / "dl.sqlite3").execute("PRAGMA integrity_check").fetchone()[0]
    assert integrity == "ok"
