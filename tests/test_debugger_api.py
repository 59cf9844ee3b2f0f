"""What the live debugger page stands on, checked over real HTTP on 127.0.0.1: the page and
its files, the read API it polls (raw batches, the live cursor, the summary strip), the
`violations` field, and the rules that keep a stored event from becoming an attack on
whoever opens the page. The page itself runs in a real browser in test_debugger_browser.py.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from segment.analytics.request import post as library_post
from support import WRITE_KEY

from quickbot_segment_plugin.collector.service import Collector, CollectorError
from quickbot_segment_plugin.collector.store import EventStore
from quickbot_segment_plugin.core.timestamps import segment_timestamp as format_iso8601

pytestmark = pytest.mark.integration

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
ASSETS = {
    "/debugger/debugger.js": "text/javascript",
    "/debugger/debugger.css": "text/css",
    "/debugger/icon.svg": "image/svg+xml",
}


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector() as running:
        yield running


def message(kind: str = "track", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"type": kind, "messageId": str(uuid.uuid4()), "userId": "user-1042"}
    if kind == "track":
        base["event"] = "Lead Qualified"
    return {**base, **fields}


def send_batch(collector: Collector, *messages: dict[str, Any], gzip: bool = False, **body: Any) -> None:
    """One request through segment-analytics-python's own `post` (body key and Basic auth)."""
    response = library_post(WRITE_KEY, host=collector.url, gzip=gzip, timeout=5, batch=list(messages), **body)
    assert response.status_code == 200


def raw_get(collector: Collector, path: str, host: str, method: str = "GET") -> tuple[int, dict[str, Any]]:
    """A request with a Host header of our choosing (requests would set the real one)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", collector.port), timeout=5) as connection:
        connection.sendall(head.encode())
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    return status, (json.loads(body) if body.startswith(b"{") else {"html": body.decode()})


# --- the page and its files ---------------------------------------------------------------------------


def test_a_browser_gets_the_page_and_a_script_still_gets_the_json_description(collector: Collector) -> None:
    page = requests.get(collector.debugger_url, headers=BROWSER, timeout=5)
    scripted = requests.get(collector.url + "/", timeout=5)

    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<title>Segment debugger" in page.text
    assert scripted.headers["Content-Type"] == "application/json"
    assert scripted.json()["service"] == "quickbot-segment collector (Segment-compatible)"
    assert page.headers["Vary"] == scripted.headers["Vary"] == "Accept"  # a cache never mixes the two up


def test_the_page_is_served_under_a_strict_content_security_policy(collector: Collector) -> None:
    page = requests.get(collector.debugger_url, headers=BROWSER, timeout=5)
    directives = (item.strip().partition(" ") for item in page.headers["Content-Security-Policy"].split(";"))
    policy = {name: value for name, _, value in directives}

    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"  # no inline script, no eval, no other origin
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    for path in ASSETS:
        assert requests.get(collector.url + path, timeout=5).headers["X-Content-Type-Options"] == "nosniff"
    # Every response carries nosniff, the JSON API included: a stored value is never sniffed into HTML.
    assert requests.get(collector.url + "/events", timeout=5).headers["X-Content-Type-Options"] == "nosniff"


def test_the_page_needs_nothing_from_the_internet(collector: Collector) -> None:
    """The QuickBot machine may be offline: every file the page loads comes from the collector."""
    page = requests.get(collector.debugger_url, headers=BROWSER, timeout=5).text
    loaded = re.findall(r"""(?:src|href)="([^"]+)\"""", page)

    assert loaded, "the page loads its script and style sheet"
    assert all(path.startswith("/debugger/") for path in loaded), loaded
    for path, kind in ASSETS.items():
        response = requests.get(collector.url + path, timeout=5)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith(kind)
        assert re.search(r"https?://(?!www\.w3\.org/2000/svg)", response.text) is None, path
    # No inline script for the policy to block: every <script> element names a file and is empty.
    assert re.findall(r"<script\b[^>]*>(.*?)</script>", page, re.S) == [""]
    assert re.search(r"\son[a-z]+=", page) is None  # no inline event handlers


def test_the_shipped_files_are_small() -> None:
    folder = resources.files("quickbot_segment_plugin.collector") / "page"
    sizes = {
        name: len(folder.joinpath(name).read_bytes())
        for name in ("index.html", "debugger.js", "debugger.css", "icon.svg")
    }
    assert sum(sizes.values()) < 64 * 1024, sizes


def test_the_script_never_parses_event_data_as_markup() -> None:
    """A guard on the page's source; the browser test proves the same thing with a real payload."""
    source = (resources.files("quickbot_segment_plugin.collector") / "page" / "debugger.js").read_text("utf-8")
    script = re.sub(r"^\s*//.*$", "", source, flags=re.M)  # the comments may name what the code avoids
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        'setAttribute("on',
    ):
        assert sink not in script, sink


