"""The delivery promise under fire: every fault the embedded collector can script, driven through
the real block (`SegmentBlock().execute` with a sealed token, the real delivery pool, the real
segment library, real HTTP on 127.0.0.1), and for each one the books must balance.

The identity every case asserts (`assert_accounted`):

    events produced by execute (queued, or failed at enqueue with a messageId)
        == distinct messageIds the collector stored  U  messageIds in the dead-letter store

with the two sets disjoint, except for a batch that was in flight when its request was cut
short (the collector stored it, the client never heard so): that batch is in both sets, and each
case that allows it names exactly which messageIds may be there. The per-workspace counters
(`block.stats()`) must tell the same story.

Why the batching settings: `QUICKBOT_SEGMENT_BATCH_SIZE` is 5, the number of events most cases
execute, and the flush interval is long (1 s), so a batch leaves the moment it is full: those
cases send exactly one batch (exact request counts, exact retry counts) and wait for no interval
(shutdown hurries a partial batch anyway). Each test has its own workspace id, so the
process-wide counters of other tests never mix in. Where a case must hold a request open (a
"slow" Segment), the collector's `latency` is used: it stores the batch first and answers late,
which is exactly what makes an in-flight duplicate possible; `Fault(delay=...)` stores nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import WRITE_KEY

from quickbot_segment_plugin.block import SegmentBlock
from quickbot_segment_plugin.cli import main
from quickbot_segment_plugin.collector.service import Collector, Fault
from quickbot_segment_plugin.deadletters import PATH_ENV, DeadLetter
from quickbot_segment_plugin.delivery.settings import DeliverySettings

EVENTS = 5
DEFAULT_SETTINGS = DeliverySettings()
TRACK = {
    "action": "track",
    "event": "Fault Matrix",
    "userId": "{{User ID}}",
    "properties": [{"key": "step", "value": "{{Step}}"}],
}
COUNTER_NAMES = ("executed", "queued", "failed", "delivered", "dead_lettered")
SETTLE_SECONDS = 10.0  # generous: only a broken pool ever waits this long


# --- leak scan: every test, every log record, every byte of the dead-letter store ----------------


@pytest.fixture(autouse=True)
def no_write_key_anywhere(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Set up before (so torn down after) the block: the scan sees the shutdown's records too."""
    caplog.set_level(logging.DEBUG)  # the root logger: every logger, the library's request bodies included
    store_path = Path(os.environ[PATH_ENV])
    yield
    records = [record for when in ("setup", "call", "teardown") for record in caplog.get_records(when)]
    assert records, "nothing was logged at DEBUG: the scan would prove nothing"
    formatter = logging.Formatter()
    for record in records:
        text = formatter.format(record) + repr(vars(record))
        assert WRITE_KEY not in text, f"write key in a log record of {record.name}"
    for suffix in ("", "-wal", "-shm", "-journal"):
        side = Path(f"{store_path}{suffix}")
        if side.exists():
            assert WRITE_KEY.encode() not in side.read_bytes(), f"write key in {side.name}"


# --- the scenario: one block, one workspace, one sealed token ------------------------------------


@dataclass
class Scenario:
    block: SegmentBlock
    workspace: str
    token: str
    results: list[dict[str, Any]] = field(default_factory=list)

    def execute(self, count: int = EVENTS) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        for _ in range(count):
            step = len(self.results)
            context = {
                "workspace_id": self.workspace,
                "credentials": self.token,
                "execution_id": f"{self.workspace}-{step}",
                "variables": {"User ID": f"user-{step}", "Step": step},
            }
            result = self.block.execute(TRACK, context)
            self.results.append(result)
            batch.append(result)
        return batch

    def produced(self) -> list[str]:
        """messageIds of every execute that made an event: queued, or refused at enqueue (kept)."""
        return [
            result["message_id"]
            for result in self.results
            if result["status"] == "queued" or (result["status"] == "failed" and "message_id" in result)
        ]

    def dead_letters(self) -> dict[str, DeadLetter]:
        rows = self.block.dead_letters().store.list(workspace_id=self.workspace, state="all", limit=100_000)
        by_id = {row.message_id: row for row in rows}
        assert len(by_id) == len(rows)
        return by_id

    def counters(self) -> dict[str, int]:
        counts = self.block.stats()["workspaces"].get(self.workspace, {})
        return {name: counts.get(name, 0) for name in COUNTER_NAMES}

    def another_workspace(self) -> Scenario:
        """A second workspace on the same block (and pool), with its own sealed token."""
        workspace = f"{self.workspace}-2"
        token = self.block.seal_credentials({"writeKey": WRITE_KEY, "region": "us"}, workspace_id=workspace)
        return Scenario(self.block, workspace, token)

    def wait_for_dead_letters(self, count: int) -> dict[str, DeadLetter]:
        wait_until(lambda: len(self.dead_letters()) >= count, f"{count} dead letters")
        return self.dead_letters()


