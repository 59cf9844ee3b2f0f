"""`replay_dead_letters`, the replay as a Python API: the rows of a store sent again through a real
`DeliveryPool` to the embedded collector over real HTTP, marked by what became of each (replayed,
failed again, in doubt, skipped), under the store's replay lock. Once per backend."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import WORKSPACE, WRITE_KEY

from quickbot_segment_plugin.collector.service import Collector, Fault
from quickbot_segment_plugin.core.counters import Counters
from quickbot_segment_plugin.core.redaction import fingerprint
from quickbot_segment_plugin.core.undeliverable import Undeliverable
from quickbot_segment_plugin.credentials.keyring import KeyRing
from quickbot_segment_plugin.deadletters import (
    DeadLetterFilter,
    DeadLetterStore,
    ReplayInProgress,
    ReplayPool,
    dedup_warning,
    replay_dead_letters,
    replay_lock,
)
from quickbot_segment_plugin.delivery.pool import DeliveryPool, DeliverySettings

pytestmark = pytest.mark.integration

EVENTS = 4


@pytest.fixture
def segment(local_segment: Collector, monkeypatch: pytest.MonkeyPatch) -> Collector:
    monkeypatch.setenv("QUICKBOT_SEGMENT_MAX_RETRIES", "0")
    return local_segment


@pytest.fixture
def store(segment: Collector, store_location: str) -> Iterator[DeadLetterStore]:
    opened = DeadLetterStore(store_location, counters=Counters())
    yield opened
    opened.close()


class RecordingPool:
    """The real pool, watched: which rows were in doubt in the store when each was handed over."""

    def __init__(self, store: DeadLetterStore, on_undeliverable: Callable[[Undeliverable], None]) -> None:
        self.pool = DeliveryPool(DeliverySettings.from_env(), on_undeliverable=on_undeliverable)
        self.settings = self.pool.settings
        self.store = store
        self.in_doubt_when_enqueued: list[bool] = []
        self.flushes = 0
        self.shut_down = False

    def enqueue(self, workspace_id: str, write_key: str, endpoint: str, message: Mapping[str, Any]) -> object:
        rows = [row for row in self.store.list(state="all", limit=1000) if row.message_id == message["messageId"]]
        self.in_doubt_when_enqueued.append(rows[0].in_doubt_since is not None)
        return self.pool.enqueue(workspace_id, write_key, endpoint, message)

    def flush(self, timeout: float) -> object:
        self.flushes += 1
        return self.pool.flush(timeout)

    def shutdown(self, timeout: float) -> object:
        self.shut_down = True
        return self.pool.shutdown(timeout)


class Pools:
    """A pool factory that keeps what it made, so a test can look at it afterwards."""

    def __init__(self, store: DeadLetterStore) -> None:
        self.store = store
        self.made: list[RecordingPool] = []

    def __call__(self, on_undeliverable: Callable[[Undeliverable], None]) -> ReplayPool:
        pool = RecordingPool(self.store, on_undeliverable)
        self.made.append(pool)
        return pool


def real_pool(on_undeliverable: Callable[[Undeliverable], None]) -> DeliveryPool:
    return DeliveryPool(DeliverySettings.from_env(), on_undeliverable=on_undeliverable)


def fill(
    store: DeadLetterStore,
    segment: Collector,
    count: int = EVENTS,
    prefix: str = "order",
    *,
    workspace: str = WORKSPACE,
    sealed: bool = True,
) -> None:
    token = KeyRing.from_env().seal({"writeKey": WRITE_KEY, "region": "us"}, workspace) if sealed else None
    messages = [
        {"type": "track", "event": "Order Completed", "userId": f"user-{n}", "messageId": f"{prefix}-{n}"}
        for n in range(count)
    ]
    store.add(
        workspace,
        messages,
        "retries_exhausted",
        credentials_token=token,
        write_key_fingerprint=fingerprint(WRITE_KEY),
        endpoint=segment.url,
    )


def received(segment: Collector) -> list[str]:
    return sorted(str(message["messageId"]) for message in segment.messages())


def test_every_row_is_delivered_with_its_messageid_and_marked_replayed(
    segment: Collector, store: DeadLetterStore
) -> None:
    fill(store, segment)
    pools = Pools(store)

    report = replay_dead_letters(store, pools, timeout=10)

    assert report.as_dict() == {
        "attempted": EVENTS,
        "replayed": EVENTS,
        "failed": 0,
        "skipped": 0,
        "in_doubt": 0,
        "beyond_dedup_window": 0,
        "problems": [],
    }
    assert received(segment) == [f"order-{n}" for n in range(EVENTS)]
    assert store.count() == 0 and store.count(state="replayed") == EVENTS
    assert store.tallies() == {WORKSPACE: {"replayed": EVENTS}}
    (pool,) = pools.made
    assert pool.in_doubt_when_enqueued == [True] * EVENTS  # marked before being handed over
    assert pool.shut_down
    assert store.list(state="in_doubt") == []


def test_rows_go_in_chunks_no_larger_than_the_pools_queue(
    segment: Collector, store: DeadLetterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUICKBOT_SEGMENT_MAX_QUEUE_SIZE", "2")
    fill(store, segment, count=5)
    pools = Pools(store)

    report = replay_dead_letters(store, pools, timeout=10)

    assert (report.attempted, report.replayed) == (5, 5)
    assert pools.made[0].flushes == 3  # 2 + 2 + 1
    assert received(segment) == [f"order-{n}" for n in range(5)]


def test_rows_segment_refuses_again_stay_pending_with_one_more_attempt(
    segment: Collector, store: DeadLetterStore
) -> None:
    fill(store, segment)
    segment.inject_faults([Fault(status=500, repeat=50)])

    report = replay_dead_letters(store, real_pool, timeout=10)

    assert (report.attempted, report.replayed, report.failed, report.in_doubt) == (EVENTS, 0, EVENTS, 0)
    assert sum("failed again: retries_exhausted" in problem for problem in report.problems) == EVENTS
    assert {(row.attempts, row.reason, row.status, row.replayed_at) for row in store.list()} == {
        (2, "retries_exhausted", 500, None)
    }
    assert segment.count() == 0


def test_rows_in_flight_at_the_deadline_stay_in_doubt_until_asked_for(
    segment: Collector, store: DeadLetterStore
) -> None:
    fill(store, segment)
    segment.inject_faults([Fault(delay=3.0, drop=True, repeat=1)])  # no answer before the replay gives up

    report = replay_dead_letters(store, real_pool, timeout=1)

    assert (report.replayed, report.failed, report.in_doubt) == (0, 0, EVENTS)
    assert all("in doubt" in problem for problem in report.problems)
    assert store.count(state="in_doubt") == EVENTS
    assert {row.attempts for row in store.list(state="in_doubt")} == {1}

    again = replay_dead_letters(store, real_pool, timeout=10)
    assert again.attempted == 0
    time.sleep(0.3)
    assert received(segment) == []  # nothing resent without asking

    resent = replay_dead_letters(store, real_pool, timeout=10, include_in_doubt=True)

    assert (resent.attempted, resent.replayed) == (EVENTS, EVENTS)
    assert received(segment) == [f"order-{n}" for n in range(EVENTS)]


def test_rows_without_credentials_are_skipped_and_kept(segment: Collector, store: DeadLetterStore) -> None:
    fill(store, segment, count=2, sealed=False)
    opened: list[bool] = []

    def keyring() -> KeyRing:
        opened.append(True)
        return KeyRing.from_env()

    report = replay_dead_letters(store, real_pool, timeout=10, keyring_factory=keyring)

    assert (report.attempted, report.skipped, report.replayed) == (2, 2, 0)
    assert all("no credentials token was recorded" in problem for problem in report.problems)
    assert opened == []  # no key needed for rows with nothing to open
    assert {(row.attempts, row.in_doubt_since) for row in store.list()} == {(1, None)}


def test_only_the_selected_rows_are_replayed(segment: Collector, store: DeadLetterStore) -> None:
    fill(store, segment, count=2, prefix="mine")
    fill(store, segment, count=2, prefix="theirs", workspace="ws_other")

    by_keyword = replay_dead_letters(store, real_pool, timeout=10, workspace_id=WORKSPACE)
    first_other = store.list(workspace_id="ws_other")[0]
    by_filter = replay_dead_letters(store, real_pool, DeadLetterFilter(ids=[first_other.id], state="all"), timeout=10)

    assert (by_keyword.replayed, by_filter.replayed) == (2, 1)
    assert received(segment) == ["mine-0", "mine-1", "theirs-0"]
    assert [row.message_id for row in store.list()] == ["theirs-1"]


def test_a_replay_refuses_while_another_holds_the_lock(segment: Collector, store: DeadLetterStore) -> None:
    fill(store, segment, count=1)
    pools = Pools(store)

    with replay_lock(store, "another replica"), pytest.raises(ReplayInProgress, match="another replay of"):
        replay_dead_letters(store, pools, timeout=10)

    assert pools.made == []
    assert store.count() == 1 and received(segment) == []


def test_rows_older_than_the_deduplication_window_are_counted(segment: Collector, store_location: str) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=30)
    old = DeadLetterStore(store_location, counters=Counters(), clock=lambda: long_ago)
    fill(old, segment, count=2, prefix="old")
    old.close()
    store = DeadLetterStore(store_location, counters=Counters())
    fill(store, segment, count=1, prefix="new")

    report = replay_dead_letters(store, real_pool, timeout=10)
    store.close()

    assert (report.replayed, report.beyond_dedup_window) == (3, 2)
    assert dedup_warning(report.beyond_dedup_window).startswith(
        "warning: 2 replayed row(s) first failed more than 24 hours ago"
    )


def test_a_store_that_does_not_exist_is_not_created_and_no_pool_is_made(tmp_path: Path) -> None:
    missing = tmp_path / "typo.sqlite3"
    store = DeadLetterStore(missing, counters=Counters())
    pools = Pools(store)

    report = replay_dead_letters(store, pools)

    assert report.attempted == 0 and pools.made == []
    assert not missing.exists()