@pytest.mark.parametrize(
    "path",
    [
        "/debugger/",
        "/debugger/nope.js",
        "/debugger/../collector.py",
        "/debugger/%2e%2e/collector.py",
        "/debugger/index.html/x",
    ],
)
def test_only_the_page_files_are_served_from_the_debugger_folder(collector: Collector, path: str) -> None:
    status, body = raw_get(collector, path, "127.0.0.1")  # sent as written, dot segments included
    assert status == 404
    assert body["code"] == "not_found"


def test_the_debugger_files_are_read_only(collector: Collector) -> None:
    assert requests.post(collector.url + "/debugger/debugger.js", data=b"x", timeout=5).status_code == 405
    assert requests.post(collector.url + "/summary", data=b"x", timeout=5).status_code == 405


# --- who may read it -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/debugger/debugger.js", "/events", "/summary", "/batches/abc", "/rejections"])
def test_a_page_on_another_site_cannot_read_the_debugger_by_rebinding_its_name(collector: Collector, path: str) -> None:
    """DNS rebinding: evil.example resolves to 127.0.0.1, so the browser sends Host: evil.example."""
    status, body = raw_get(collector, path, f"evil.example:{collector.port}")
    assert status == 403
    assert body["code"] == "forbidden_host"
    assert "--allow-remote" in body["message"]


def test_a_rebinding_page_cannot_clear_the_events_either(collector: Collector) -> None:
    send_batch(collector, message())
    status, _ = raw_get(collector, "/events", "evil.example", method="DELETE")
    assert status == 403
    assert collector.count() == 1


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}", "127.0.0.1"])
def test_loopback_names_reach_the_debugger(collector: Collector, host: str) -> None:
    status, body = raw_get(collector, "/", host.format(port=collector.port))
    assert status == 200
    assert "Segment debugger" in body["html"]


def test_the_tracking_api_keeps_accepting_any_host_name(collector: Collector) -> None:
    body = json.dumps({"writeKey": WRITE_KEY, "userId": "u", "event": "Proxied"}).encode()
    head = (
        f"POST /v1/track HTTP/1.1\r\nHost: segment-proxy.internal\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", collector.port), timeout=5) as connection:
        connection.sendall(head.encode() + body)
        answer = connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200")
    assert collector.count() == 1


def test_an_operator_who_allows_remote_clients_gets_the_debugger_under_any_name() -> None:
    with Collector(allow_remote=True) as open_collector:
        status, body = raw_get(open_collector, "/", "collector.lan:8787")
    assert status == 200
    assert "Segment debugger" in body["html"]


# --- the raw batch each event came in -------------------------------------------------------------------


def test_each_row_links_to_the_request_it_came_in_without_the_write_key(collector: Collector) -> None:
    sent = [message("identify", traits={"plan": "pro"}), message(), message("page", name="Pricing")]
    send_batch(collector, *sent, context={"locale": "fr-FR"})
    rows = collector.events()

    assert {row["batch_id"] for row in rows} == {rows[0]["batch_id"]}
    batch = collector.batch(rows[0]["batch_id"])
    assert batch is not None
    assert batch["path"] == "/v1/batch"
    assert batch["messages_stored"] == 3
    assert [item["messageId"] for item in batch["body"]["batch"]] == [item["messageId"] for item in sent]
    assert batch["body"]["context"] == {"locale": "fr-FR"}  # as sent: not merged into the items
    assert "sentAt" in batch["body"]
    assert batch["bytes"] == len(
        json.dumps(
            {"batch": sent, "context": {"locale": "fr-FR"}, "sentAt": batch["body"]["sentAt"], "writeKey": WRITE_KEY}
        )
    )
    assert batch["write_key_fingerprint"] == rows[0]["write_key_fingerprint"]
    over_http = requests.get(f"{collector.url}/batches/{rows[0]['batch_id']}", timeout=5).json()
    assert over_http == batch
    assert "writeKey" not in json.dumps(batch)
    assert WRITE_KEY not in json.dumps(batch)


