"""Several requests in flight for a deep queue, a queue bounded by bytes, a cap on sender
threads across workspaces, and the order that is kept: through real HTTP on 127.0.0.1 and the
real segment-analytics-python consumer.

The receiver here is a small real HTTP server (not a mock) that answers each request after a
configurable delay in its own thread, so concurrent requests are observable as such.
"""

from __future__ import annotations

import gzip
import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from quickbot_segment_plugin.core.errors import ConfigurationError
from quickbot_segment_plugin.delivery.pool import DeliveryPool, DeliverySettings, Undeliverable

WRITE_KEY = "LEAKCANARYthr4Qm8Ws2Ev6Yb1Nc"
SETTLE = 30.0
FAST = DeliverySettings().with_overrides(flush_interval=0.05, timeout=30.0, max_retries=2, close_timeout=30.0)
BASE_TIME = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


class SlowSegment:
    """Records every batch in arrival order; each answer waits `latency` in its own thread."""

    def __init__(self) -> None:
        self.latency = 0.0
        self.throttle_request: int | None = None  # this request (0-based) gets 429 Retry-After: 1
        self.throttled_at: float | None = None
        self.started: list[float] = []  # monotonic time each request arrived
        self.batches: list[list[dict[str, Any]]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        segment = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                with segment._lock:
                    number = len(segment.started)
                    segment.started.append(time.monotonic())
                    segment.in_flight += 1
                    segment.max_in_flight = max(segment.max_in_flight, segment.in_flight)
                status, extra, reply = b"200 OK", b"", b'{"success":true}'
                try:
                    body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                    if self.headers.get("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    time.sleep(segment.latency)
                    with segment._lock:
                        if number == segment.throttle_request:
                            status, extra = b"429 Too Many Requests", b"Retry-After: 1\r\n"
                            reply = b'{"code":"too_many_requests","message":"slow down"}'
                            segment.throttled_at = time.monotonic()
                        else:
                            segment.batches.append(json.loads(body)["batch"])
                finally:
                    with segment._lock:
                        segment.in_flight -= 1
                self.wfile.write(
                    b"HTTP/1.1 "
                    + status
                    + b"\r\nContent-Type: application/json\r\n"
                    + extra
                    + b"Content-Length: "
                    + str(len(reply)).encode()
                    + b"\r\n\r\n"
                    + reply
                )

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return [message for batch in self.batches for message in batch]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class DeadLetters:
    def __init__(self) -> None:
        self.items: list[Undeliverable] = []
        self._lock = threading.Lock()

    def __call__(self, item: Undeliverable) -> None:
        with self._lock:
            self.items.append(item)

    def message_ids(self) -> set[str]:
        with self._lock:
            return {message["messageId"] for item in self.items for message in item.messages}


@pytest.fixture
def segment() -> Iterator[SlowSegment]:
    server = SlowSegment()
    yield server
    server.close()


@pytest.fixture
def dead() -> DeadLetters:
    return DeadLetters()


def track(seq: int, user: str = "user-1", padding: int = 0) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "timestamp": (BASE_TIME + timedelta(milliseconds=seq)).isoformat(),
        "userId": user,
        "event": "Step Reached",
        "properties": {"seq": seq, "padding": "x" * padding},
    }


def identify(seq: int, user: str) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": str(uuid.uuid4()),
        "timestamp": (BASE_TIME + timedelta(milliseconds=seq)).isoformat(),
        "userId": user,
        "traits": {"seq": seq},
    }


def wait_until(condition: Callable[[], bool], what: str, timeout: float = SETTLE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def sender_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("quickbot-segment-sender[")]


def test_a_deep_queue_is_sent_with_several_requests_in_flight_and_all_arrive(
    segment: SlowSegment, dead: DeadLetters
) -> None:
    segment.latency = 0.2
    pool = DeliveryPool(FAST.with_overrides(batch_size=10, max_in_flight=3), dead)
    try:
        messages = [track(seq) for seq in range(120)]
        for message in messages:
            assert pool.enqueue("deep", WRITE_KEY, segment.url, message).accepted
        assert pool.flush(SETTLE)
        # Senders beyond the first start only while the queue is deep, and end afterwards.
        wait_until(lambda: not sender_threads(), "the extra senders to end once the queue is drained")
        stats = pool.stats()
    finally:
        pool.shutdown(SETTLE)
    assert 2 <= segment.max_in_flight <= 3
    assert stats["extra_senders_started"] >= 1 and stats["extra_senders_now"] == 0
    received = segment.received()
    assert sorted(m["messageId"] for m in received) == sorted(m["messageId"] for m in messages)
    assert dead.items == []


