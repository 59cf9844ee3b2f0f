"""The collector receives what segment-analytics-python sends, and keeps it as Segment would.

Everything goes through real HTTP on 127.0.0.1: the unmodified `segment.analytics.Client`
for what the plugin does, raw requests for what only a hand-written client can send.
"""

from __future__ import annotations

import atexit
import base64
import gzip
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from segment.analytics import Client

from quickbot_segment_plugin.collector.service import Collector
from quickbot_segment_plugin.core.redaction import fingerprint

WRITE_KEY = "wk_test_delivery_7Hq2"


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector() as running:
        yield running


@pytest.fixture
def make_client(collector: Collector) -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(write_key: str = WRITE_KEY, **options: Any) -> Client:
        options.setdefault("max_retries", 2)
        options.setdefault("timeout", 3)
        options.setdefault("upload_interval", 0.05)
        client = Client(write_key, host=collector.url, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        if not client.sync_mode:
            client.shutdown()
            atexit.unregister(client.join)


def at(text: str) -> datetime:
    """An independent ISO-8601 reading (fromisoformat on 3.10 needs +00:00, not Z)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def post(
    collector: Collector,
    path: str,
    body: dict[str, Any] | bytes,
    *,
    basic_key: str | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent_headers = {"Content-Type": "application/json", **(headers or {})}
    if basic_key is not None:
        sent_headers["Authorization"] = "Basic " + base64.b64encode(f"{basic_key}:".encode()).decode()
    return requests.post(collector.url + path, data=data, headers=sent_headers, timeout=5)


def test_every_call_type_arrives_as_sent_with_segments_timestamps(
    collector: Collector, make_client: Callable[..., Client]
) -> None:
    client = make_client()
    long_ago = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    sent = [
        client.identify(
            "user-1",
            {"email": "ada@example.com", "age": 31, "name": "Ada", "address": {"city": "Paris"}},
            context={"quickbot": {"bot_id": "b1", "block_id": "blk"}},
            timestamp=long_ago,
            message_id="msg-identify",
        ),
        client.track("user-1", "Order Completed", {"revenue": 9.5, "items": [1, "two"]}, anonymous_id="anon-1"),
        client.page("user-1", category="Docs", name="Pricing", properties={"url": "https://example.com/p"}),
        client.screen("user-1", name="Home", properties={"tab": 2}),
        client.group("user-1", "grp-1", {"name": "Initech", "employees": 20}),
        client.alias("anon-1", "user-1"),
    ]
    client.flush()

    assert all(ok for ok, _ in sent)
    stored = {message["messageId"]: message for message in collector.messages()}
    assert len(stored) == 6 == collector.count(distinct=True)
    for _, message in sent:
        copy = stored[message["messageId"]]
        for key, value in message.items():
            if key == "timestamp":
                assert copy["originalTimestamp"] == value
            else:
                assert copy[key] == value, key
        # Segment: timestamp = receivedAt - (sentAt - originalTimestamp).
        expected = at(copy["receivedAt"]) - (at(copy["sentAt"]) - at(message["timestamp"]))
        assert abs(at(copy["timestamp"]) - expected) < timedelta(milliseconds=1)
    identify = stored["msg-identify"]
    assert abs(at(identify["timestamp"]) - long_ago) < timedelta(seconds=30)  # skew is tiny on one machine
    assert all(row["warnings"] == [] for row in collector.events())


def test_clock_skew_of_the_sender_is_corrected_exactly(collector: Collector) -> None:
    # The sender's clock runs about four years fast: its event happened 4.75 s before it sent it.
    body = {
        "writeKey": WRITE_KEY,
        "sentAt": "2030-01-01T00:00:10.000Z",
        "batch": [
            {
                "type": "track",
                "userId": "u",
                "event": "Skewed",
                "messageId": "skew",
                "timestamp": "2030-01-01T00:00:05.250Z",
            },
            {"type": "track", "userId": "u", "event": "No time", "messageId": "no-time"},
        ],
    }
    assert post(collector, "/v1/batch", body).status_code == 200

    skewed = collector.events(message_id="skew")[0]["message"]
    assert skewed["originalTimestamp"] == "2030-01-01T00:00:05.250Z"
    assert skewed["sentAt"] == "2030-01-01T00:00:10.000Z"
    assert at(skewed["timestamp"]) == at(skewed["receivedAt"]) - timedelta(seconds=4.75)
    untimed = collector.events(message_id="no-time")[0]["message"]
    assert untimed["timestamp"] == untimed["receivedAt"]
    assert "originalTimestamp" not in untimed


def test_without_sent_at_the_timestamp_is_kept(collector: Collector) -> None:
    body = {"writeKey": WRITE_KEY, "userId": "u", "event": "Import", "timestamp": "2012-12-02T00:30:12.984Z"}
    assert post(collector, "/v1/track", body).status_code == 200
    message = collector.messages()[0]
    assert message["timestamp"] == "2012-12-02T00:30:12.984Z"
    assert message["type"] == "track"  # implied by the endpoint, as Segment does
    assert message["messageId"].startswith("api-")  # Segment assigns one when missing
    assert any("messageId is missing" in warning for warning in collector.events()[0]["warnings"])


def test_gzip_bodies_from_the_library_and_by_hand(collector: Collector, make_client: Callable[..., Client]) -> None:
    client = make_client(gzip=True)
    client.track("user-gz", "Compressed", {"n": 1})
    client.flush()
    raw = json.dumps({"writeKey": WRITE_KEY, "batch": [{"type": "track", "userId": "u2", "event": "Hand"}]})
    two_members = gzip.compress(raw[:20].encode()) + gzip.compress(raw[20:].encode())
    response = post(collector, "/v1/batch", two_members, headers={"Content-Encoding": "gzip"})

    assert response.status_code == 200
    assert sorted(row["event"] for row in collector.events()) == ["Compressed", "Hand"]


def test_write_key_by_basic_auth_or_body_is_stored_only_as_its_fingerprint(
    collector: Collector, make_client: Callable[..., Client]
) -> None:
    secret = "wk_live_SECRET_4f9a8b7c6d5e3a2b"
    by_header = post(collector, "/v1/track", {"userId": "u", "event": "Basic", "messageId": "m1"}, basic_key=secret)
    by_body = post(collector, "/v1/track", {"userId": "u", "event": "Body", "messageId": "m2", "writeKey": secret})
    client = make_client(write_key=secret)
    client.identify("u", {"plan": "pro"})
    client.flush()

    assert by_header.status_code == by_body.status_code == 200
    rows = collector.events()
    assert len(rows) == 3
    assert {row["write_key_fingerprint"] for row in rows} == {fingerprint(secret)}
    assert all("writeKey" not in row["message"] for row in rows)
    stored_bytes = b"".join(
        path.read_bytes() for path in collector.db_path.parent.iterdir() if path.name.startswith(collector.db_path.name)
    )
    assert fingerprint(secret).encode() in stored_bytes
    assert secret.encode() not in stored_bytes
    assert base64.b64encode(f"{secret}:".encode()) not in stored_bytes


def test_a_request_without_a_write_key_is_refused_like_segment(
    collector: Collector, make_client: Callable[..., Client]
) -> None:
    response = post(collector, "/v1/track", {"userId": "u", "event": "Anonymous sender"})
    failures: list[Exception] = []
    client = make_client(write_key="", on_error=lambda error, batch: failures.append(error))
    client.track("u", "Empty key")
    client.flush()

    assert response.status_code == 400
    assert response.json()["code"] == "missing_write_key"
    assert [getattr(error, "status", None) for error in failures] == [400]
    assert collector.count() == 0
    assert collector.rejections()[0]["code"] == "missing_write_key"


def test_any_other_write_key_is_accepted_as_segment_does(collector: Collector) -> None:
    assert post(collector, "/v1/track", {"userId": "u", "event": "e"}, basic_key="not-a-real-key").status_code == 200
    assert collector.count() == 1


def test_duplicates_by_message_id_are_kept_and_flagged_per_write_key(
    collector: Collector, make_client: Callable[..., Client]
) -> None:
    client = make_client()
    client.track("u", "Paid", message_id="pay-1")
    client.flush()
    client.track("u", "Paid", message_id="pay-1")  # a host retrying the same execution
    client.flush()
    other_source = make_client(write_key="wk_other_source_01")
    other_source.track("u", "Paid", message_id="pay-1")
    other_source.flush()

    rows = collector.events(message_id="pay-1")
    assert [row["duplicate"] for row in rows] == [False, True, False]  # newest first
    assert collector.count() == 3
    assert collector.count(distinct=True) == 2


def test_spec_problems_are_recorded_as_warnings_and_still_answered_200(collector: Collector) -> None:
    body = {
        "writeKey": WRITE_KEY,
        "batch": [
            {"type": "identify", "messageId": "no-ids", "traits": {"email": 5, "age": "old", "createdAt": "yesterday"}},
            {"type": "track", "userId": "u", "messageId": "no-event"},
            {"type": "alias", "userId": "u", "messageId": "alias-no-previous"},
            {"type": "group", "userId": "u", "messageId": "group-no-id", "traits": {"address": "1 Main St"}},
            {"type": "purchase", "userId": "u", "messageId": "bad-type"},
            {"type": "track", "userId": "u", "event": "Long id", "messageId": "x" * 101},
            {"type": "track", "anonymousId": "a", "event": "Clean", "messageId": "clean"},
        ],
    }
    assert post(collector, "/v1/batch", body).status_code == 200

    warnings = {row["message_id"]: " | ".join(row["warnings"]) for row in collector.events()}
    assert "no_user_anon_id" in warnings["no-ids"]
    assert "traits.email" in warnings["no-ids"]
    assert "traits.age" in warnings["no-ids"]
    assert "traits.createdAt" in warnings["no-ids"]
    assert "track requires event" in warnings["no-event"]
    assert "alias requires previousId" in warnings["alias-no-previous"]
    assert "no_user_anon_id" not in warnings["alias-no-previous"]
    assert "group requires groupId" in warnings["group-no-id"]
    assert "traits.address" in warnings["group-no-id"]
    assert "type must be one of" in warnings["bad-type"]
    assert "at most 100" in warnings["x" * 101]
    assert warnings["clean"] == ""


def test_batch_context_and_integrations_apply_to_every_item(collector: Collector) -> None:
    body = {
        "writeKey": WRITE_KEY,
        "context": {"device": {"type": "phone"}, "locale": "fr-FR"},
        "integrations": {"All": False},
        "batch": [
            {"type": "track", "userId": "u", "event": "A", "context": {"locale": "en-GB"}},
            {"type": "track", "userId": "u", "event": "B", "integrations": {"Mixpanel": True}},
        ],
    }
    assert post(collector, "/v1/batch", body).status_code == 200
    first, second = collector.messages()
    assert first["context"] == {"device": {"type": "phone"}, "locale": "en-GB"}
    assert second["context"] == {"device": {"type": "phone"}, "locale": "fr-FR"}
    assert second["integrations"] == {"All": False, "Mixpanel": True}


def test_a_batch_of_more_than_2500_events_is_answered_200_and_dropped(collector: Collector) -> None:
    def batch(size: int) -> dict[str, Any]:
        return {"writeKey": WRITE_KEY, "batch": [{"type": "track", "userId": "u", "event": "e"}] * size}

    too_many = post(collector, "/v1/batch", batch(2501))
    at_limit = post(collector, "/v1/batch", batch(2500))

    assert too_many.status_code == at_limit.status_code == 200
    assert collector.count() == 2500
    assert collector.rejections()[0]["code"] == "too_many_events"


def test_read_api_filters_and_pages_newest_first(collector: Collector) -> None:
    batch = [{"type": "track", "userId": f"u{i % 2}", "event": f"E{i}", "messageId": f"m{i}"} for i in range(5)]
    batch.append({"type": "page", "userId": "u0", "name": "Home", "messageId": "p"})
    post(collector, "/v1/batch", {"writeKey": WRITE_KEY, "batch": batch})
    since = collector.events()[0]["received_at"]
    post(collector, "/v1/track", {"writeKey": WRITE_KEY, "userId": "u0", "event": "Later", "messageId": "later"})

    first = requests.get(collector.url + "/events", params={"type": "track", "userId": "u0", "limit": 2}, timeout=5)
    rest = requests.get(
        collector.url + "/events", params={"type": "track", "userId": "u0", "limit": 2, "offset": 2}, timeout=5
    )
    recent = requests.get(collector.url + "/events", params={"since": since}, timeout=5).json()
    bad = requests.get(collector.url + "/events", params={"since": "last tuesday"}, timeout=5)

    assert [row["message_id"] for row in first.json()["events"]] == ["later", "m4"]
    assert first.json()["total"] == 4
    assert first.json()["next_offset"] == 2
    assert [row["message_id"] for row in rest.json()["events"]] == ["m2", "m0"]
    assert rest.json()["next_offset"] is None
    assert recent["total"] == 7
    assert bad.status_code == 400
    assert "since" in bad.json()["message"]
    assert [row["message_id"] for row in collector.events(event="E3")] == ["m3"]
    assert collector.events(since=datetime.now(UTC) + timedelta(hours=1)) == []


def test_keep_alive_reuses_one_connection_for_many_requests(
    collector: Collector, make_client: Callable[..., Client]
) -> None:
    client = make_client(upload_size=10)
    for round_number in range(5):
        for i in range(10):
            client.track("u", "Tick", {"round": round_number, "i": i})
        client.flush()

    assert collector.count() == 50
    assert collector.requests_received == 5
    assert collector.connections_accepted == 1


def test_clear_deletes_stored_events(collector: Collector) -> None:
    post(collector, "/v1/track", {"writeKey": WRITE_KEY, "userId": "u", "event": "e"})
    collector.clear()
    assert collector.count() == 0
    post(collector, "/v1/track", {"writeKey": WRITE_KEY, "userId": "u", "event": "e"})
    assert requests.delete(collector.url + "/events", timeout=5).status_code == 200
    assert collector.count() == 0


def test_a_named_database_file_keeps_events_across_restarts(tmp_path: Any) -> None:
    path = tmp_path / "events.sqlite3"
    with Collector(path) as first:
        post(first, "/v1/track", {"writeKey": WRITE_KEY, "userId": "u", "event": "Kept", "messageId": "k"})
        files = [file for file in tmp_path.iterdir() if file.name.startswith(path.name)]
        assert {file.name for file in files} >= {"events.sqlite3", "events.sqlite3-wal"}
        assert {file.stat().st_mode & 0o777 for file in files} == {0o600}  # events hold PII: private
    with Collector(path) as second:
        post(second, "/v1/track", {"writeKey": WRITE_KEY, "userId": "u", "event": "Kept", "messageId": "k"})
        assert second.count() == 2
        assert second.count(distinct=True) == 1
