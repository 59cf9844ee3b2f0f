"""Client lifecycle in the delivery pool: eviction, idle clients, thousands of workspaces,
interpreter exit and os.fork(), against the embedded collector and the real library."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from quickbot_segment_plugin.collector.service import Collector, Fault
from quickbot_segment_plugin.delivery.pool import DeliveryPool, DeliverySettings, Undeliverable

pytestmark = pytest.mark.integration

WRITE_KEY = "LEAKCANARYlfc7Hn2Kx9Pw4Rt6Vz"
# Generous timeouts: a loaded CI machine must not turn a slow answer into a retry or a dead letter.
FAST = DeliverySettings().with_overrides(flush_interval=0.05, timeout=30.0, max_retries=2, close_timeout=30.0)


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector(max_connections=300) as running:
        yield running


class DeadLetters(list[Undeliverable]):
    def __call__(self, item: Undeliverable) -> None:
        self.append(item)

    def message_ids(self, reason: str) -> list[str]:
        return [m["messageId"] for item in list(self) if item.reason == reason for m in item.messages]


def track(n: int = 0, **fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "userId": f"user-{n}",
        "event": "Bot Reached Step",
        "properties": {"step": n},
        **fields,
    }


def received_ids(collector: Collector) -> set[str]:
    return {message["messageId"] for message in collector.messages()}


def wait_until(condition: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


def library_clients_with_key(write_key: str) -> int:
    """segment.analytics.Client objects still alive (referenced by anything) for this key."""
    from segment.analytics import Client

    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, Client) and obj.write_key == write_key)


# --- eviction and idle clients ---------------------------------------------------------------


def test_eviction_keeps_the_cap_delivers_everything_and_drops_every_reference(collector: Collector) -> None:
    dead = DeadLetters()
    key = "LEAKCANARYevict" + uuid.uuid4().hex
    pool = DeliveryPool(FAST.with_overrides(max_clients=3), dead)
    ids = set()
    most = 0
    for round_ in range(3):
        for workspace in range(10):
            message = track(workspace * 10 + round_)
            ids.add(message["messageId"])
            assert pool.enqueue(f"ws-{workspace}", key, collector.url, message).accepted
            most = max(most, pool.live_clients)
    assert most <= 3
    assert collector.wait_for(len(ids), 20)
    assert received_ids(collector) == ids
    assert list(dead) == []
    stats = pool.stats()
    assert stats["clients_created"] >= 10  # ten workspaces went through three slots
    assert stats["clients_evicted_lru"] >= stats["clients_created"] - 3
    # Evicted clients are gone: nothing, an atexit hook included, keeps them alive.
    assert wait_until(lambda: library_clients_with_key(key) <= 3, 10)
    pool.shutdown(5)
    assert wait_until(lambda: library_clients_with_key(key) == 0, 5)


def test_an_evicted_client_that_cannot_flush_reports_its_events_as_client_closed(collector: Collector) -> None:
    dead = DeadLetters()
    collector.inject_faults([Fault(delay=1.0)])  # the first request hangs past the client timeout
    pool = DeliveryPool(FAST.with_overrides(max_clients=1, close_timeout=0.3, timeout=0.6, max_retries=0), dead)
    stuck = [track(n) for n in range(3)]
    for message in stuck:
        pool.enqueue("ws-stuck", WRITE_KEY, collector.url, message)
    assert wait_until(lambda: collector.requests_received >= 1, 5)
    later = track(99)
    assert pool.enqueue("ws-later", WRITE_KEY, collector.url, later).accepted  # waits for the slot
    assert pool.live_clients == 1
    assert wait_until(lambda: later["messageId"] in received_ids(collector), 10)
    assert sorted(dead.message_ids("client_closed")) == sorted(m["messageId"] for m in stuck)
    assert pool.shutdown(5).drained
    assert [item.reason for item in dead] == ["client_closed"]  # reported once, not again on failure


def test_the_waiting_room_is_bounded_too(collector: Collector) -> None:
    dead = DeadLetters()
    collector.inject_faults([Fault(delay=1.0, repeat=5)])
    pool = DeliveryPool(FAST.with_overrides(max_clients=1, max_queue_size=4, close_timeout=5.0), dead)
    pool.enqueue("ws-busy", WRITE_KEY, collector.url, track(0))
    assert wait_until(lambda: collector.requests_received >= 1, 5)
    outcomes = [pool.enqueue(f"ws-{n}", WRITE_KEY, collector.url, track(n)).reason for n in range(10)]
    assert outcomes == [None] * 4 + ["queue_full"] * 6
    assert len(dead.message_ids("queue_full")) == 6
    collector.clear_faults()
    assert pool.shutdown(10).drained
    assert collector.count(distinct=True) == 5


def test_many_threads_many_workspaces_few_clients_every_event_exactly_once(collector: Collector) -> None:
    """Eviction, the waiting room, clients starting and idling, all racing: nothing lost or doubled."""
    dead = DeadLetters()
    pool = DeliveryPool(FAST.with_overrides(max_clients=5, client_idle_seconds=0.05, close_timeout=10.0), dead)
    sent: list[str] = []
    lock = threading.Lock()
    cap_seen: list[int] = []

    def conversations(seed: int) -> None:
        for n in range(300):
            message = track(n)
            workspace = f"ws-{(seed * 7 + n * 13) % 40}"
            assert pool.enqueue(workspace, WRITE_KEY, collector.url, message).accepted
            with lock:
                sent.append(message["messageId"])
                cap_seen.append(pool.live_clients)
            if n % 50 == 0:
                time.sleep(0.06)  # let some clients go idle

    threads = [threading.Thread(target=conversations, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert pool.stats()["clients_evicted_lru"] > 0  # clients were evicted for others while events flowed
    # Idle eviction races in too when the machine lets a client rest 50 ms mid-burst; it always
    # happens once the burst ends, and the accounting below must hold either way.
    assert wait_until(lambda: pool.stats()["clients_evicted_idle"] > 0, 10)
    assert pool.shutdown(30).drained
    assert max(cap_seen) <= 5
    assert list(dead) == []
    assert collector.count() == len(sent) == 2400  # no event sent twice
    assert received_ids(collector) == set(sent)  # and none lost


def test_idle_clients_are_flushed_and_closed(collector: Collector) -> None:
    dead = DeadLetters()
    pool = DeliveryPool(FAST.with_overrides(client_idle_seconds=0.2), dead)
    sent = set()
    for n in range(5):
        message = track(n)
        sent.add(message["messageId"])
        pool.enqueue(f"ws-idle-{n}", WRITE_KEY, collector.url, message)
    assert pool.live_clients == 5
    assert wait_until(lambda: pool.live_clients == 0, 10)
    assert received_ids(collector) == sent
    assert pool.stats()["clients_evicted_idle"] == 5
    again = track(99)  # the workspace comes back: a new client, the same promises
    pool.enqueue("ws-idle-0", WRITE_KEY, collector.url, again)
    assert pool.shutdown(5).drained
    assert again["messageId"] in received_ids(collector)
    assert list(dead) == []


@pytest.mark.slow
def test_5000_workspaces_used_once_keep_threads_bounded_and_shut_down_fast(collector: Collector) -> None:
    dead = DeadLetters()
    cap = 100
    pool = DeliveryPool(FAST.with_overrides(max_clients=cap, flush_interval=0.5), dead)

    def our_threads() -> int:  # the collector holds one thread per open connection
        return threading.active_count() - collector.open_connections

    baseline = our_threads()
    most = baseline
    ids = set()
    for n in range(5000):
        message = track(n)
        ids.add(message["messageId"])
        assert pool.enqueue(f"ws-{n}", WRITE_KEY, collector.url, message).accepted
        most = max(most, our_threads())
    assert pool.live_clients <= cap
    assert collector.wait_for(5000, 120, distinct=True)
    most = max(most, our_threads())
    assert most - baseline <= cap + 2  # one thread per client and the one closer thread
    started = time.monotonic()
    report = pool.shutdown(10)
    assert time.monotonic() - started < 2.0  # 5,000 naive clients take minutes to join at exit
    assert report.drained
    assert received_ids(collector) == ids
    assert list(dead) == []
    assert wait_until(lambda: our_threads() <= baseline, 5)


# --- interpreter exit ------------------------------------------------------------------------------

_EXIT_SCRIPT = textwrap.dedent(
    """
    import atexit, sys
    from segment.analytics import Client
    joins = []
    original_join = Client.join
    def counting_join(self):
        joins.append(1)
        return original_join(self)
    Client.join = counting_join  # any per-client atexit hook would call this at exit

    from quickbot_segment_plugin.delivery import DeliveryPool, DeliverySettings
    url, mode = sys.argv[1], sys.argv[2]
    settings = DeliverySettings().with_overrides(max_clients=3, flush_interval=5.0, exit_timeout=5.0)
    pool = DeliveryPool(settings)
    for n in range(10):
        for i in range(30):
            pool.enqueue(f"ws-{n}", "LEAKCANARYexit" + "C" * 16, url,
                         {"type": "track", "userId": f"u{i}", "event": "E", "messageId": f"m-{n}-{i}"})
    if mode == "shutdown":
        pool.shutdown(5)
    atexit.register(lambda: print("library joins at exit:", len(joins), flush=True))
    """
)


@pytest.mark.parametrize("mode", ["exit", "shutdown"])
def test_exit_flushes_everything_through_one_pool_hook_and_no_client_hooks(collector: Collector, mode: str) -> None:
    # flush_interval=5 s: at exit the events are still queued, so only the pool's own exit
    # hook can send them; the library's hook (one per client) would call Client.join.
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, collector.url, mode],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "library joins at exit: 0" in done.stdout
    assert collector.count(distinct=True) == 300


# --- os.fork() --------------------------------------------------------------------------------------


def _in_child(work: Callable[[], int]) -> int:
    """Fork; run `work` in the child, which exits with its status; return that status."""
    with warnings.catch_warnings():  # Python >= 3.12 warns about forking a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        status = 99
        try:
            status = work()
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_events_enqueued_in_a_forked_child_are_delivered(collector: Collector) -> None:
    pool = DeliveryPool(FAST)
    parent = track(0, userId="parent")
    pool.enqueue("ws-fork", WRITE_KEY, collector.url, parent)  # the parent has a live client and connection
    assert pool.flush(5)

    def child() -> int:
        for n in range(20):
            pool.enqueue("ws-fork", WRITE_KEY, collector.url, track(n, userId="child"))
        drained = pool.shutdown(5).drained
        return 0 if drained and pool.stats()["forks_detected"] == 1 else 1

    assert _in_child(child) == 0
    assert len([m for m in collector.messages() if m["userId"] == "child"]) == 20
    after = track(1, userId="parent")  # the parent's client still works after the fork
    pool.enqueue("ws-fork", WRITE_KEY, collector.url, after)
    assert pool.shutdown(5).drained
    assert {parent["messageId"], after["messageId"]} <= received_ids(collector)
    assert pool.stats()["forks_detected"] == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_the_raw_library_in_a_forked_child_sends_nothing(collector: Collector) -> None:
    """Why the pool rebuilds after a fork: the library's calls succeed and nothing is sent."""
    import atexit

    from segment.analytics import Client

    client = Client(WRITE_KEY, host=collector.url, upload_interval=0.05)
    atexit.unregister(client.join)
    client.track(user_id="parent", event="E")
    client.flush()

    def child() -> int:
        results = [client.track(user_id="child", event="E")[0] for _ in range(20)]
        time.sleep(1.0)  # far longer than upload_interval
        return 0 if all(results) else 1  # every call "succeeded"

    try:
        assert _in_child(child) == 0
        assert [m["userId"] for m in collector.messages()] == ["parent"]
    finally:
        client.join()