def test_a_write_key_inside_a_batch_item_is_not_kept_either(collector: Collector) -> None:
    send_batch(collector, message(writeKey=WRITE_KEY + "-item"))
    batch = collector.batch(collector.events()[0]["batch_id"])
    assert batch is not None
    assert WRITE_KEY not in json.dumps(batch)
    assert batch["body"]["batch"][0]["event"] == "Lead Qualified"


def test_a_gzipped_batch_is_shown_decoded_with_its_size_on_the_wire(collector: Collector) -> None:
    send_batch(collector, *[message(properties={"n": n, "pad": "x" * 200}) for n in range(20)], gzip=True)
    batch = collector.batch(collector.events()[0]["batch_id"])
    assert batch is not None
    assert [item["properties"]["n"] for item in batch["body"]["batch"]] == list(range(20))
    assert batch["bytes"] < len(json.dumps(batch["body"]))  # compressed: what crossed the network


def test_a_single_call_is_its_own_batch(collector: Collector) -> None:
    body = {"writeKey": WRITE_KEY, "userId": "u-7", "event": "Signed Up", "properties": {"plan": "pro"}}
    assert requests.post(collector.url + "/v1/track", json=body, timeout=5).status_code == 200
    batch = collector.batch(collector.events()[0]["batch_id"])
    assert batch is not None
    assert batch["path"] == "/v1/track"
    assert batch["body"] == {key: value for key, value in body.items() if key != "writeKey"}


def test_an_unknown_or_cleared_batch_is_a_404(collector: Collector) -> None:
    send_batch(collector, message())
    batch_id = collector.events()[0]["batch_id"]
    requests.delete(collector.url + "/events", timeout=5)

    assert collector.batch(batch_id) is None
    response = requests.get(f"{collector.url}/batches/{batch_id}", timeout=5)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert requests.get(f"{collector.url}/batches/{'x' * 500}", timeout=5).status_code == 404


# --- the live cursor ----------------------------------------------------------------------------------


def test_after_id_returns_only_what_arrived_since_the_last_poll(collector: Collector) -> None:
    send_batch(collector, message(event="First"), message(event="Second"))
    seen = max(row["id"] for row in collector.events())
    send_batch(collector, message(event="Third"))

    page = requests.get(f"{collector.url}/events", params={"after_id": seen}, timeout=5).json()
    assert [row["message"]["event"] for row in page["events"]] == ["Third"]
    assert page["total"] == 1
    assert [row["message"]["event"] for row in collector.events(after_id=seen)] == ["Third"]
    everything = requests.get(f"{collector.url}/events", params={"after_id": 0}, timeout=5).json()
    assert [row["message"]["event"] for row in everything["events"]] == ["Third", "Second", "First"]


@pytest.mark.parametrize("value", ["-1", "soon", "1.5"])
def test_a_bad_after_id_is_a_400_naming_it(collector: Collector, value: str) -> None:
    response = requests.get(f"{collector.url}/events", params={"after_id": value}, timeout=5)
    assert response.status_code == 400
    assert response.json()["message"].startswith("after_id must be a whole number")


# --- the summary strip ----------------------------------------------------------------------------------


