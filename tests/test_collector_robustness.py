"""Nothing a client sends can kill the collector, and it never holds more than it promised.

Raw sockets send what no well-behaved client would: garbage, lies in Content-Length,
truncated gzip, gzip bombs, huge headers. After each one the collector must still answer
a valid request.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quickbot_segment_plugin.collector.ingest import Accepted, Rejected, ingest
from quickbot_segment_plugin.collector.service import Collector, CollectorError, Fault

WRITE_KEY = "wk_test_robust_Q8v1"
VALID = json.dumps({"writeKey": WRITE_KEY, "userId": "u", "event": "Still alive"}).encode()


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector(body_timeout=1.0) as running:
        yield running


def exchange(collector: Collector, payload: bytes, *, half_close: bool = True, timeout: float = 5.0) -> bytes:
    """Sends raw bytes and returns everything the server answers before closing."""
    with socket.create_connection(("127.0.0.1", collector.port), timeout=timeout) as connection:
        with contextlib.suppress(OSError):  # the server may close before reading it all: its right
            connection.sendall(payload)
            if half_close:
                connection.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                data = connection.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def status_of(response: bytes) -> int | None:
    if not response.startswith(b"HTTP/1."):
        return None
    return int(response.split(b" ", 2)[1])


def still_serves(collector: Collector) -> bool:
    response = requests.post(collector.url + "/v1/track", data=VALID, timeout=5)
    return response.status_code == 200


def request(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body


def post_with_body(body: bytes, *extra_headers: str) -> bytes:
    headers = "".join(f"{header}\n" for header in extra_headers)
    return request(f"POST /v1/batch HTTP/1.1\nHost: x\nContent-Length: {len(body)}\n{headers}", body)


HOSTILE = [
    pytest.param(b"\x00\xff\xfe garbage \x01\x02\r\n\r\n", 400, id="binary garbage"),
    pytest.param(b"GET\r\n\r\n", 400, id="request line without a path"),
    pytest.param(b"BREW /v1/batch HTTP/1.1\r\n\r\n", 501, id="unknown method"),
    pytest.param(request("POST /v1/batch HTTP/1.1\nContent-Length: abc\n"), 400, id="content-length not a number"),
    pytest.param(request("POST /v1/batch HTTP/1.1\nContent-Length: -5\n"), 400, id="negative content-length"),
    pytest.param(
        request("POST /v1/batch HTTP/1.1\nContent-Length: 2\nContent-Length: 3\n", b"{}"), 400, id="two lengths"
    ),
    pytest.param(request("POST /v1/batch HTTP/1.1\nContent-Length: 500\n", b"{}"), 400, id="body shorter than said"),
    pytest.param(post_with_body(b"[1, 2]"), 400, id="json array"),
    pytest.param(post_with_body(b'"text"'), 400, id="json string"),
    pytest.param(post_with_body(b"null"), 400, id="json null"),
    pytest.param(post_with_body(b"[" * 200_000), 400, id="deep nesting"),
    pytest.param(post_with_body(b'{"writeKey": "\xff\xfe"}'), 400, id="invalid utf-8"),
    pytest.param(post_with_body(b'{"writeKey": "k", "batch": {}}'), 400, id="batch not a list"),
    pytest.param(post_with_body(b'{"writeKey": "k", "batch": [1]}'), 400, id="batch item not an object"),
    pytest.param(post_with_body(b'{"writeKey": 5, "batch": []}'), 400, id="write key not a string"),
    pytest.param(post_with_body(gzip.compress(VALID)[:-9], "Content-Encoding: gzip"), 400, id="truncated gzip"),
    pytest.param(post_with_body(b"not gzip at all", "Content-Encoding: gzip"), 400, id="not gzip"),
    pytest.param(post_with_body(VALID, "Content-Encoding: br"), 400, id="unsupported encoding"),
    pytest.param(
        request("POST /v1/batch HTTP/1.1\nTransfer-Encoding: chunked\n", b"zz\r\n{}\r\n0\r\n\r\n"),
        400,
        id="malformed chunk size",
    ),
    pytest.param(request("POST /v1/batch HTTP/1.1\nTransfer-Encoding: gzip\n", b"{}"), 501, id="unknown transfer"),
    pytest.param(request("GET /" + "a" * 70_000 + " HTTP/1.1\n"), 414, id="huge request line"),
    pytest.param(request("GET / HTTP/1.1\nX-Big: " + "h" * 70_000 + "\n"), 431, id="huge header"),
    pytest.param(request("GET / HTTP/1.1\n" + "".join(f"X-H{i}: v\n" for i in range(150))), 431, id="many headers"),
    pytest.param(request("GET / HTTP/9.9\n"), 505, id="unknown http version"),
    pytest.param(request("POST /v1/nothing HTTP/1.1\nContent-Length: 2\n", b"{}"), 404, id="unknown endpoint"),
    pytest.param(request("GET /v1/batch HTTP/1.1\n"), 405, id="wrong method"),
    pytest.param(
        request("GET /events?" + "&".join(f"f{i}=1" for i in range(60)) + " HTTP/1.1\n"), 400, id="many fields"
    ),
    pytest.param(request("GET /events?limit=" + "9" * 5000 + " HTTP/1.1\n"), 400, id="long query"),
    pytest.param(request("GET /events?limit=lots HTTP/1.1\n"), 400, id="limit not a number"),
    pytest.param(request("GET http://[bad/events HTTP/1.1\n"), 400, id="unparsable url"),
]


@pytest.mark.parametrize(("payload", "expected"), HOSTILE)
def test_hostile_requests_get_an_error_answer_and_the_server_survives(
    payload: bytes, expected: int, collector: Collector
) -> None:
    response = exchange(collector, payload)

    assert status_of(response) == expected, response[:200]
    assert still_serves(collector)


def test_a_chunked_body_is_read(collector: Collector) -> None:
    chunks = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (VALID[:10], VALID[10:]))
    response = exchange(
        collector, request("POST /v1/track HTTP/1.1\nTransfer-Encoding: chunked\n", chunks + b"0\r\n\r\n")
    )
    assert status_of(response) == 200
    assert collector.count() == 1


def test_a_body_that_never_arrives_times_out(collector: Collector) -> None:
    # Content-Length promises more than is sent and the connection stays open.
    started = time.monotonic()
    response = exchange(collector, request("POST /v1/batch HTTP/1.1\nContent-Length: 100\n", b"{"), half_close=False)
    assert status_of(response) == 408
    assert time.monotonic() - started < 10  # generous: body_timeout is 1 s
    assert still_serves(collector)


def test_a_declared_body_over_the_read_limit_is_refused_before_it_is_sent(collector: Collector) -> None:
    head = request("POST /v1/batch HTTP/1.1\nContent-Length: 50000000\n")
    response = exchange(collector, head, half_close=False)  # no body is ever sent
    assert status_of(response) == 400
    assert b"payload_too_large" in response


def test_a_gzip_bomb_is_refused_without_being_inflated(collector: Collector) -> None:
    bomb = gzip.compress(b"\0" * 50_000_000, compresslevel=9)
    tracemalloc.start()
    try:
        response = requests.post(
            collector.url + "/v1/batch", data=bomb, headers={"Content-Encoding": "gzip"}, timeout=10
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 400
    assert response.json()["code"] == "payload_too_large"
    assert peak < 8_000_000  # generous bound; inflating it would take 50 MB
    assert still_serves(collector)


def test_connections_are_capped_and_the_excess_is_told_to_retry() -> None:
    with Collector(max_connections=2, busy_wait=0.2) as collector:
        idle = [socket.create_connection(("127.0.0.1", collector.port), timeout=5) for _ in range(2)]
        try:
            _wait_until(lambda: collector.open_connections == 2)
            refused = requests.post(collector.url + "/v1/track", data=VALID, timeout=5)
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "1"
            assert collector.open_connections == 2
        finally:
            for connection in idle:
                connection.close()
        _wait_until(lambda: collector.open_connections == 0)
        assert still_serves(collector)


def test_stop_ends_keep_alive_connections_and_delayed_faults_and_leaves_no_threads() -> None:
    before = threading.active_count()
    collector = Collector().start()
    session = requests.Session()
    session.post(collector.url + "/v1/track", data=VALID, timeout=5)  # leaves a kept-alive connection
    collector.inject_faults([Fault(delay=60.0)])
    stuck = threading.Thread(target=_post_ignoring_errors, args=(collector.url,), daemon=True)
    stuck.start()
    _wait_until(lambda: collector.pending_faults == 0)

    started = time.monotonic()
    collector.stop()
    stuck.join(10)
    session.close()

    assert time.monotonic() - started < 5  # generous: a 60 s fault must not hold stop()
    assert not stuck.is_alive()
    _wait_until(lambda: threading.active_count() <= before)
    assert threading.active_count() <= before


def _post_ignoring_errors(url: str) -> None:
    with contextlib.suppress(requests.RequestException):
        requests.post(url + "/v1/track", data=VALID, timeout=30)


def _wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_non_loopback_host_is_refused_unless_allowed() -> None:
    with pytest.raises(CollectorError) as refused:
        Collector(host="0.0.0.0")
    assert refused.value.field == "host"
    assert "allow_remote" in str(refused.value)
    Collector(host="0.0.0.0", allow_remote=True)  # constructing binds nothing
    with Collector(host="localhost") as local:
        assert still_serves(local)


def test_a_port_in_use_is_a_clear_error() -> None:
    with Collector() as first:
        taken = first.port
        with pytest.raises(CollectorError) as refused:
            Collector(port=taken).start()
        assert still_serves(first)
    assert refused.value.field == "port"
    assert f":{taken}" in str(refused.value)


# --- property-based fuzzing --------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
known_keys = st.sampled_from(
    [
        "type",
        "userId",
        "anonymousId",
        "event",
        "messageId",
        "timestamp",
        "sentAt",
        "traits",
        "properties",
        "context",
        "integrations",
        "previousId",
        "groupId",
        "name",
        "writeKey",
        "batch",
    ]
)
messages = st.dictionaries(known_keys | st.text(max_size=8), json_values, max_size=8)
bodies = st.one_of(
    messages,
    st.fixed_dictionaries(
        {"batch": st.lists(messages, max_size=5)},
        optional={"writeKey": json_values | st.just(WRITE_KEY), "sentAt": json_values, "context": json_values},
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    endpoint=st.sampled_from(["batch", "identify", "track", "page", "screen", "group", "alias"]),
    body=bodies,
    authorization=st.none() | st.just("Basic d2s6") | st.text(max_size=20),
)
def test_ingest_either_accepts_or_rejects_any_json(
    endpoint: str, body: dict[str, Any], authorization: str | None
) -> None:
    raw = json.dumps(body).encode()
    try:
        accepted = ingest(
            endpoint, raw, content_encoding=None, authorization=authorization, received_at=datetime.now(UTC)
        )
    except Rejected as rejected:
        assert rejected.status == 400
        return
    assert isinstance(accepted, Accepted)
    for message in accepted.messages:
        assert "writeKey" not in message
        assert message.get("messageId") not in (None, "")  # assigned when missing
        assert message["receivedAt"].endswith("Z")
        assert isinstance(message["timestamp"], str)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=2000) | bodies.map(lambda value: json.dumps(value).encode()),
    encoding=st.sampled_from([None, "gzip", "identity", "deflate"]),
    compress=st.booleans(),
)
def test_random_bodies_over_http_get_200_or_400(
    collector: Collector, body: bytes, encoding: str | None, compress: bool
) -> None:
    data = gzip.compress(body) if compress else body
    headers = {"Content-Encoding": encoding} if encoding else {}
    response = requests.post(collector.url + "/v1/batch", data=data, headers=headers, timeout=5)
    assert response.status_code in (200, 400)
    assert response.headers["Content-Type"] == "application/json"
