"""The delivery pool against the embedded collector (real HTTP on 127.0.0.1) and the real
segment-analytics-python: what arrives, what is reported when it cannot arrive, shutdown.

Lifecycle (eviction, idle clients, many workspaces, exit, fork) is in
test_delivery_lifecycle.py; the message mapping and the settings in test_delivery_calls.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from quickbot_segment_plugin.collector.service import Collector, Fault
from quickbot_segment_plugin.core.redaction import fingerprint
from quickbot_segment_plugin.delivery.pool import (
    DeliveryError,
    DeliveryPool,
    DeliverySettings,
    EnqueueOutcome,
    Undeliverable,
)

WRITE_KEY = "LEAKCANARYdlv7Hn2Kx9Pw4Rt6Vz"
# Generous timeouts: a loaded CI machine must not turn a slow answer into a retry or a dead letter.
FAST = DeliverySettings().with_overrides(flush_interval=0.05, timeout=30.0, max_retries=2, close_timeout=30.0)


class DeadLetters:
    """Collects what the pool hands to on_undeliverable."""

    def __init__(self) -> None:
        self.items: list[Undeliverable] = []
        self._lock = threading.Lock()

    def __call__(self, item: Undeliverable) -> None:
        with self._lock:
            self.items.append(item)

    def reasons(self) -> list[str]:
        with self._lock:
            return [item.reason for item in self.items]

    def message_ids(self, reason: str | None = None) -> list[str]:
        with self._lock:
            return [m["messageId"] for item in self.items if reason in (None, item.reason) for m in item.messages]


@pytest.fixture
def dead() -> DeadLetters:
    return DeadLetters()


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector(max_connections=300) as running:
        yield running


def track(n: int = 0, **fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "timestamp": "2024-05-01T12:34:56.789+02:00",
        "userId": f"user-{n}",
        "event": "Bot Reached Step",
        "properties": {"step": n},
        "context": {"quickbot": {"botId": "bot-1"}},
        "integrations": {},
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


# --- messages arrive exactly as given ---------------------------------------------------

ALL_TYPES: list[dict[str, Any]] = [
    {"type": "identify", "userId": "u-1", "traits": {"email": "ada@example.com", "plan": "pro", "age": 36}},
    {
        "type": "track",
        "anonymousId": "anon-1",
        "event": "Order Completed",
        "properties": {"revenue": 12.5, "items": [{"sku": "a"}]},
    },
    {
        "type": "page",
        "userId": "u-1",
        "name": "Pricing",
        "category": "Docs",
        "properties": {"category": "Docs", "url": "https://example.com/p"},
    },
    {"type": "screen", "anonymousId": "anon-2", "name": "Home", "properties": {"tab": 2}},
    {"type": "group", "userId": "u-1", "groupId": "g-9", "traits": {"name": "ACME"}},
    {"type": "alias", "previousId": "anon-1", "userId": "u-1"},
]
# What the collector adds, as Segment does, around what the client sent.
COLLECTOR_FIELDS = {"receivedAt", "sentAt", "timestamp", "originalTimestamp"}


def test_every_call_type_arrives_with_exactly_the_fields_given(collector: Collector, dead: DeadLetters) -> None:
    pool = DeliveryPool(FAST, dead)
    sent: dict[str, dict[str, Any]] = {}
    for index, fields in enumerate(ALL_TYPES):
        message = {
            **fields,
            "messageId": f"msg-{index}-{uuid.uuid4()}",
            "timestamp": f"2024-05-01T12:34:56.{100 + index:03d}+05:30",
            "context": {"ip": "0.0.0.0", "quickbot": {"botId": "b", "sessionId": f"s{index}"}},
            "integrations": {"All": True, "Mixpanel": False},
        }
        snapshot = json.loads(json.dumps(message))
        assert pool.enqueue("ws-1", WRITE_KEY, collector.url, message) == EnqueueOutcome(True, None)
        assert message == snapshot, "enqueue must not change the caller's message (context.library)"
        sent[message["messageId"]] = snapshot
    assert pool.shutdown(10).drained
    assert dead.items == []
    received = {m["messageId"]: m for m in collector.messages()}
    assert received.keys() == sent.keys()
    for message_id, original in sent.items():
        got = dict(received[message_id])
        assert got["originalTimestamp"] == original["timestamp"]  # kept to the millisecond, offset included
        got = {k: v for k, v in got.items() if k not in COLLECTOR_FIELDS}
        # The library adds exactly these: its name in context.library and {} for absent
        # traits/properties (its nulls for absent ids are not sent).
        assert got["context"].pop("library") == {"name": "analytics-python", "version": "2.4.0"}
        assert None not in got.values()
        got = {k: v for k, v in got.items() if not (v == {} and k not in original)}
        assert got == {k: v for k, v in original.items() if k != "timestamp"}
    fingerprints = {event["write_key_fingerprint"] for event in collector.events()}
    assert fingerprints == {fingerprint(WRITE_KEY)}


def test_timestamp_is_kept_to_the_millisecond_whatever_its_spelling(collector: Collector) -> None:
    pool = DeliveryPool(FAST)
    spellings = {
        "2024-02-29T23:59:59.999Z": "2024-02-29T23:59:59.999+00:00",
        "2024-02-29T23:59:59.9876543-03:00": "2024-02-29T23:59:59.987-03:00",
        "2024-02-29T23:59:59+01:00": "2024-02-29T23:59:59.000+01:00",
        "2024-02-29T23:59:59.5": "2024-02-29T23:59:59.500+00:00",  # no offset: UTC, never local time
    }
    expected = {}
    for spelling, wire in spellings.items():
        message = track(timestamp=spelling)
        pool.enqueue("ws-ts", WRITE_KEY, collector.url, message)
        expected[message["messageId"]] = wire
    assert pool.shutdown(10).drained
    assert {m["messageId"]: m["originalTimestamp"] for m in collector.messages()} == expected


def test_a_message_the_library_refuses_is_a_clear_error_naming_the_field(collector: Collector) -> None:
    pool = DeliveryPool(FAST)
    cases = {
        "userId": track(userId=""),
        "event": {**track(), "event": None},
        "type": {**track(), "type": "purchase"},
        "traits": track(traits={"a": 1}),  # a track call carries properties, not traits
        "timestamp": track(timestamp="yesterday"),
        "properties": track(properties={"blob": "x" * 40_000}),  # over 32 KB
    }
    try:
        for field, message in cases.items():
            with pytest.raises(DeliveryError) as raised:
                pool.enqueue("ws-err", WRITE_KEY, collector.url, message)
            assert raised.value.field == field
            assert WRITE_KEY not in str(raised.value)
        with pytest.raises(DeliveryError) as raised:
            pool.enqueue("ws-err", "", collector.url, track())
        assert raised.value.field == "write_key"
    finally:
        pool.shutdown(5)
    assert collector.messages() == []


def test_one_client_per_workspace_key_and_endpoint_shared_by_every_caller(collector: Collector) -> None:
    pool = DeliveryPool(FAST)
    other_key = "LEAKCANARYother" + "B" * 16
    errors: list[BaseException] = []

    def conversation() -> None:
        try:
            for i in range(50):
                pool.enqueue("ws-a", WRITE_KEY, collector.url, track(i))
                pool.enqueue("ws-b", WRITE_KEY, collector.url, track(i))
                pool.enqueue("ws-a", other_key, collector.url, track(i))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=conversation) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert pool.live_clients == 3
    assert pool.stats()["clients_created"] == 3
    assert pool.shutdown(10).drained
    assert collector.count(distinct=True) == 8 * 50 * 3
    fingerprints = {event["write_key_fingerprint"] for event in collector.events(limit=10_000)}
    assert fingerprints == {fingerprint(WRITE_KEY), fingerprint(other_key)}


# --- shutdown ----------------------------------------------------------------------------


def test_shutdown_delivers_20000_events_of_200_workspaces_before_returning(
    collector: Collector, dead: DeadLetters
) -> None:
    settings = FAST.with_overrides(batch_size=500, max_clients=250, flush_interval=0.5)
    pool = DeliveryPool(settings, dead)
    ids = set()
    for n in range(20_000):
        message = track(n)
        ids.add(message["messageId"])
        assert pool.enqueue(f"ws-{n % 200}", WRITE_KEY, collector.url, message).accepted
    report = pool.shutdown(10)
    assert report.drained and report.undelivered == 0  # shutdown said so, and it is true:
    assert received_ids(collector) == ids
    assert dead.items == []
    assert pool.live_clients == 0


def test_shutdown_flushes_200_clients_in_parallel_against_a_slow_server(
    collector: Collector, dead: DeadLetters
) -> None:
    # Every answer takes 0.5 s: one client after another would need 100 s, in parallel 0.5 s.
    collector.inject_faults([Fault(status=200, delay=0.5, repeat=400)])
    pool = DeliveryPool(FAST.with_overrides(max_clients=250, flush_interval=5.0), dead)
    for n in range(1000):
        pool.enqueue(f"ws-{n % 200}", WRITE_KEY, collector.url, track(n))
    report = pool.shutdown(15)  # far less than the 100 s a sequential flush needs
    assert report.drained, report
    assert report.clients_closed == 200
    # One batch each; a loaded machine may time one out and retry it (the 200s here store nothing).
    assert collector.requests_received >= 200
    assert dead.items == []


def test_shutdown_against_a_hanging_server_returns_by_the_deadline_and_reports_everything(
    collector: Collector, dead: DeadLetters
) -> None:
    collector.inject_faults([Fault(delay=60, repeat=100)])  # answer nothing for a minute
    pool = DeliveryPool(FAST.with_overrides(batch_size=10, timeout=30.0), dead)
    ids = set()
    for n in range(35):
        message = track(n)
        ids.add(message["messageId"])
        pool.enqueue(f"ws-{n % 3}", WRITE_KEY, collector.url, message)
    assert wait_until(lambda: collector.requests_received >= 3, 5)  # each client is stuck in a request
    started = time.monotonic()
    report = pool.shutdown(1.0)
    assert time.monotonic() - started < 1.5  # the consumers are stuck for 30 s; shutdown does not wait
    assert not report.drained
    assert report.undelivered == 35 and report.abandoned_clients == 3
    assert report.undelivered_by_workspace == {"ws-0": 12, "ws-1": 12, "ws-2": 11}
    assert set(dead.reasons()) == {"shutdown_deadline"}
    assert sorted(dead.message_ids()) == sorted(ids)  # every event exactly once, in flight or queued
    assert {item.write_key_fingerprint for item in dead.items} == {fingerprint(WRITE_KEY)}
    assert all(WRITE_KEY not in repr(item) for item in dead.items)


def test_shutdown_during_a_rate_limit_wait_reports_the_waiting_batch_once(
    collector: Collector, dead: DeadLetters
) -> None:
    collector.inject_faults([Fault(status=429, retry_after=30)])
    pool = DeliveryPool(FAST, dead)
    sent = [track(n) for n in range(4)]
    for message in sent:
        pool.enqueue("ws-429", WRITE_KEY, collector.url, message)
    assert wait_until(lambda: collector.requests_received >= 1, 5)
    time.sleep(0.2)  # the consumer is now waiting out Retry-After with the batch in hand
    report = pool.shutdown(0.5)
    assert report.undelivered == 4
    time.sleep(1.5)  # the consumer notices the stop and hands the batch back: not reported twice
    assert sorted(dead.message_ids()) == sorted(m["messageId"] for m in sent)
    assert collector.messages() == []


def test_after_shutdown_enqueue_refuses_and_reports_until_restarted(collector: Collector, dead: DeadLetters) -> None:
    pool = DeliveryPool(FAST, dead)
    pool.enqueue("ws", WRITE_KEY, collector.url, track(1))
    assert pool.shutdown(5).drained
    assert pool.shutdown(5).already_shut_down
    late = track(2)
    assert pool.enqueue("ws", WRITE_KEY, collector.url, late) == EnqueueOutcome(False, "shutting_down")
    assert dead.message_ids("shutting_down") == [late["messageId"]]  # kept for replay
    pool.restart()
    again = track(3)
    assert pool.enqueue("ws", WRITE_KEY, collector.url, again).accepted
    assert pool.shutdown(5).drained
    assert again["messageId"] in received_ids(collector)
    assert late["messageId"] not in received_ids(collector)


# --- failures ----------------------------------------------------------------------------


def test_a_full_queue_is_reported_never_dropped_silently(collector: Collector, dead: DeadLetters) -> None:
    collector.latency = 0.3  # a slow Segment that still stores what it answers
    pool = DeliveryPool(FAST.with_overrides(max_queue_size=5, batch_size=1), dead)
    sent = [track(n) for n in range(30)]
    outcomes = [pool.enqueue("ws", WRITE_KEY, collector.url, message) for message in sent]
    refused = [message["messageId"] for message, o in zip(sent, outcomes, strict=True) if not o.accepted]
    assert refused
    assert all(o == EnqueueOutcome(False, "queue_full") for o in outcomes if not o.accepted)
    assert dead.message_ids("queue_full") == refused
    collector.latency = 0.0
    assert pool.shutdown(10).drained
    accepted = {m["messageId"] for m, o in zip(sent, outcomes, strict=True) if o.accepted}
    assert received_ids(collector) == accepted  # the rest were delivered


def test_retries_exhausted_reports_each_batch_once_with_all_its_messages(
    collector: Collector, dead: DeadLetters, caplog: pytest.LogCaptureFixture
) -> None:
    collector.inject_faults([Fault(status=500, repeat=100)])
    pool = DeliveryPool(FAST.with_overrides(max_retries=1, batch_size=5, flush_interval=0.2), dead)
    sent = [track(n) for n in range(5)]
    with caplog.at_level(logging.ERROR, logger="quickbot_segment_plugin.delivery"):
        for message in sent:
            pool.enqueue("ws-500", WRITE_KEY, collector.url, message)
        assert wait_until(lambda: dead.items, 10)
        pool.shutdown(5)
    assert [(item.reason, item.status, item.count) for item in dead.items] == [("retries_exhausted", 500, 5)]
    assert sorted(dead.message_ids()) == sorted(m["messageId"] for m in sent)
    assert collector.requests_received == 2  # the first try and one retry
    lines = [record for record in caplog.records if record.name == "quickbot_segment_plugin.delivery"]
    assert len(lines) == 1  # one line per batch, not per event
    line = lines[0].__dict__
    assert (line["workspace"], line["count"], line["reason"], line["status"]) == ("ws-500", 5, "retries_exhausted", 500)


@pytest.mark.parametrize("status", [400, 401, 413, 422])
def test_a_status_segment_does_not_retry_is_rejected_at_once(
    collector: Collector, dead: DeadLetters, status: int
) -> None:
    collector.inject_faults([Fault(status=status)])
    pool = DeliveryPool(FAST.with_overrides(max_retries=5), dead)
    message = track(1)
    pool.enqueue("ws-4xx", WRITE_KEY, collector.url, message)
    assert wait_until(lambda: dead.items, 10)
    pool.shutdown(2)
    assert [(item.reason, item.status) for item in dead.items] == [("rejected", status)]
    assert dead.message_ids() == [message["messageId"]]
    assert collector.requests_received == 1


def test_dead_letters_replay_through_enqueue_unchanged(collector: Collector, dead: DeadLetters) -> None:
    collector.inject_faults([Fault(status=400)])
    pool = DeliveryPool(FAST.with_overrides(batch_size=10, flush_interval=0.2), dead)
    for index, fields in enumerate(ALL_TYPES):
        pool.enqueue("ws-replay", WRITE_KEY, collector.url, {**fields, "messageId": f"replay-{index}"})
    assert wait_until(lambda: len(dead.message_ids()) == len(ALL_TYPES), 10)
    assert dead.reasons() == ["rejected"]
    for item in dead.items:
        for message in item.messages:
            assert None not in message.values()  # the payload as the block reported it
            assert pool.enqueue(item.workspace_id, WRITE_KEY, item.endpoint, message).accepted
    assert pool.shutdown(10).drained
    received = {m["messageId"]: m for m in collector.messages()}
    assert sorted(received) == sorted(dead.message_ids())
    for message in dead.items[0].messages:
        got = {k: v for k, v in received[message["messageId"]].items() if k not in COLLECTOR_FIELDS}
        assert got == {k: v for k, v in message.items() if k != "timestamp"}
        assert received[message["messageId"]]["originalTimestamp"] == message["timestamp"]


def test_transient_errors_are_retried_and_delivered(collector: Collector, dead: DeadLetters) -> None:
    collector.inject_faults([Fault(status=503), Fault(status=429), Fault(drop=True), Fault(status=429, retry_after=1)])
    pool = DeliveryPool(FAST.with_overrides(max_retries=4), dead)
    message = track(1)
    pool.enqueue("ws-retry", WRITE_KEY, collector.url, message)
    assert pool.shutdown(15).drained
    assert received_ids(collector) == {message["messageId"]}
    assert dead.items == []


def test_a_failing_dead_letter_callback_does_not_stop_delivery(collector: Collector) -> None:
    def broken(_: Undeliverable) -> None:
        raise OSError("disk full")

    collector.inject_faults([Fault(status=400)])
    pool = DeliveryPool(FAST.with_overrides(batch_size=1), broken)
    pool.enqueue("ws", WRITE_KEY, collector.url, track(1))
    assert wait_until(lambda: pool.stats()["undeliverable"].get("rejected") == 1, 10)
    later = track(2)
    pool.enqueue("ws", WRITE_KEY, collector.url, later)
    assert pool.shutdown(5).drained
    assert received_ids(collector) == {later["messageId"]}


# --- no write key in any log line --------------------------------------------------------------


def test_the_write_key_never_reaches_a_log_line_even_at_debug(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    key = "LEAKCANARYlog" + uuid.uuid4().hex
    collector.inject_faults([Fault(status=500), Fault(status=400)])
    pool = DeliveryPool(FAST.with_overrides(max_retries=1, batch_size=2), DeadLetters())
    with (
        caplog.at_level(logging.DEBUG, logger="segment"),
        caplog.at_level(logging.DEBUG, logger="quickbot_segment_plugin"),
    ):
        for n in range(4):
            pool.enqueue("ws-log", key, collector.url, track(n))
        pool.shutdown(10)
    texts = [record.getMessage() for record in caplog.records]
    assert any("making request" in text for text in texts), "the library's request-body log was exercised"
    assert any(record.name == "quickbot_segment_plugin.delivery" for record in caplog.records)
    assert key not in caplog.text
    assert all(key not in text for text in texts)