def test_a_shallow_queue_keeps_one_request_in_flight(segment: SlowSegment, dead: DeadLetters) -> None:
    segment.latency = 0.05
    pool = DeliveryPool(FAST.with_overrides(batch_size=50, max_in_flight=4), dead)
    try:
        for seq in range(20):  # never a full batch queued: the queue is never deep
            assert pool.enqueue("shallow", WRITE_KEY, segment.url, track(seq)).accepted
            time.sleep(0.01)
        assert pool.flush(SETTLE)
        stats = pool.stats()
    finally:
        pool.shutdown(SETTLE)
    assert segment.max_in_flight == 1
    assert stats["extra_senders_started"] == 0
    assert [m["properties"]["seq"] for m in segment.received()] == list(range(20))


def test_a_queue_full_by_bytes_dead_letters_with_reason_queue_full_and_never_blocks(
    segment: SlowSegment, dead: DeadLetters, caplog: pytest.LogCaptureFixture
) -> None:
    segment.latency = 0.5  # the first batch holds the only request in flight; the rest queue up
    settings = FAST.with_overrides(batch_size=1, max_in_flight=1, max_queue_size=1000, max_queue_bytes=4000)
    pool = DeliveryPool(settings, dead)
    try:
        first = track(0, padding=900)
        assert pool.enqueue("bytes", WRITE_KEY, segment.url, first).accepted
        wait_until(lambda: segment.in_flight == 1, "the first request to be in flight")
        outcomes = [pool.enqueue("bytes", WRITE_KEY, segment.url, track(seq, padding=900)) for seq in range(1, 11)]
        accepted = [outcome.accepted for outcome in outcomes]
        assert pool.flush(SETTLE)
    finally:
        pool.shutdown(SETTLE)
    # ~1 KB each against a 4,000-byte bound: three fit behind the one in flight, far below 1,000 events.
    assert accepted[:3] == [True, True, True]
    assert accepted[3:] == [False] * 7
    assert {outcome.reason for outcome in outcomes[3:]} == {"queue_full"}
    assert [item.reason for item in dead.items] == ["queue_full"] * 7
    assert all("bytes" in item.detail for item in dead.items)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "quickbot_segment_plugin.delivery" and r.levelname == "WARNING"
    ]
    assert warnings == [
        "Segment workspace bytes: delivery queue full (4000 bytes); events go to the dead-letter store until it drains"
    ]
    delivered = {m["messageId"] for m in segment.received()}
    assert len(delivered) == 4 and not delivered & dead.message_ids()


def test_extra_sender_threads_stay_under_the_pool_wide_cap_with_many_hot_workspaces(
    segment: SlowSegment, dead: DeadLetters
) -> None:
    segment.latency = 0.1
    pool = DeliveryPool(FAST.with_overrides(batch_size=5, max_in_flight=4, max_senders=2), dead)
    most_senders = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal most_senders
        while not stop.is_set():
            most_senders = max(most_senders, len(sender_threads()))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    produced = []
    try:
        for seq in range(300):
            message = track(seq)
            produced.append(message["messageId"])
            assert pool.enqueue(f"hot-{seq % 6}", WRITE_KEY, segment.url, message).accepted
        assert pool.flush(SETTLE)
        stats = pool.stats()
    finally:
        stop.set()
        watcher.join()
        pool.shutdown(SETTLE)
    assert stats["extra_senders_peak"] <= 2 and stats["extra_senders_started"] >= 2
    assert 1 <= most_senders <= 2
    assert segment.max_in_flight <= 6 + 2  # one per workspace, plus the capped extras
    assert sorted(m["messageId"] for m in segment.received()) == sorted(produced)
    assert dead.items == []


def test_order_kept_each_batch_is_a_contiguous_run_in_queue_order_and_timestamps_are_kept(
    segment: SlowSegment, dead: DeadLetters
) -> None:
    """What README promises: batches are contiguous runs of the queue in acceptance order; with
    several in flight they may arrive out of order, and each event keeps its timestamp."""
    segment.latency = 0.1
    pool = DeliveryPool(FAST.with_overrides(batch_size=7, max_in_flight=4), dead)
    sent = []
    try:
        for seq in range(0, 400, 2):
            user = f"user-{seq % 5}"
            for message in (identify(seq, user), track(seq + 1, user)):
                sent.append(message)
                assert pool.enqueue("order", WRITE_KEY, segment.url, message).accepted
        assert pool.flush(SETTLE)
    finally:
        pool.shutdown(SETTLE)
    position = {message["messageId"]: index for index, message in enumerate(sent)}
    runs = []
    for batch in segment.batches:
        indexes = [position[message["messageId"]] for message in batch]
        assert indexes == list(range(indexes[0], indexes[0] + len(indexes)))  # contiguous, in order
        runs.append((indexes[0], indexes[-1]))
    # Together the runs tile the whole stream exactly once.
    covered = sorted(runs)
    assert covered[0][0] == 0 and covered[-1][1] == len(sent) - 1
    assert all(later[0] == earlier[1] + 1 for earlier, later in itertools.pairwise(covered))
    assert segment.max_in_flight >= 2  # the case above is the interesting one
    # Every event keeps the timestamp it was accepted with: an identify is still earlier than
    # the track that followed it, whichever request arrived first.
    by_id = {message["messageId"]: message for message in segment.received()}
    for message in sent:
        stamped = datetime.fromisoformat(by_id[message["messageId"]]["timestamp"].replace("Z", "+00:00"))
        assert stamped == datetime.fromisoformat(message["timestamp"])
    assert dead.items == []