@pytest.fixture
def make_scenario(
    encryption_key: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Scenario]]:
    """Builds the block once the case has set its environment (the pool reads it on first use)."""
    blocks: list[SegmentBlock] = []

    def build(endpoint: str, **env: str) -> Scenario:
        settings = {
            "QUICKBOT_SEGMENT_ENDPOINT": endpoint,
            "QUICKBOT_SEGMENT_MAX_RETRIES": "2",
            "QUICKBOT_SEGMENT_TIMEOUT": "1",
            "QUICKBOT_SEGMENT_FLUSH_INTERVAL": "1",
            "QUICKBOT_SEGMENT_BATCH_SIZE": str(EVENTS),
            "QUICKBOT_SEGMENT_MAX_BACKOFF_SECONDS": "5",
            "QUICKBOT_SEGMENT_MAX_RATE_LIMIT_SECONDS": "10",
            **env,
        }
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        block = SegmentBlock()
        blocks.append(block)
        workspace = f"ws-matrix-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"
        token = block.seal_credentials({"writeKey": WRITE_KEY, "region": "us"}, workspace_id=workspace)
        return Scenario(block, workspace, token)

    yield build
    for block in blocks:
        block.shutdown(5.0)


@pytest.fixture
def segment() -> Iterator[Collector]:
    with Collector() as running:
        yield running


# --- helpers ---------------------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], what: str, timeout: float = SETTLE_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def stored_ids(collector: Collector) -> set[str]:
    return {str(message["messageId"]) for message in collector.messages()}


def assert_accounted(
    scenario: Scenario, stored: set[str], dead: set[str], *, in_flight: frozenset[str] = frozenset()
) -> None:
    """produced == |stored| + |dead| - |in flight|, nothing unaccounted, nothing foreign."""
    produced = scenario.produced()
    assert len(set(produced)) == len(produced), "two executes shared a messageId"
    assert stored | dead == set(produced), "an event is neither delivered nor dead-lettered (or came from nowhere)"
    assert stored & dead == in_flight
    assert len(produced) == len(stored) + len(dead) - len(in_flight)


def assert_counters(scenario: Scenario, **expected: int) -> None:
    assert scenario.counters() == {name: expected.get(name, 0) for name in COUNTER_NAMES}


def reasons(dead: dict[str, DeadLetter]) -> set[tuple[str, int | None, int]]:
    return {(row.reason, row.status, row.attempts) for row in dead.values()}


def all_queued(results: list[dict[str, Any]]) -> bool:
    return all(result["status"] == "queued" for result in results)


# --- 1-6: Segment answers badly ----------------------------------------------------------------


TRANSIENT = [
    pytest.param(Fault(status=500, repeat=2), 500, id="500"),
    pytest.param(Fault(drop=True, repeat=2), None, id="dropped-connection"),
]


@pytest.mark.parametrize(("storm", "answer"), TRANSIENT)
def test_1_a_storm_shorter_than_the_retries_is_delivered_and_nothing_dead_lettered(
    make_scenario: Callable[..., Scenario], segment: Collector, storm: Fault, answer: int | None
) -> None:
    scenario = make_scenario(segment.url, QUICKBOT_SEGMENT_MAX_RETRIES="2")
    segment.inject_faults([storm])  # 3 attempts: fault, fault, 200

    assert all_queued(scenario.execute())
    assert segment.wait_for(EVENTS, timeout=SETTLE_SECONDS, distinct=True)
    scenario.block.shutdown(SETTLE_SECONDS)

    assert [(entry["status"], entry["retry_count"]) for entry in segment.request_log()] == [
        (answer, 0),
        (answer, 1),
        (200, 2),
    ]
    assert segment.count() == EVENTS  # a faulted request stores nothing: each event arrived once
    assert scenario.dead_letters() == {}
    assert_accounted(scenario, stored_ids(segment), set())
    assert_counters(scenario, executed=EVENTS, queued=EVENTS, delivered=EVENTS)


