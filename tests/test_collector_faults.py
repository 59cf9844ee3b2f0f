"""Segment's 400s and scripted outages, as segment-analytics-python experiences them.

Each case checks what a plugin user would notice: whether the library retried, whether
`on_error` fired, and whether the events arrived exactly once.
"""

from __future__ import annotations

import atexit
import base64
import json
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import requests
from segment.analytics import Client
from segment.analytics.request import APIError
from segment.analytics.request import post as library_post

from quickbot_segment_plugin.collector.faults import FaultScript
from quickbot_segment_plugin.collector.http import Request, is_loopback
from quickbot_segment_plugin.collector.ingest import MAX_BATCH_BYTES, MAX_EVENT_BYTES
from quickbot_segment_plugin.collector.routes import CollectorApp
from quickbot_segment_plugin.collector.service import Collector, Fault, FaultError
from quickbot_segment_plugin.collector.store import EventStore

WRITE_KEY = "wk_test_faults_91Zc"


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector() as running:
        yield running


class Recorder:
    """The client's `on_error`, remembering what the library gave up on."""

    def __init__(self) -> None:
        self.errors: list[Exception] = []
        self.batches: list[list[dict[str, Any]]] = []

    def __call__(self, error: Exception, batch: list[dict[str, Any]]) -> None:
        self.errors.append(error)
        self.batches.append(batch)

    @property
    def statuses(self) -> list[Any]:
        return [getattr(error, "status", type(error).__name__) for error in self.errors]


@pytest.fixture
def make_client(collector: Collector) -> Iterator[Callable[..., tuple[Client, Recorder]]]:
    clients: list[Client] = []

    def make(**options: Any) -> tuple[Client, Recorder]:
        recorder = Recorder()
        options.setdefault("max_retries", 3)
        options.setdefault("timeout", 2)
        options.setdefault("upload_interval", 0.05)
        client = Client(options.pop("write_key", WRITE_KEY), host=collector.url, on_error=recorder, **options)
        clients.append(client)
        return client, recorder

    yield make
    for client in clients:
        client.shutdown()
        atexit.unregister(client.join)


def raw_post(collector: Collector, path: str, body: bytes) -> requests.Response:
    return requests.post(collector.url + path, data=body, headers={"Content-Type": "application/json"}, timeout=5)


def padded_body(target_size: int, items: list[dict[str, Any]]) -> bytes:
    """A batch body of exactly `target_size` bytes (padding in an ignored top-level key)."""
    base = {"writeKey": WRITE_KEY, "batch": items, "pad": ""}
    missing = target_size - len(json.dumps(base).encode())
    assert missing >= 0
    base["pad"] = "p" * missing
    body = json.dumps(base).encode()
    assert len(body) == target_size
    return body


def event_of_size(size: int, message_id: str) -> dict[str, Any]:
    """A track event whose compact JSON is exactly `size` bytes."""
    event = {"type": "track", "userId": "u", "event": "Big", "messageId": message_id, "properties": {"blob": ""}}
    missing = size - len(json.dumps(event, separators=(",", ":")).encode())
    event["properties"]["blob"] = "b" * missing
    assert len(json.dumps(event, separators=(",", ":")).encode()) == size
    return event


# --- Segment's 400s ------------------------------------------------------------------------------


def test_malformed_json_is_a_400_the_library_does_not_retry(
    collector: Collector, make_client: Callable[..., tuple[Client, Recorder]]
) -> None:
    # Python's json.dumps writes NaN, which is not JSON: Segment rejects the whole batch.
    client, recorder = make_client()
    client.track("u", "Broken", {"ratio": float("nan")})
    client.flush()

    assert recorder.statuses == [400]
    assert collector.requests_received == 1
    assert collector.count() == 0
    assert collector.rejections()[0]["code"] == "invalid_json"


def test_an_event_over_32_kb_is_a_400_and_one_at_the_limit_is_accepted(collector: Collector) -> None:
    with pytest.raises(APIError) as rejected:
        library_post(WRITE_KEY, host=collector.url, batch=[event_of_size(MAX_EVENT_BYTES + 1, "too-big")])
    at_limit = raw_post(
        collector,
        "/v1/batch",
        json.dumps({"writeKey": WRITE_KEY, "batch": [event_of_size(MAX_EVENT_BYTES, "ok")]}).encode(),
    )
    single_call = raw_post(
        collector, "/v1/track", json.dumps({**event_of_size(MAX_EVENT_BYTES, "single"), "writeKey": WRITE_KEY}).encode()
    )

    assert rejected.value.status == 400
    assert rejected.value.code == "payload_too_large"
    assert at_limit.status_code == 200
    assert single_call.status_code == 400  # a single call's whole body must fit in 32 KB
    assert [row["message_id"] for row in collector.events()] == ["ok"]