def test_the_summary_counts_types_flags_and_minutes(collector: Collector) -> None:
    repeated = message(event="Retried")
    send_batch(
        collector,
        message("identify", traits={"age": "thirty"}),  # a reserved trait of the wrong type: a warning
        repeated,
        repeated,  # the same messageId twice: a duplicate
        message("page", name="Pricing"),
    )
    summary = requests.get(f"{collector.url}/summary", timeout=5).json()

    assert summary["total"] == 4
    assert summary["by_type"] == {"identify": 1, "track": 2, "page": 1}
    assert summary["duplicates"] == 1
    assert summary["with_warnings"] == 1
    assert summary["with_violations"] == 0
    assert summary["minutes"] == 30
    assert len(summary["per_minute"]) == 30
    assert sum(minute["total"] for minute in summary["per_minute"]) == 4
    assert summary["per_minute"][-1]["minute"] == summary["now"][:16] + "Z"  # the current minute, last
    assert len(requests.get(f"{collector.url}/summary?minutes=5", timeout=5).json()["per_minute"]) == 5


@pytest.mark.parametrize("value", ["0", "1441", "x"])
def test_a_bad_summary_window_is_a_400_naming_it(collector: Collector, value: str) -> None:
    response = requests.get(f"{collector.url}/summary", params={"minutes": value}, timeout=5)
    assert response.status_code == 400
    assert response.json()["message"].startswith("minutes must be a whole number from 1 to 1440")


@pytest.mark.parametrize("minutes", [0, 1441, True, 2.5])
def test_the_python_summary_names_a_bad_window(collector: Collector, minutes: Any) -> None:
    with pytest.raises(CollectorError) as raised:
        collector.summary(minutes)
    assert raised.value.field == "minutes"


def _at(moment: datetime) -> str:
    return format_iso8601(moment)