def run_500_storm_past_the_retries(scenario: Scenario, segment: Collector) -> dict[str, DeadLetter]:
    segment.inject_faults([Fault(status=500, repeat=3)])  # every one of the 2 retries + 1 attempts
    assert all_queued(scenario.execute())
    dead = scenario.wait_for_dead_letters(EVENTS)  # before any shutdown: the retries ran out on their own
    assert segment.pending_faults == 0
    assert segment.requests_received == 3
    return dead


def test_2_a_500_storm_longer_than_the_retries_is_dead_lettered_as_retries_exhausted(
    make_scenario: Callable[..., Scenario], segment: Collector
) -> None:
    scenario = make_scenario(segment.url, QUICKBOT_SEGMENT_MAX_RETRIES="2")

    dead = run_500_storm_past_the_retries(scenario, segment)
    scenario.block.shutdown(SETTLE_SECONDS)

    assert reasons(dead) == {("retries_exhausted", 500, 1)}
    assert {row.credentials_token for row in dead.values()} == {scenario.token}  # replayable
    assert segment.count() == 0
    assert segment.requests_received == 3  # nothing more after the shutdown
    assert_accounted(scenario, set(), set(dead))
    assert_counters(scenario, executed=EVENTS, queued=EVENTS, dead_lettered=EVENTS)


def test_3_a_429_with_retry_after_is_waited_out_then_delivered(
    make_scenario: Callable[..., Scenario], segment: Collector
) -> None:
    scenario = make_scenario(segment.url)
    segment.inject_faults([Fault(status=429, retry_after=1)])

    assert all_queued(scenario.execute())
    assert segment.wait_for(EVENTS, timeout=SETTLE_SECONDS, distinct=True)
    scenario.block.shutdown(SETTLE_SECONDS)

    throttled, accepted = segment.request_log()
    assert (throttled["status"], accepted["status"]) == (429, 200)
    # The client waited at least what Retry-After asked (monotonic clock of this same process).
    assert accepted["at"] - throttled["at"] >= 1.0
    assert segment.count() == EVENTS
    assert scenario.dead_letters() == {}
    assert_accounted(scenario, stored_ids(segment), set())
    assert_counters(scenario, executed=EVENTS, queued=EVENTS, delivered=EVENTS)


def test_3b_a_retry_after_beyond_the_rate_limit_budget_is_dead_lettered_not_waited_for(
    make_scenario: Callable[..., Scenario], segment: Collector
) -> None:
    scenario = make_scenario(segment.url, QUICKBOT_SEGMENT_MAX_RATE_LIMIT_SECONDS="1")
    segment.inject_faults([Fault(status=429, retry_after=60)])

    assert all_queued(scenario.execute())
    dead = scenario.wait_for_dead_letters(EVENTS)
    scenario.block.shutdown(SETTLE_SECONDS)

    assert [entry["status"] for entry in segment.request_log()] == [429]  # given up on, not re-sent
    assert reasons(dead) == {("retries_exhausted", None, 1)}
    assert {"rate limit" in row.detail.lower() for row in dead.values()} == {True}
    assert segment.count() == 0
    assert_accounted(scenario, set(), set(dead))
    assert_counters(scenario, executed=EVENTS, queued=EVENTS, dead_lettered=EVENTS)