def test_a_batch_over_500_kb_is_a_400_and_one_at_the_limit_is_accepted(collector: Collector) -> None:
    items = [event_of_size(1000, f"m{i}") for i in range(520)]
    with pytest.raises(APIError) as rejected:
        library_post(WRITE_KEY, host=collector.url, batch=items)
    over = raw_post(collector, "/v1/batch", padded_body(MAX_BATCH_BYTES + 1, items[:400]))
    at_limit = raw_post(collector, "/v1/batch", padded_body(MAX_BATCH_BYTES, items[:400]))

    assert rejected.value.status == 400
    assert over.status_code == 400
    assert at_limit.status_code == 200
    assert collector.count() == 400


# --- scripted faults -----------------------------------------------------------------------------


def test_500_and_503_are_retried_and_the_events_arrive_once(
    collector: Collector, make_client: Callable[..., tuple[Client, Recorder]]
) -> None:
    client, recorder = make_client()
    collector.inject_faults([Fault(status=500), Fault(status=503)])
    for i in range(3):
        client.track("u", "Retried", {"i": i})
    client.flush()

    assert recorder.errors == []
    assert collector.count() == 3 == collector.count(distinct=True)
    log = collector.request_log()
    assert [(entry["status"], entry["faulted"], entry["retry_count"]) for entry in log] == [
        (500, True, 0),
        (503, True, 1),
        (200, False, 2),
    ]


def test_429_with_retry_after_is_honoured(
    collector: Collector, make_client: Callable[..., tuple[Client, Recorder]]
) -> None:
    client, recorder = make_client()
    collector.inject_faults([Fault(status=429, retry_after=1)])
    client.track("u", "Rate limited")
    client.flush()

    limited, accepted = collector.request_log()
    assert limited["status"] == 429
    assert accepted["status"] == 200
    assert accepted["at"] - limited["at"] >= 0.95  # the client waited out Retry-After
    assert recorder.errors == []
    assert collector.count() == 1


@pytest.mark.parametrize("status", [400, 413])
def test_400_and_413_are_not_retried_and_reach_on_error(
    status: int, collector: Collector, make_client: Callable[..., tuple[Client, Recorder]]
) -> None:
    client, recorder = make_client()
    collector.inject_faults([Fault(status=status)])
    client.track("u", "Refused")
    client.flush()
    client.track("u", "After the fault")
    client.flush()

    assert recorder.statuses == [status]
    assert recorder.batches[0][0]["event"] == "Refused"
    assert collector.requests_received == 2
    assert [row["event"] for row in collector.events()] == ["After the fault"]


def test_a_delay_beyond_the_client_timeout_is_retried(
    collector: Collector, make_client: Callable[..., tuple[Client, Recorder]]
) -> None:
    client, recorder = make_client(timeout=0.3)
    collector.inject_faults([Fault(delay=20.0)])
    client.track("u", "Slow")
    client.flush()

    assert recorder.errors == []
    assert collector.requests_received == 2
    assert collector.count() == 1


def test_a_dropped_connection_is_retried(
    collector: Collector, make_client: Callable[..., tuple[Client, Recorder]]
) -> None:
    client, recorder = make_client()
    collector.inject_faults([Fault(drop=True)])
    client.track("u", "Dropped once")
    client.flush()

    assert recorder.errors == []
    assert [entry["status"] for entry in collector.request_log()] == [None, 200]
    assert collector.count() == 1


def test_repeat_faults_the_next_n_requests_until_the_client_gives_up(
    collector: Collector, make_client: Callable[..., tuple[Client, Recorder]]
) -> None:
    client, recorder = make_client(max_retries=2)
    collector.inject_faults([Fault(status=500, repeat=3)])
    assert collector.pending_faults == 3
    client.track("u", "Lost to the outage")
    client.flush()
    client.track("u", "After the outage")
    client.flush()

    assert recorder.statuses == [500]
    assert collector.pending_faults == 0
    assert [row["event"] for row in collector.events()] == ["After the outage"]


def test_a_200_fault_acknowledges_and_drops_like_an_unknown_write_key(
    collector: Collector, make_client: Callable[..., tuple[Client, Recorder]]
) -> None:
    client, recorder = make_client()
    collector.inject_faults([Fault(status=200)])
    client.track("u", "Vanished")
    client.flush()

    assert recorder.errors == []
    assert collector.requests_received == 1
    assert collector.count() == 0


def test_clear_faults_restores_normal_behaviour(
    collector: Collector, make_client: Callable[..., tuple[Client, Recorder]]
) -> None:
    client, recorder = make_client()
    collector.inject_faults([Fault(status=400, repeat=5)])
    collector.clear_faults()
    client.track("u", "Fine")
    client.flush()

    assert recorder.errors == []
    assert collector.count() == 1


