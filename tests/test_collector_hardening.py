"""The collector cannot be turned against the operator over HTTP (issue 17).

Each test is one way a client, a web page in the operator's browser or a careless flow
tried to stall, confuse or fill the collector; each fails on the collector before these
rules and passes with them.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import gzip
import json
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from quickbot_segment_plugin.cli import main
from quickbot_segment_plugin.collector.service import Collector, CollectorError
from quickbot_segment_plugin.collector.store import EventStore
from quickbot_segment_plugin.collector.wire import ascii_decimal, ascii_hex
from quickbot_segment_plugin.core.redaction import fingerprint

WRITE_KEY = "wk_test_hardening_R2d9"
TRACK = {"writeKey": WRITE_KEY, "userId": "u", "event": "Hardened", "messageId": "m-1"}


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector(body_timeout=2.0) as running:
        yield running


def raw_exchange(port: int, payload: bytes, *, timeout: float = 5.0) -> bytes:
    """Sends bytes, then reads until the server closes (or `timeout` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(payload)
        chunks = []
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while data := connection.recv(65536):
                chunks.append(data)
    return b"".join(chunks)


def statuses(response: bytes) -> list[int]:
    """Every status line in what the server sent (several when requests were pipelined)."""
    return [int(line.split(b" ")[1]) for line in response.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


def json_body(response: bytes) -> dict[str, Any]:
    body = json.loads(response.split(b"\r\n\r\n", 1)[1])
    assert isinstance(body, dict)
    return body


def strict_json(text: str | bytes) -> Any:
    """JSON as the debugger page's browser reads it: Infinity and NaN are errors."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


# --- slots, deadlines and refusals ----------------------------------------------------------------


def test_a_client_trickling_its_head_loses_its_slot_at_the_head_deadline() -> None:
    # One header line every 0.5 s never trips the 30 s idle timeout; the total deadline ends it.
    with Collector(head_timeout=1.5, idle_timeout=30.0) as collector:
        with socket.create_connection(("127.0.0.1", collector.port), timeout=10) as slow:
            slow.sendall(b"POST /v1/track HTTP/1.1\r\n")
            started = time.monotonic()
            closed_after = None
            for line in range(40):
                time.sleep(0.5)
                try:
                    slow.sendall(f"X-Line-{line}: v\r\n".encode())
                except OSError:
                    closed_after = time.monotonic() - started
                    break
            assert closed_after is not None, "a trickling client kept its connection for 20 s"
            assert closed_after < 6.0
        assert collector.open_connections == 0 or _eventually(lambda: collector.open_connections == 0)


def test_idle_connections_make_room_instead_of_making_others_wait() -> None:
    with Collector(max_connections=4) as collector:
        idle = [socket.create_connection(("127.0.0.1", collector.port), timeout=5) for _ in range(4)]
        try:
            assert _eventually(lambda: collector.open_connections == 4)
            started = time.monotonic()
            answers = [requests.post(collector.url + "/v1/track", json=TRACK, timeout=10) for _ in range(3)]
            elapsed = time.monotonic() - started
        finally:
            for connection in idle:
                connection.close()
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert elapsed < 1.5  # no 2 s wait for a slot


def test_refusals_at_the_cap_come_at_once_and_do_not_queue_behind_each_other() -> None:
    # Both slots hold requests under way (not idle), so newcomers are refused: each after the
    # same short wait, in parallel, not one after the other in the accept loop.
    with Collector(max_connections=2, busy_wait=1.0, head_timeout=30.0) as collector:
        held = [socket.create_connection(("127.0.0.1", collector.port), timeout=5) for _ in range(2)]
        for connection in held:
            connection.sendall(b"POST /v1/track HTTP/1.1\r\n")
        try:
            assert _eventually(lambda: collector.open_connections == 2)
            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                answers = list(
                    pool.map(lambda _: requests.post(collector.url + "/v1/track", json=TRACK, timeout=20), range(8))
                )
            elapsed = time.monotonic() - started
        finally:
            for connection in held:
                connection.close()
    assert [answer.status_code for answer in answers] == [503] * 8
    assert all(answer.headers["Retry-After"] == "1" for answer in answers)
    assert elapsed < 4.0  # one busy_wait for all of them; queued in the accept loop it took 8 s


def test_the_listen_backlog_holds_a_burst() -> None:
    with Collector() as collector:
        listing = subprocess.run(
            ["ss", "-ltnH", f"sport = :{collector.port}"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.split()
    # For a listening socket, ss shows the backlog as Send-Q (the third column).
    assert int(listing[2]) >= 128


def test_the_default_cap_serves_a_burst_of_parallel_keep_alive_clients() -> None:
    # analytics-node sends a 2,000-event burst over about 134 connections at once, each kept alive.
    with Collector() as collector:
        sessions = [requests.Session() for _ in range(150)]
        try:
            with concurrent.futures.ThreadPoolExecutor(50) as pool:
                answers = list(
                    pool.map(
                        lambda pair: pair[1].post(
                            collector.url + "/v1/track", json={**TRACK, "messageId": f"m-{pair[0]}"}, timeout=20
                        ),
                        enumerate(sessions),
                    )
                )
            assert collector.open_connections >= 100  # still kept alive, none refused
        finally:
            for session in sessions:
                session.close()
        assert sorted({answer.status_code for answer in answers}) == [200]
        assert collector.count() == 150


# --- framing: one reading of where a request ends -------------------------------------------------


def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(collector: Collector) -> None:
    smuggled = b"GET /_admin/faults HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    payload = (
        b"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n" + smuggled
    )
    response = raw_exchange(collector.port, payload)
    assert statuses(response) == [400]  # one answer: the smuggled request is never read
    assert json_body(response)["code"] == "ambiguous_length"
    assert b"Connection: close" in response


@pytest.mark.parametrize("size", [b"0x3c", b"+0_3c", b"+3c", b"3c_", b" 3 c", "\u00b3c".encode("latin-1")])
def test_chunk_sizes_are_ascii_hex_digits_only(collector: Collector, size: bytes) -> None:
    start = b'{"writeKey":"k","userId":"u","event":"E","pad":"'
    body = start + b"x" * (0x3C - len(start) - 2) + b'"}'
    assert len(body) == 0x3C and json.loads(body)
    payload = (
        b"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + size
        + b"\r\n"
        + body
        + b"\r\n0\r\n\r\n"
    )
    response = raw_exchange(collector.port, payload)
    assert statuses(response) == [400]
    assert json_body(response)["code"] == "bad_chunked_body"
    assert collector.count() == 0


def test_a_plain_chunk_size_still_works(collector: Collector) -> None:
    body = json.dumps(TRACK).encode()
    payload = (
        b"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + f"{len(body):X};ext=1\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    assert statuses(raw_exchange(collector.port, payload)) == [200]
    assert collector.count() == 1


@given(st.text(max_size=12))
def test_only_plain_ascii_digits_are_numbers(text: str) -> None:
    # Python's int() also takes "+1", "1_0", " ²" and Arabic-Indic digits; HTTP does not.
    core = text.strip(" \t")
    plain = 0 < len(core) <= 18 and all(char in "0123456789" for char in core)
    assert ascii_decimal(text) == (int(core) if plain else None)
    hexadecimal = 0 < len(core) <= 15 and all(char in "0123456789abcdefABCDEF" for char in core)
    encoded = text.encode("utf-8")
    assert ascii_hex(encoded) == (int(core, 16) if hexadecimal else None)


@pytest.mark.parametrize("length", ["\u00b2", "\u00b9\u00b2", "+2", "0x2", "2_0"])
def test_content_length_is_ascii_digits_only(collector: Collector, length: str) -> None:
    # Header bytes are read as latin-1: b"\xb2" is "²", which str.isdigit() calls a digit.
    head = f"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n"
    payload = head.encode("latin-1") + b"{}"
    response = raw_exchange(collector.port, payload)
    assert statuses(response) == [400]
    body = json_body(response)
    assert body["code"] == "bad_content_length"
    assert "Content-Length" in body["message"]


def test_a_bad_retry_count_header_is_a_400_and_nothing_is_stored(collector: Collector) -> None:
    payload = json.dumps(TRACK).encode()
    head = (
        f"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(payload)}\r\n"
        "X-Retry-Count: \u00b2\r\nConnection: close\r\n\r\n"
    )
    response = raw_exchange(collector.port, head.encode("latin-1") + payload)
    assert statuses(response) == [400]
    body = json_body(response)
    assert body["code"] == "bad_retry_count"
    assert "X-Retry-Count" in body["message"]
    assert collector.count() == 0  # a 500 after storing made the client send it again
    assert collector.rejections()[0]["code"] == "bad_retry_count"


@pytest.mark.parametrize("path", ["/events?limit=%C2%B2", "/events?offset=%C2%B2", "/rejections?limit=%C2%B2"])
def test_a_non_ascii_number_in_the_query_is_a_400_naming_it(collector: Collector, path: str) -> None:
    answer = requests.get(collector.url + path, timeout=5)
    assert answer.status_code == 400
    name = path.split("?")[1].split("=")[0]
    assert name in answer.json()["message"]
    assert "Traceback" not in answer.text


def test_many_gzip_members_are_refused_before_they_cost_anything(collector: Collector) -> None:
    members = gzip.compress(b"", mtime=0) * 40_000
    started = time.monotonic()
    answer = requests.post(collector.url + "/v1/batch", data=members, headers={"Content-Encoding": "gzip"}, timeout=10)
    elapsed = time.monotonic() - started
    assert answer.status_code == 400
    assert answer.json()["code"] == "too_many_gzip_members"
    assert elapsed < 1.0


def test_a_body_in_two_gzip_members_is_still_read(collector: Collector) -> None:
    text = json.dumps(TRACK).encode()
    body = gzip.compress(text[:20]) + gzip.compress(text[20:])
    answer = requests.post(collector.url + "/v1/track", data=body, headers={"Content-Encoding": "gzip"}, timeout=5)
    assert answer.status_code == 200
    assert collector.count() == 1


# --- the store only ever holds JSON ---------------------------------------------------------------


@pytest.mark.parametrize("number", ["1e999", "-1e999", "NaN", "Infinity", "-Infinity"])
def test_a_non_finite_number_is_refused_by_name(collector: Collector, number: str) -> None:
    body = '{"writeKey": "' + WRITE_KEY + '", "userId": "u", "event": "E", "properties": {"n": ' + number + "}}"
    # text/plain with the key in the body: what any web page could send without a preflight.
    answer = requests.post(collector.url + "/v1/track", data=body, headers={"Content-Type": "text/plain"}, timeout=5)
    assert answer.status_code == 400
    assert answer.json()["code"] == "non_finite_number"
    assert number.lstrip("-") in answer.json()["message"]
    assert collector.count() == 0
    page = requests.get(collector.url + "/events", timeout=5)
    assert strict_json(page.text)["total"] == 0


def test_the_read_api_answers_json_even_for_a_file_that_holds_infinity(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    with Collector(path) as collector:
        requests.post(collector.url + "/v1/track", json=TRACK, timeout=5)
    with sqlite3.connect(path) as db:  # what an older collector stored
        db.execute("UPDATE events SET message = replace(message, '\"Hardened\"', 'Infinity')")
    with Collector(path) as collector:
        page = requests.get(collector.url + "/events", timeout=5)
        assert page.status_code == 200
        assert strict_json(page.text)["events"][0]["message"]["event"] == "inf"


# --- who may write ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("https://evil.example", 403),
        ("http://localhost:3000", 403),
        ("null", 403),
        ("http://127.0.0.1:{port}", 200),
        (None, 200),  # server libraries send no Origin
    ],
)
def test_a_web_page_of_another_site_cannot_send_events(collector: Collector, origin: str | None, status: int) -> None:
    headers = {"Content-Type": "text/plain"} | ({"Origin": origin.format(port=collector.port)} if origin else {})
    answer = requests.post(
        collector.url + "/v1/batch", data=json.dumps({**TRACK, "batch": [TRACK]}), headers=headers, timeout=5
    )
    assert answer.status_code == status
    assert collector.count() == (1 if status == 200 else 0)
    if status == 403:
        assert answer.json()["code"] == "forbidden_origin"
        rejection = collector.rejections()[0]
        assert rejection["code"] == "forbidden_origin"
        assert rejection["write_key_fingerprint"] == fingerprint(WRITE_KEY)


def test_an_origin_the_operator_allowed_can_send_events() -> None:
    with Collector(allowed_origins=["http://localhost:3000/"]) as collector:
        answer = requests.post(
            collector.url + "/v1/track", json=TRACK, headers={"Origin": "http://localhost:3000"}, timeout=5
        )
        assert answer.status_code == 200
    with pytest.raises(CollectorError, match="allowed_origins"):
        Collector(allowed_origins=["localhost:3000"])


def test_delete_events_accepts_only_the_collectors_own_page(collector: Collector) -> None:
    requests.post(collector.url + "/v1/track", json=TRACK, timeout=5)
    other = requests.delete(collector.url + "/events", headers={"Origin": "http://localhost:1"}, timeout=5)
    assert other.status_code == 403
    assert collector.count() == 1
    own = requests.delete(
        collector.url + "/events", headers={"Origin": f"http://localhost:{collector.port}"}, timeout=5
    )
    assert own.status_code == 200
    assert collector.count() == 0


# --- caps on what is kept -------------------------------------------------------------------------


def test_past_the_event_cap_the_oldest_go_first_and_are_counted() -> None:
    with Collector(max_stored_events=10) as collector:
        for n in range(25):
            assert requests.post(collector.url + "/v1/track", json={**TRACK, "messageId": f"m-{n}"}, timeout=5).ok
        summary = requests.get(collector.url + "/summary", timeout=5).json()
        kept = [event["message_id"] for event in collector.events(limit=100)]
    assert len(kept) <= 10
    assert kept == [f"m-{n}" for n in range(24, 24 - len(kept), -1)]  # the newest, newest first
    assert summary["dropped"] == 25 - len(kept)
    assert summary["total"] == len(kept)
    assert summary["max_events"] == 10


def test_past_the_byte_cap_the_oldest_go_first() -> None:
    padding = "p" * 10_000
    with Collector(max_stored_mb=0.1) as collector:  # about 105 KB
        for n in range(40):
            body = {**TRACK, "messageId": f"m-{n}", "properties": {"padding": padding}}
            assert requests.post(collector.url + "/v1/track", json=body, timeout=5).ok
        summary = collector.summary()
    assert summary["stored_bytes"] <= 0.1 * 1024 * 1024
    assert summary["dropped"] > 0
    assert summary["dropped"] + summary["total"] == 40


# --- rejections are visible, with the key's fingerprint -------------------------------------------


def test_rejections_carry_the_reason_and_the_key_fingerprint(collector: Collector) -> None:
    basic = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    requests.post(collector.url + "/v1/track", data=b"{not json", headers={"Authorization": basic}, timeout=5)
    too_many = {"writeKey": WRITE_KEY, "batch": [{"type": "track", "userId": "u", "event": "E"}] * 2501}
    dropped = requests.post(collector.url + "/v1/batch", json=too_many, timeout=10)
    assert dropped.status_code == 200  # as Segment does: answered 200 and dropped
    rejections = requests.get(collector.url + "/rejections", timeout=5).json()["rejections"]
    assert [(row["status"], row["code"]) for row in rejections] == [(200, "too_many_events"), (400, "invalid_json")]
    assert {row["write_key_fingerprint"] for row in rejections} == {fingerprint(WRITE_KEY)}
    assert all(row["reason"] for row in rejections)
    assert requests.get(collector.url + "/summary", timeout=5).json()["rejections"] == 2


def test_events_rejections_lists_them_without_the_key(collector: Collector, capsys: pytest.CaptureFixture[str]) -> None:
    body = '{"writeKey": "' + WRITE_KEY + '", "userId": "u", "event": "E", "properties": {"n": 1e999}}'
    requests.post(collector.url + "/v1/track", data=body, timeout=5)
    requests.post(collector.url + "/v1/track", json=TRACK, headers={"Origin": "https://evil.example\x1b[2J"}, timeout=5)

    assert main(["events", "--url", collector.url, "--rejections"]) == 0
    printed = capsys.readouterr().out
    assert "non_finite_number" in printed and "1e999" in printed
    assert "forbidden_origin" in printed
    assert printed.count(fingerprint(WRITE_KEY)) == 2
    assert WRITE_KEY not in printed
    assert "\x1b" not in printed  # a client's text never reaches the terminal raw

    assert main(["events", "--url", collector.url, "--rejections", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["code"] for row in listed] == ["forbidden_origin", "non_finite_number"]


# --- counts after erasure, and no noise flags -----------------------------------------------------


def test_the_summary_stops_counting_events_erased_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    with Collector(path) as collector:
        batch = [
            {"type": "track", "userId": "forget-me", "event": "A", "messageId": "f-1"},
            {"type": "track", "userId": "forget-me", "event": "B", "messageId": "f-2"},
            {"type": "track", "userId": "keep-me", "event": "C", "messageId": "k-1"},
        ]
        requests.post(collector.url + "/v1/batch", json={"writeKey": WRITE_KEY, "batch": batch}, timeout=5)
        before = requests.get(collector.url + "/summary", timeout=5).json()
        assert before["total"] == 3

        other = EventStore(path)  # what `privacy forget --collector-db` opens, from its own process
        try:
            assert len(other.forget("forget-me")) == 2
        finally:
            other.close()

        after = requests.get(collector.url + "/summary", timeout=5).json()
        assert after["total"] == 1
        assert after["by_type"] == {"track": 1}
        assert after["revision"] != before["revision"]  # the page starts over: erased rows leave it too


def test_an_event_without_a_message_id_is_not_flagged(collector: Collector) -> None:
    body = {"writeKey": WRITE_KEY, "userId": "u", "event": "No id"}
    requests.post(collector.url + "/v1/track", json=body, timeout=5)
    assert collector.events()[0]["warnings"] == []
    assert collector.summary()["with_warnings"] == 0


def _eventually(check: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return bool(check())