@pytest.mark.parametrize("status", [400, 413], ids=["400-bad-request", "413-too-large"])
def test_4_5_a_batch_segment_refuses_is_dead_lettered_as_rejected_without_a_retry(
    make_scenario: Callable[..., Scenario], segment: Collector, status: int
) -> None:
    scenario = make_scenario(segment.url, QUICKBOT_SEGMENT_MAX_RETRIES="3")
    segment.inject_faults([Fault(status=status)])

    assert all_queued(scenario.execute())
    dead = scenario.wait_for_dead_letters(EVENTS)
    scenario.block.shutdown(SETTLE_SECONDS)

    assert [(entry["status"], entry["retry_count"]) for entry in segment.request_log()] == [(status, 0)]
    assert reasons(dead) == {("rejected", status, 1)}
    assert segment.count() == 0
    assert_accounted(scenario, set(), set(dead))
    assert_counters(scenario, executed=EVENTS, queued=EVENTS, dead_lettered=EVENTS)


def test_6_an_answer_slower_than_the_timeout_is_retried_and_delivered(
    make_scenario: Callable[..., Scenario], segment: Collector
) -> None:
    scenario = make_scenario(segment.url, QUICKBOT_SEGMENT_TIMEOUT="0.5")
    segment.inject_faults([Fault(delay=3.0)])  # holds the first request far past the client's timeout

    assert all_queued(scenario.execute())
    assert segment.wait_for(EVENTS, timeout=SETTLE_SECONDS, distinct=True)
    scenario.block.shutdown(SETTLE_SECONDS)

    log = segment.request_log()
    assert [(entry["faulted"], entry["retry_count"]) for entry in log] == [(True, 0), (False, 1)]
    assert log[1]["at"] - log[0]["at"] < 3.0  # retried when the client gave up, not when the server answered
    # The stalled request stored nothing, so even the raw count has no duplicate; distinct is the rule.
    assert segment.count() == segment.count(distinct=True) == EVENTS
    assert scenario.dead_letters() == {}
    assert_accounted(scenario, stored_ids(segment), set())
    assert_counters(scenario, executed=EVENTS, queued=EVENTS, delivered=EVENTS)


def test_6b_answers_always_slower_than_the_timeout_are_stored_and_also_dead_lettered(
    make_scenario: Callable[..., Scenario], segment: Collector
) -> None:
    """The in-flight duplicate at its purest: Segment keeps every attempt, the client never hears
    so. The events are stored (twice) AND dead-lettered; a replay is deduplicated by messageId."""
    scenario = make_scenario(segment.url, QUICKBOT_SEGMENT_TIMEOUT="0.5", QUICKBOT_SEGMENT_MAX_RETRIES="1")
    segment.latency = 1.0  # the collector stores each batch, then answers after the client gave up

    assert all_queued(scenario.execute())
    dead = scenario.wait_for_dead_letters(EVENTS)
    scenario.block.shutdown(SETTLE_SECONDS)

    assert [entry["retry_count"] for entry in segment.request_log()] == [0, 1]
    assert reasons(dead) == {("retries_exhausted", None, 1)}
    assert segment.count() == 2 * EVENTS
    stored = stored_ids(segment)
    assert_accounted(scenario, stored, set(dead), in_flight=frozenset(stored))
    assert_counters(scenario, executed=EVENTS, queued=EVENTS, dead_lettered=EVENTS)


# --- 7-8: Segment is unreachable, or goes away mid-request -------------------------------------


def wait_for_a_network_retry(caplog: pytest.LogCaptureFixture) -> None:
    """The library logs each network-error retry at DEBUG: proof an attempt already failed."""
    wait_until(
        lambda: any(r.name == "segment" and "Network error retry" in r.getMessage() for r in caplog.records),
        "the first refused attempt",
    )


def test_7_connection_refused_until_segment_comes_up_is_delivered(
    make_scenario: Callable[..., Scenario], caplog: pytest.LogCaptureFixture
) -> None:
    # A bound socket that never listens: connections are refused, and no one else can take the port.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    scenario = make_scenario(f"http://127.0.0.1:{port}", QUICKBOT_SEGMENT_MAX_RETRIES="3")  # 0 + 0.5 + 1 s of retries

    try:
        assert all_queued(scenario.execute())
        wait_for_a_network_retry(caplog)
    finally:
        holder.close()
    with Collector(port=port) as segment:
        assert segment.wait_for(EVENTS, timeout=SETTLE_SECONDS, distinct=True)
        scenario.block.shutdown(SETTLE_SECONDS)

        log = segment.request_log()
        assert log and log[0]["retry_count"] >= 1  # the first request it saw was already a retry
        assert [entry["status"] for entry in log] == [200]
        assert segment.count() == EVENTS
        assert scenario.dead_letters() == {}
        assert_accounted(scenario, stored_ids(segment), set())
    assert_counters(scenario, executed=EVENTS, queued=EVENTS, delivered=EVENTS)