def test_fault_status_body_and_headers_reach_the_wire(collector: Collector) -> None:
    collector.inject_faults(
        [
            Fault(status=429, retry_after=7, body={"code": "too_many", "message": "slow down"}),
            Fault(status=502, body="bad gateway"),
        ]
    )
    limited = raw_post(collector, "/v1/batch", b"{}")
    gateway = raw_post(collector, "/v1/batch", b"{}")

    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "7"
    assert limited.json() == {"code": "too_many", "message": "slow down"}
    assert gateway.status_code == 502
    assert gateway.text == "bad gateway"


# --- the admin endpoint --------------------------------------------------------------------------


def test_faults_can_be_scripted_over_http_from_loopback(
    collector: Collector, make_client: Callable[..., tuple[Client, Recorder]]
) -> None:
    script = [{"status": 503, "repeat": 2}, {"status": 429, "retry_after": 1}]
    added = requests.post(collector.url + "/_admin/faults", json=script, timeout=5)
    listed = requests.get(collector.url + "/_admin/faults", timeout=5).json()
    invalid = requests.post(collector.url + "/_admin/faults", json=[{"status": 500}, {"status": "soon"}], timeout=5)
    unknown = requests.post(collector.url + "/_admin/faults", json=[{"code": 500}], timeout=5)

    assert added.json() == {"success": True, "pending": 3}
    assert [fault["remaining"] for fault in listed["faults"]] == [2, 1]
    assert invalid.status_code == 400
    assert "faults[1]" in invalid.json()["message"]
    assert "status" in invalid.json()["message"]
    assert unknown.status_code == 400
    assert "'code'" in unknown.json()["message"]
    assert collector.pending_faults == 3  # a rejected script adds nothing

    client, recorder = make_client()
    client.track("u", "Through the outage")
    client.flush()
    assert recorder.errors == []
    assert [entry["status"] for entry in collector.request_log()] == [503, 503, 429, 200]

    requests.post(collector.url + "/_admin/faults", json=[{"drop": True}], timeout=5)
    assert requests.delete(collector.url + "/_admin/faults", timeout=5).json()["pending"] == 0
    assert collector.pending_faults == 0


def _request(method: str, path: str, client_host: str, body: bytes = b"") -> Request:
    return Request(
        method=method, path=path, query={}, headers=Message(), body=body, body_error=None, client_host=client_host
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/_admin/faults"), ("DELETE", "/_admin/faults"), ("GET", "/_admin/faults"), ("DELETE", "/events")],
)
def test_admin_endpoints_refuse_callers_that_are_not_loopback(method: str, path: str, tmp_path: Path) -> None:
    # A remote caller cannot be simulated from 127.0.0.1, so the app is called as the server would.
    store = EventStore(tmp_path / "events.sqlite3")
    app = CollectorApp(store, FaultScript())
    body = json.dumps([{"status": 500}]).encode()

    refused = app(_request(method, path, "203.0.113.9", body))
    allowed = app(_request(method, path, "::ffff:127.0.0.1", body))

    assert refused.status == 403
    assert allowed.status == 200
    assert app(_request("GET", "/events", "203.0.113.9")).status == 200  # reading stays open
    store.close()


@pytest.mark.parametrize(
    ("origin", "status"),
    [("https://evil.example", 403), ("http://127.0.0.1:8787", 200), ("http://localhost:3000", 200), (None, 200)],
)
def test_a_cross_site_page_in_the_browser_cannot_script_faults(
    collector: Collector, origin: str | None, status: int
) -> None:
    # A form POST from any web site arrives from 127.0.0.1 but carries that site's Origin.
    headers = {"Content-Type": "text/plain"} | ({"Origin": origin} if origin else {})
    answer = requests.post(collector.url + "/_admin/faults", data='[{"status": 500}]', headers=headers, timeout=5)
    assert answer.status_code == status
    assert collector.pending_faults == (1 if status == 200 else 0)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("192.168.1.20", False),
        ("::ffff:10.0.0.1", False),
        ("203.0.113.9", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({}, "status"),
        ({"status": 700}, "status"),
        ({"status": True}, "status"),
        ({"status": 500, "drop": True}, "drop"),
        ({"status": 500, "repeat": 0}, "repeat"),
        ({"status": 429, "retry_after": -1}, "retry_after"),
        ({"status": 429, "retry_after": "1\r\nX-Injected: yes"}, "retry_after"),
        ({"drop": True, "retry_after": 1}, "retry_after"),
        ({"delay": -1}, "delay"),
    ],
)
def test_impossible_faults_are_refused_naming_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(FaultError) as refused:
        Fault(**options)
    assert refused.value.field == field


def test_basic_auth_header_with_garbage_is_a_missing_key(collector: Collector) -> None:
    response = requests.post(
        collector.url + "/v1/track",
        data=json.dumps({"userId": "u", "event": "e"}),
        headers={"Authorization": "Basic !!!" + base64.b64encode(b"x").decode()},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["code"] == "missing_write_key"