ITEMS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=90 * 60 * 1000),  # received this many ms before "now"
        st.sampled_from(["track", "identify", "page"]),
        st.sampled_from(["m-1", "m-2", "m-3", "m-4"]),  # few messageIds: duplicates happen
        st.booleans(),  # with a warning
        st.booleans(),  # with a violation
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(
    now=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
    items=ITEMS,
    minutes=st.integers(min_value=1, max_value=120),
)
def test_the_running_counts_always_match_a_recount_of_the_file(
    tmp_path_factory: pytest.TempPathFactory, now: datetime, items: list[tuple[int, str, str, bool, bool]], minutes: int
) -> None:
    """The summary is kept up to date as rows arrive (a page polls it); across hour, day, month
    and year boundaries it must say what counting the stored rows again says."""
    now = now.replace(tzinfo=UTC)
    path = tmp_path_factory.mktemp("summary") / "events.sqlite3"
    store = EventStore(path)
    try:
        assert store.summary(minutes, _at(now))["total"] == 0  # counting starts before the rows arrive
        for age, kind, message_id, warned, violated in items:
            store.add(
                [message(kind, messageId=message_id)],
                [["a warning"] if warned else []],
                received_at=_at(now - timedelta(milliseconds=age)),
                batch_id=uuid.uuid4().hex,
                write_key_fingerprint="sha256:x",
                violations=[["a violation"] if violated else []],
            )
        live = store.summary(minutes, _at(now))
    finally:
        store.close()
    reopened = EventStore(path)
    try:
        recount = reopened.summary(minutes, _at(now))
    finally:
        reopened.close()

    assert live == recount
    first_minute = (now - timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    expected = sum(1 for age, *_ in items if now - timedelta(milliseconds=age) >= first_minute)
    buckets = live["per_minute"]
    assert len(buckets) == minutes
    assert sum(bucket["total"] for bucket in buckets) == expected
    assert buckets[-1]["minute"] == _at(now)[:16] + "Z"
    assert [bucket["minute"] for bucket in buckets] == sorted(bucket["minute"] for bucket in buckets)
    assert live["total"] == len(items)
    assert live["with_warnings"] == sum(item[3] for item in items)
    assert live["with_violations"] == sum(item[4] for item in items)
    assert live["duplicates"] == len(items) - len({item[2] for item in items})


def test_clearing_the_events_resets_the_summary(collector: Collector) -> None:
    send_batch(collector, message(), message("page", name="Pricing"))
    assert collector.summary()["total"] == 2
    assert collector.summary()["last_id"] == max(row["id"] for row in collector.events())
    requests.delete(collector.url + "/events", timeout=5)
    assert collector.summary()["last_id"] == 0  # how a page following new rows sees the clear
    send_batch(collector, message())
    summary = collector.summary()
    assert (summary["total"], summary["by_type"]) == (1, {"track": 1})
    assert sum(minute["total"] for minute in summary["per_minute"]) == 1


# --- tracking-plan violations ---------------------------------------------------------------------------


def test_every_row_carries_a_violations_list_empty_until_a_plan_is_checked(collector: Collector) -> None:
    send_batch(collector, message())
    assert collector.events()[0]["violations"] == []
    assert requests.get(f"{collector.url}/events", timeout=5).json()["events"][0]["violations"] == []


def test_violations_stored_with_a_message_reach_the_read_api_and_the_summary(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    store = EventStore(path)
    store.add(
        [message(event="Lead Qualifed"), message()],
        [[], []],
        received_at=_at(datetime.now(UTC)),
        batch_id="b1",
        write_key_fingerprint="sha256:x",
        violations=[["event 'Lead Qualifed' is not in the tracking plan"], []],
    )
    store.close()
    with Collector(path) as kept:
        rows = kept.events()
        assert [row["violations"] for row in rows] == [[], ["event 'Lead Qualifed' is not in the tracking plan"]]
        assert kept.summary()["with_violations"] == 1


def test_violations_must_match_the_messages_one_to_one(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.sqlite3")
    try:
        with pytest.raises(ValueError, match="one list per message"):
            store.add(
                [message()],
                [[]],
                received_at="2024-01-01T00:00:00.000Z",
                batch_id="b",
                write_key_fingerprint="k",
                violations=[],
            )
    finally:
        store.close()


OLD_SCHEMA = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT, type TEXT, user_id TEXT, anonymous_id TEXT,
    event TEXT, received_at TEXT NOT NULL, batch_id TEXT NOT NULL, write_key_fingerprint TEXT NOT NULL,
    duplicate INTEGER NOT NULL, warnings TEXT NOT NULL, message TEXT NOT NULL
);
CREATE TABLE rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL, path TEXT NOT NULL, status INTEGER NOT NULL,
    code TEXT NOT NULL, reason TEXT NOT NULL, batch_id TEXT NOT NULL, write_key_fingerprint TEXT
);
"""


def test_a_file_kept_by_an_older_collector_opens_and_keeps_its_events(tmp_path: Path) -> None:
    """`--db` files outlive upgrades: the older events show, with no raw batch and no violations."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript(OLD_SCHEMA)
        old.execute(
            "INSERT INTO events (message_id, type, user_id, event, received_at, batch_id, write_key_fingerprint, "
            "duplicate, warnings, message) VALUES ('m-old', 'track', 'u', 'Old', '2024-05-01T12:00:00.000Z', 'b-old', "
            "'sha256:x', 0, '[]', ?)",
            (json.dumps(message(event="Old", messageId="m-old")),),
        )
    old.close()
    path.chmod(0o600)  # files that others can read are refused (tests/test_store_files.py)

    with Collector(path) as upgraded:
        send_batch(upgraded, message(event="New"))
        rows = upgraded.events()
        assert [(row["message"]["event"], row["violations"]) for row in rows] == [("New", []), ("Old", [])]
        assert upgraded.batch("b-old") is None
        assert upgraded.batch(rows[0]["batch_id"]) is not None


# --- no write key, anywhere the page can look ----------------------------------------------------------------


def test_nothing_the_page_can_fetch_holds_a_write_key(collector: Collector) -> None:
    send_batch(collector, message(), message("identify", traits={"email": "zoe@example.com"}))
    requests.post(collector.url + "/v1/batch", data=b"{not json", auth=(WRITE_KEY, ""), timeout=5)
    batch_id = collector.events()[0]["batch_id"]

    fetched = [
        requests.get(collector.url + path, headers=BROWSER, timeout=5).text
        for path in ["/", *ASSETS, "/events", "/summary", f"/batches/{batch_id}", "/rejections"]
    ]
    fetched.append(requests.get(collector.url + "/", timeout=5).text)
    for text in fetched:
        assert WRITE_KEY not in text
        assert 'writeKey":' not in text.replace(" ", "")