def kill_mid_batch(scenario: Scenario, segment: Collector) -> None:
    """Stop the collector while it holds a batch it has stored and not yet answered."""
    segment.latency = 2.0  # below the client timeout (3 s): the client is still waiting when we kill it
    assert all_queued(scenario.execute())
    assert segment.wait_for(EVENTS, timeout=SETTLE_SECONDS)  # stored; the answer is 2 s away
    segment.stop()


def test_8a_segment_killed_mid_batch_and_restarted_on_the_same_port_delivers_with_duplicates(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    events_db = tmp_path / "collector.sqlite3"  # survives the restart, like Segment's own storage
    with Collector(db_path=events_db) as first:
        port = first.port
        scenario = make_scenario(first.url, QUICKBOT_SEGMENT_TIMEOUT="3", QUICKBOT_SEGMENT_MAX_RETRIES="3")
        kill_mid_batch(scenario, first)
    with Collector(db_path=events_db, port=port) as segment:
        assert segment.wait_for(2 * EVENTS, timeout=SETTLE_SECONDS)
        scenario.block.shutdown(SETTLE_SECONDS)

        # The killed request was stored and never answered; the retry stored it again.
        assert segment.count() == 2 * EVENTS
        assert segment.count(distinct=True) == EVENTS
        flagged = Counter(row["message_id"] for row in segment.events(limit=100) if row["duplicate"])
        assert flagged == Counter(set(scenario.produced()))  # each messageId flagged duplicate exactly once
        assert [entry["status"] for entry in segment.request_log()] == [200]
        assert scenario.dead_letters() == {}
        assert_accounted(scenario, stored_ids(segment), set())
    # One acknowledged upload: the delivered counter equals the distinct messages, not the copies.
    assert_counters(scenario, executed=EVENTS, queued=EVENTS, delivered=EVENTS)


def test_8b_segment_killed_mid_batch_and_never_back_dead_letters_the_batch_it_had_stored(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    events_db = tmp_path / "collector.sqlite3"
    with Collector(db_path=events_db) as segment:
        scenario = make_scenario(segment.url, QUICKBOT_SEGMENT_TIMEOUT="3", QUICKBOT_SEGMENT_MAX_RETRIES="1")
        kill_mid_batch(scenario, segment)
    dead = scenario.wait_for_dead_letters(EVENTS)  # the one retry is refused: retries exhausted
    scenario.block.shutdown(SETTLE_SECONDS)

    assert reasons(dead) == {("retries_exhausted", None, 1)}
    with Collector(db_path=events_db) as reopened:  # only to read what the dead collector had stored
        stored = stored_ids(reopened)
        assert reopened.count() == EVENTS
    # Stored but never acknowledged: in both sets, which is exactly the batch that was in flight.
    assert_accounted(scenario, stored, set(dead), in_flight=frozenset(scenario.produced()))
    assert_counters(scenario, executed=EVENTS, queued=EVENTS, dead_lettered=EVENTS)


# --- 9-10: the pool's own limits ---------------------------------------------------------------


def test_9_a_burst_into_a_full_queue_fails_fast_and_every_refused_event_is_dead_lettered(
    make_scenario: Callable[..., Scenario], segment: Collector
) -> None:
    queue_size, burst = 2, 12
    scenario = make_scenario(
        segment.url,
        QUICKBOT_SEGMENT_MAX_QUEUE_SIZE=str(queue_size),
        QUICKBOT_SEGMENT_MAX_IN_FLIGHT="1",  # one busy delivery thread: exact queue arithmetic
        QUICKBOT_SEGMENT_BATCH_SIZE="1",
        QUICKBOT_SEGMENT_FLUSH_INTERVAL="0.05",
        QUICKBOT_SEGMENT_TIMEOUT="3",
    )
    segment.latency = 1.0
    assert all_queued(scenario.execute(1))
    assert segment.wait_for(1, timeout=SETTLE_SECONDS)  # the one delivery thread is now busy for 1 s

    results = scenario.execute(burst)
    segment.latency = 0.0
    scenario.block.shutdown(SETTLE_SECONDS)

    refused = [result for result in results if result["status"] == "failed"]
    assert [result["status"] for result in results] == ["queued"] * queue_size + ["failed"] * (burst - queue_size)
    for result in refused:
        assert [entry["details"].get("reason") for entry in result["logs"]] == ["queue_full"]
    dead = scenario.dead_letters()
    assert set(dead) == {result["message_id"] for result in refused}
    assert reasons(dead) == {("queue_full", None, 1)}
    stored = stored_ids(segment)
    assert segment.count() == len(stored) == 1 + queue_size
    assert_accounted(scenario, stored, set(dead))
    assert_counters(
        scenario,
        executed=1 + burst,
        queued=1 + queue_size,
        failed=len(refused),
        delivered=1 + queue_size,
        dead_lettered=len(refused),
    )


def test_9b_a_throttled_batch_that_no_longer_fits_its_queue_is_dead_lettered_as_queue_full(
    make_scenario: Callable[..., Scenario], segment: Collector
) -> None:
    """After a 429 the library puts the batch back on the queue; newer events may have filled it
    meanwhile, and what does not fit is dropped by the library: it must be dead-lettered."""
    # One request in flight: the later events wait in the queue behind the throttled batch
    # (with several, an extra sender would take them while the 429 is on its way).
    scenario = make_scenario(
        segment.url,
        QUICKBOT_SEGMENT_MAX_QUEUE_SIZE=str(EVENTS),
        QUICKBOT_SEGMENT_MAX_IN_FLIGHT="1",
        QUICKBOT_SEGMENT_TIMEOUT="3",
    )
    segment.inject_faults([Fault(status=429, retry_after=1, delay=1.0)])  # answers the 429 a second late
    throttled = scenario.execute()
    assert all_queued(throttled)
    wait_until(lambda: segment.requests_received == 1, "the first batch to be sent")

    later = scenario.execute(EVENTS + 1)  # fills the queue while the 429 is on its way, and one more
    dead = scenario.wait_for_dead_letters(EVENTS + 1)
    assert segment.wait_for(EVENTS, timeout=SETTLE_SECONDS)
    scenario.block.shutdown(SETTLE_SECONDS)

    assert [result["status"] for result in later] == ["queued"] * EVENTS + ["failed"]
    assert set(dead) == {result["message_id"] for result in throttled} | {later[-1]["message_id"]}
    assert reasons(dead) == {("queue_full", None, 1)}
    assert stored_ids(segment) == {result["message_id"] for result in later[:EVENTS]}
    assert [entry["status"] for entry in segment.request_log()] == [429, 200]
    assert_accounted(scenario, stored_ids(segment), set(dead))
    assert_counters(
        scenario,
        executed=2 * EVENTS + 1,
        queued=2 * EVENTS,
        failed=1,
        delivered=EVENTS,
        dead_lettered=EVENTS + 1,
    )


def test_10_a_shutdown_deadline_too_short_dead_letters_the_rest_and_returns_on_time(
    make_scenario: Callable[..., Scenario], segment: Collector
) -> None:
    scenario = make_scenario(segment.url, QUICKBOT_SEGMENT_TIMEOUT="2")
    assert all_queued(scenario.execute())
    wait_until(lambda: scenario.counters()["delivered"] == EVENTS, "the first batch to be acknowledged")
    first_batch = stored_ids(segment)

    segment.latency = 1.0  # from now on each batch is stored, then answered 1 s later
    assert all_queued(scenario.execute(7 * EVENTS))
    assert segment.wait_for(EVENTS + 1, timeout=SETTLE_SECONDS)  # the second batch (and more) in flight
    started = time.monotonic()
    scenario.block.shutdown(0.5)
    elapsed = time.monotonic() - started

    # It waited for the request in flight until the deadline, and not much longer.
    assert 0.5 <= elapsed < 1.0, elapsed
    dead = scenario.dead_letters()
    assert reasons(dead) == {("shutdown_deadline", None, 1)}
    assert set(dead) == set(scenario.produced()) - first_batch
    in_flight = stored_ids(segment) - first_batch
    # A deep queue has up to QUICKBOT_SEGMENT_MAX_IN_FLIGHT requests in flight, whole batches each.
    assert 1 <= len(in_flight) <= DEFAULT_SETTINGS.max_in_flight * EVENTS
    # The abandoned request still gets its (late) 200: wait for it so the counters are final.
    wait_until(lambda: scenario.counters()["delivered"] == len(first_batch | in_flight), "the late answer")
    stored = stored_ids(segment)
    assert segment.count() == len(stored)  # no copies: only what was in flight is in both sets
    assert_accounted(scenario, stored, set(dead), in_flight=frozenset(in_flight))
    assert_counters(
        scenario,
        executed=8 * EVENTS,
        queued=8 * EVENTS,
        delivered=len(stored),
        dead_lettered=len(dead),
    )


def delivery_threads_of(workspace: str) -> list[threading.Thread]:
    """The pool names each delivery thread after its workspace (first 40 characters)."""
    return [thread for thread in threading.enumerate() if thread.name == f"quickbot-segment-delivery[{workspace[:40]}]"]


def test_10c_a_zero_deadline_accounts_for_the_partial_batch_the_delivery_thread_was_collecting(
    make_scenario: Callable[..., Scenario], segment: Collector
) -> None:
    """`shutdown(0)` (or QUICKBOT_SEGMENT_EXIT_TIMEOUT=0) while the delivery thread has taken a
    partial batch off its queue and waits for it to fill: those events are in neither the queue
    nor a request. They must be dead-lettered before shutdown returns (a process exiting then
    keeps nothing else), and not sent after the deadline."""
    scenario = make_scenario(segment.url)  # batches of 5, filled for up to 1 s
    assert all_queued(scenario.execute(3))
    # Let the thread take them. Had it not (a lost race), they would still be queued and reported
    # from the queue: the test would then prove less, never fail wrongly.
    time.sleep(0.1)

    scenario.block.shutdown(0)
    dead = scenario.dead_letters()  # read at once: this is all a process exiting now would keep

    assert reasons(dead) == {("shutdown_deadline", None, 1)}
    assert_accounted(scenario, set(), set(dead))
    wait_until(lambda: not delivery_threads_of(scenario.workspace), "the abandoned delivery thread to end")
    assert segment.requests_received == 0  # nothing went out after the deadline
    assert_counters(scenario, executed=3, queued=3, dead_lettered=3)


def test_10b_a_retry_after_longer_than_the_shutdown_deadline_dead_letters_the_throttled_batch(
    make_scenario: Callable[..., Scenario], segment: Collector
) -> None:
    scenario = make_scenario(segment.url, QUICKBOT_SEGMENT_MAX_RATE_LIMIT_SECONDS="120")  # 30 s fits the budget
    segment.inject_faults([Fault(status=429, retry_after=30)])
    assert all_queued(scenario.execute())
    wait_until(lambda: segment.requests_received == 1, "the 429")

    started = time.monotonic()
    scenario.block.shutdown(0.5)
    elapsed = time.monotonic() - started

    assert 0.5 <= elapsed < 1.0, elapsed  # it did not wait out the 30 s
    dead = scenario.dead_letters()
    assert reasons(dead) == {("shutdown_deadline", None, 1)}
    assert segment.count() == 0
    assert segment.requests_received == 1
    assert_accounted(scenario, set(), set(dead))
    assert_counters(scenario, executed=EVENTS, queued=EVENTS, dead_lettered=EVENTS)


def test_11_a_client_evicted_with_events_still_queued_dead_letters_them_as_client_closed(
    make_scenario: Callable[..., Scenario], segment: Collector
) -> None:
    """One client for two workspaces: the second evicts the first, whose flush cannot finish
    within QUICKBOT_SEGMENT_CLOSE_TIMEOUT because Segment is slow. Two full batches make the
    queue deep, so the second may be in flight too (an extra sender) or still queued: either
    way every event of the busy workspace is dead-lettered, and those in flight also arrive."""
    busy = make_scenario(
        segment.url,
        QUICKBOT_SEGMENT_MAX_CLIENTS="1",
        QUICKBOT_SEGMENT_CLOSE_TIMEOUT="0.3",
        QUICKBOT_SEGMENT_TIMEOUT="3",
    )
    newcomer = busy.another_workspace()
    segment.latency = 1.0
    assert all_queued(busy.execute(2 * EVENTS))
    assert segment.wait_for(EVENTS, timeout=SETTLE_SECONDS)  # the first batch is in flight
    first_batch = stored_ids(segment)

    assert all_queued(newcomer.execute())  # waits for a slot; evicts the busy workspace's client
    dead = busy.wait_for_dead_letters(2 * EVENTS)
    segment.latency = 0.0
    wait_until(lambda: set(newcomer.produced()) <= stored_ids(segment), "the newcomer's events")
    # The collector stores a batch before its late answer: what the busy workspace has stored
    # now is exactly what was in flight when its deadline passed, and each gets its late 200.
    busy_stored = stored_ids(segment) & set(busy.produced())
    wait_until(lambda: busy.counters()["delivered"] == len(busy_stored), "the late answers")
    busy.block.shutdown(SETTLE_SECONDS)

    assert reasons(dead) == {("client_closed", None, 1)}
    assert newcomer.dead_letters() == {}
    stored = stored_ids(segment)
    assert first_batch <= busy_stored and len(busy_stored) in (EVENTS, 2 * EVENTS)  # whole batches
    assert segment.count() == len(stored) == len(busy_stored) + EVENTS
    assert_accounted(busy, busy_stored, set(dead), in_flight=frozenset(busy_stored))
    assert_accounted(newcomer, stored & set(newcomer.produced()), set())
    # The in-flight batches got their 200 after all: delivered and dead-lettered both count them.
    assert_counters(busy, executed=2 * EVENTS, queued=2 * EVENTS, delivered=len(busy_stored), dead_lettered=2 * EVENTS)
    assert_counters(newcomer, executed=EVENTS, queued=EVENTS, delivered=EVENTS)


# --- replay: what case 2 dead-lettered goes out again, exactly once per messageId -----------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_replay_of_the_500_storm_delivers_each_dead_letter_once_and_a_second_replay_only_duplicates(
    make_scenario: Callable[..., Scenario], segment: Collector, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = make_scenario(segment.url, QUICKBOT_SEGMENT_MAX_RETRIES="2")
    dead = run_500_storm_past_the_retries(scenario, segment)
    scenario.block.shutdown(SETTLE_SECONDS)
    segment.clear_faults()  # Segment has recovered
    outputs: list[str] = []

    status, output = run_cli(capsys, "dead-letters", "replay", "--timeout", "10")
    outputs.append(output)
    assert status == 0, output
    assert f"Replayed {EVENTS} of {EVENTS}" in output
    assert stored_ids(segment) == set(dead)
    assert segment.count() == EVENTS
    store = scenario.block.dead_letters().store
    assert (store.count(), store.count(state="replayed")) == (0, EVENTS)

    status, output = run_cli(capsys, "dead-letters", "replay", "--state", "all", "--timeout", "10")
    outputs.append(output)
    assert status == 0, output
    assert f"Replayed {EVENTS} of {EVENTS}" in output
    rows = segment.events(limit=100)
    assert len(rows) == 2 * EVENTS
    assert Counter((row["message_id"], row["duplicate"]) for row in rows) == Counter(
        [(message_id, False) for message_id in dead] + [(message_id, True) for message_id in dead]
    )
    assert segment.count(distinct=True) == EVENTS

    status, output = run_cli(capsys, "dead-letters", "list", "--state", "all", "--json")
    outputs.append(output)
    assert status == 0 and all(message_id in output for message_id in dead)
    for text in outputs:
        assert WRITE_KEY not in text
    # Replayed rows are counted once, however often they are sent again; the block's own numbers stand.
    counts = scenario.block.stats()["workspaces"][scenario.workspace]
    assert counts.get("replayed") == EVENTS
    assert_counters(scenario, executed=EVENTS, queued=EVENTS, dead_lettered=EVENTS)