def test_a_batch_stops_below_segments_byte_limit(segment: SlowSegment, dead: DeadLetters) -> None:
    pool = DeliveryPool(FAST.with_overrides(batch_size=2500, max_in_flight=1, flush_interval=0.5), dead)
    try:
        for seq in range(200):  # ~200 x 4 KB: more than one 475 KB batch
            assert pool.enqueue("big", WRITE_KEY, segment.url, track(seq, padding=4000)).accepted
        assert pool.flush(SETTLE)
    finally:
        pool.shutdown(SETTLE)
    assert len(segment.batches) >= 2
    assert all(len(json.dumps({"batch": batch})) < 500_000 for batch in segment.batches)
    assert len(segment.received()) == 200 and dead.items == []


def test_shutdown_with_several_requests_in_flight_accounts_for_every_event(
    segment: SlowSegment, dead: DeadLetters
) -> None:
    segment.latency = 1.0
    pool = DeliveryPool(FAST.with_overrides(batch_size=5, max_in_flight=3, timeout=5.0), dead)
    produced = []
    for seq in range(60):
        message = track(seq)
        produced.append(message["messageId"])
        assert pool.enqueue("cut", WRITE_KEY, segment.url, message).accepted
    wait_until(lambda: segment.in_flight >= 2, "several requests in flight")
    # Usually none; but a burst that lands while the only delivery thread is in a request gets
    # its extra senders when that request ends (one round trip later), after one batch arrived.
    answered_before = {m["messageId"] for m in segment.received()}
    report = pool.shutdown(0.3)
    assert not report.drained and report.undelivered > 0
    assert {item.reason for item in dead.items} == {"shutdown_deadline"}
    # The abandoned requests still get their late answers; in-flight events may be in both sets.
    wait_until(lambda: segment.in_flight == 0, "the late answers")
    delivered = {m["messageId"] for m in segment.received()}
    assert delivered | dead.message_ids() == set(produced)
    assert not answered_before & dead.message_ids()  # delivered before the deadline: never reported
    late = delivered - answered_before
    assert late & dead.message_ids() == late  # only batches that were in flight arrived afterwards


def test_throughput_settings_come_from_the_environment_with_errors_naming_the_variable() -> None:
    tuned = DeliverySettings.from_env(
        {
            "QUICKBOT_SEGMENT_MAX_IN_FLIGHT": "6",
            "QUICKBOT_SEGMENT_MAX_SENDERS": "3",
            "QUICKBOT_SEGMENT_MAX_QUEUE_BYTES": "123456",
            "QUICKBOT_SEGMENT_GZIP_LEVEL": "6",
        }
    )
    assert (tuned.max_in_flight, tuned.max_senders, tuned.max_queue_bytes, tuned.gzip_level) == (6, 3, 123456, 6)
    with pytest.raises(ConfigurationError) as raised:
        DeliverySettings.from_env({"QUICKBOT_SEGMENT_GZIP_LEVEL": "10"})
    assert "QUICKBOT_SEGMENT_GZIP_LEVEL" in str(raised.value)
    with pytest.raises(ConfigurationError) as raised:
        DeliverySettings().with_overrides(max_in_flight=0)
    assert raised.value.field == "max_in_flight"


def test_a_retry_after_pauses_every_sender_of_the_workspace_and_nothing_is_lost(
    segment: SlowSegment, dead: DeadLetters
) -> None:
    """The library keeps 429 state per consumer; with several senders the whole workspace must
    wait: no request starts during the Retry-After second (other than those already leaving)."""
    segment.latency = 0.05
    segment.throttle_request = 2  # a request sent while several are in flight
    pool = DeliveryPool(FAST.with_overrides(batch_size=5, max_in_flight=3), dead)
    produced = []
    try:
        for seq in range(400):  # work left for well over the Retry-After second
            message = track(seq)
            produced.append(message["messageId"])
            assert pool.enqueue("throttled", WRITE_KEY, segment.url, message).accepted
        assert pool.flush(SETTLE)
    finally:
        pool.shutdown(SETTLE)
    assert segment.throttled_at is not None and segment.max_in_flight >= 2
    during_wait = [t for t in segment.started if segment.throttled_at + 0.3 < t < segment.throttled_at + 0.9]
    assert during_wait == []
    assert sorted(m["messageId"] for m in segment.received()) == sorted(produced)
    assert dead.items == []
