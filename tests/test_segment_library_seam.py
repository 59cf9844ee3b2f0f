"""The contract of `delivery.library`, the one module that reaches into segment-analytics-python.

Each test names one touchpoint. When a release of the library fails one, the message says what
changed and what to update; `pyproject.toml` pins the tested minor until then. These run against
the installed library and the embedded collector, never a mock.
"""

from __future__ import annotations

import atexit
import gzip
import inspect
import queue
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import requests
from segment.analytics import request as library_request
from segment.analytics.consumer import Consumer
from segment.analytics.version import VERSION

from quickbot_segment_plugin.collector import Collector
from quickbot_segment_plugin.collector.faults import Fault
from quickbot_segment_plugin.core import library_context
from quickbot_segment_plugin.delivery import library

pytestmark = pytest.mark.integration

WRITE_KEY = "wk_seam_contract_7Hq2"
TRACK = {"type": "track", "event": "Seam", "userId": "u-1", "messageId": "m-1"}


def touchpoint(name: str, update: str) -> str:
    return f"segment-analytics-python {VERSION}: touchpoint `{name}` changed; update {update} in delivery/library.py"


def wait_for(condition: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def client_and_consumer(collector: Collector) -> Iterator[tuple[Any, Any, list[Exception]]]:
    errors: list[Exception] = []
    client, consumer = library.new_client(
        WRITE_KEY,
        collector.url,
        lambda error, batch: errors.append(error),
        max_queue_size=100,
        batch_size=10,
        flush_interval=0.05,
        gzip=True,
        timeout=5,
        max_retries=2,
        max_backoff_seconds=2,
        max_rate_limit_seconds=5,
    )
    yield client, consumer, errors
    consumer.pause()
    if consumer.is_alive():
        consumer.join(5)


def test_new_client_builds_one_idle_consumer_and_keeps_no_atexit_hook(collector: Collector) -> None:
    before = atexit._ncallbacks()
    client, consumer = library.new_client(
        WRITE_KEY,
        collector.url,
        lambda error, batch: None,
        max_queue_size=10,
        batch_size=10,
        flush_interval=0.05,
        gzip=False,
        timeout=5,
        max_retries=0,
        max_backoff_seconds=1,
        max_rate_limit_seconds=1,
    )
    assert isinstance(consumer, Consumer) and isinstance(consumer, threading.Thread), touchpoint(
        "Client.consumers", "new_client"
    )
    assert client.consumers == [consumer], touchpoint("Client(thread=1).consumers", "new_client")
    assert not consumer.is_alive(), touchpoint("Client(send=False) starts no consumer", "new_client")
    assert atexit._ncallbacks() == before, touchpoint("atexit.register(client.join)", "new_client")


def test_use_queue_routes_the_clients_calls_into_the_given_queue(client_and_consumer: Any) -> None:
    client, consumer, _ = client_and_consumer
    ours: queue.Queue[Any] = queue.Queue()
    library.use_queue(client, consumer, ours)
    client.send = True
    queued, message = client.track(user_id="u-1", event="Seam")
    assert queued and ours.get_nowait() == message, touchpoint("Client.queue (put by _enqueue)", "use_queue")
    assert consumer.queue is ours, touchpoint("Consumer.queue", "use_queue")


def test_hooked_consumer_sends_what_next_returns_and_upload_reports_success(
    client_and_consumer: Any, collector: Collector
) -> None:
    client, consumer, errors = client_and_consumer
    ours: queue.Queue[Any] = queue.Queue()
    library.use_queue(client, consumer, ours)
    batches = [[dict(TRACK, timestamp="2026-12-07T00:00:00.000+00:00")]]
    results: list[bool] = []
    requeued: list[Any] = []

    def next_batch() -> list[dict[str, Any]]:
        if batches:
            ours.put(None)  # the library calls task_done once per event of the batch it sent
            return batches.pop()
        time.sleep(0.01)
        return []

    def make_upload(original: Callable[[], bool]) -> Callable[[], bool]:
        def upload() -> bool:
            outcome = original()
            results.append(outcome)
            return outcome

        return upload

    library.hook_consumer(consumer, next_batch, make_upload, lambda original: requeued.append)
    consumer.start()
    assert wait_for(lambda: collector.requests_received >= 1 and bool(results)), touchpoint(
        "Consumer.run -> upload -> next", "hook_consumer"
    )
    assert results[0] is True, touchpoint("Consumer.upload() returns True on success", "hook_consumer")
    assert [event["message"]["messageId"] for event in collector.events()] == ["m-1"]
    assert errors == [] and requeued == []


def test_a_sender_copies_the_first_consumers_settings(client_and_consumer: Any) -> None:
    _, consumer, _ = client_and_consumer
    sender = library.new_sender(consumer, queue.Queue(), lambda error, batch: None)
    for name in ("write_key", "host", "upload_size", "upload_interval", "gzip", "retries", "timeout"):
        assert getattr(sender, name) == getattr(consumer, name), touchpoint(f"Consumer.{name}", "new_sender")
    for name in ("max_total_backoff_duration", "max_rate_limit_duration"):
        assert getattr(sender, name) == getattr(consumer, name), touchpoint(f"Consumer.{name}", "new_sender")
    assert not sender.is_alive()


def test_rate_limit_state_lives_in_two_consumer_attributes(client_and_consumer: Any) -> None:
    _, consumer, _ = client_and_consumer
    assert library.rate_limit_of(consumer) is None, touchpoint("Consumer.rate_limit_start_time", "rate_limit_of")
    consumer.set_rate_limit_state(2)  # what the library does on a 429 with Retry-After: 2
    state = library.rate_limit_of(consumer)
    assert state is not None and state[1] is not None and state[1] > state[0], touchpoint(
        "Consumer.set_rate_limit_state / rate_limited_until", "rate_limit_of"
    )
    other = library.new_sender(consumer, queue.Queue(), lambda error, batch: None)
    library.set_rate_limit(other, state)
    assert library.rate_limit_of(other) == state, touchpoint("Consumer.rate_limited_until", "set_rate_limit")
    for name in ("next", "upload", "_requeue", "pause", "set_rate_limit_state", "clear_rate_limit_state"):
        assert callable(getattr(consumer, name, None)), touchpoint(f"Consumer.{name}", "hook_consumer")


@pytest.mark.parametrize("status", [400, 401, 404, 408, 413, 429, 500, 501, 503])
def test_which_statuses_the_consumer_retries(status: int, collector: Collector) -> None:
    collector.inject_faults([Fault(status=status, repeat=3)])
    batch = [dict(TRACK, timestamp="2026-12-07T00:00:00.000+00:00")]
    consumer = Consumer(queue.Queue(), WRITE_KEY, host=collector.url, retries=2, max_total_backoff_duration=3)
    with pytest.raises(Exception) as raised:
        consumer.request(batch)
    attempts = collector.requests_received
    expected = 1 if library.is_not_retried(status) else 3
    assert attempts == expected, touchpoint(f"Consumer.request retries HTTP {status}", "is_not_retried")
    assert getattr(raised.value, "status", None) == status


def test_refusals_and_oversize_are_the_exceptions_the_seam_names() -> None:
    validator = library.library_validator()
    with pytest.raises(library.REFUSAL_ERRORS) as refused:
        validator.track(event="Seam")
    assert library.refused_field(str(refused.value)) == "user_id or anonymous_id", touchpoint(
        "require() wording", "refused_field"
    )
    with pytest.raises(library.REFUSAL_ERRORS) as refused:
        validator.track(user_id="u-1", event=5)
    assert library.refused_field(str(refused.value)) == "event", touchpoint("require() wording", "refused_field")
    with pytest.raises(library.OVERSIZE_ERRORS):
        validator.track(user_id="u-1", event="Seam", properties={"big": "x" * 40_000})
    assert validator.queue.qsize() == 0, touchpoint("Client(send=False) queues nothing", "library_validator")


def test_batch_limit_and_library_version() -> None:
    assert isinstance(library.BATCH_SIZE_LIMIT, int) and 100_000 <= library.BATCH_SIZE_LIMIT <= 500_000, touchpoint(
        "consumer.BATCH_SIZE_LIMIT", "BATCH_SIZE_LIMIT"
    )
    # Shutdown's drain batches waiting events by count alone while they cannot reach the byte limit.
    validator = library.library_validator()
    with pytest.raises(library.OVERSIZE_ERRORS):
        validator.track(user_id="u-1", event="Seam", properties={"big": "x" * (library.MESSAGE_SIZE_LIMIT + 1)})
    assert 1_000 <= library.MESSAGE_SIZE_LIMIT < library.BATCH_SIZE_LIMIT, touchpoint(
        "consumer.MAX_MSG_SIZE", "MESSAGE_SIZE_LIMIT"
    )
    # core stamps context.library from the distribution's metadata; the library stamps VERSION.
    assert library_context() == {"name": "analytics-python", "version": VERSION}, touchpoint(
        "version.VERSION", "core.message._library_version"
    )
    assert version("segment-analytics-python") == VERSION


def test_the_shared_session_is_what_post_uses(collector: Collector) -> None:
    assert isinstance(library_request._session, requests.Session), touchpoint(
        "request._session", "prepare_library_session"
    )
    library.prepare_library_session(64)
    adapter: Any = library_request._session.get_adapter("http://127.0.0.1")
    assert adapter._pool_maxsize >= 64, touchpoint("request._session adapters", "prepare_library_session")
    used: list[str] = []
    original_post = library_request._session.post

    def recording_post(url: str, **kwargs: Any) -> Any:
        used.append(url)
        return original_post(url, **kwargs)

    library_request._session.post = recording_post  # type: ignore[method-assign]
    try:
        library_request.post(WRITE_KEY, host=collector.url, batch=[dict(TRACK, timestamp="2026-12-07T00:00:00Z")])
    finally:
        del library_request._session.post
    assert used == [collector.url + "/v1/batch"], touchpoint(
        "request.post uses request._session", "prepare_library_session"
    )


def test_the_session_reads_proxy_settings_again_when_they_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxy and CA bundle variables are remembered per host, never past a change of their values."""
    session = requests.Session()
    library.remember_environment_settings(session)
    plain = requests.Session()
    url = "https://api.segment.io/v1/batch"

    def both() -> tuple[Any, Any]:
        return (
            session.merge_environment_settings(url, {}, None, None, None),
            plain.merge_environment_settings(url, {}, None, None, None),
        )

    for name in library.ENVIRONMENT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    remembered, fresh = both()
    assert remembered == fresh and remembered["proxies"] == {}
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/operator-bundle.pem")
    remembered, fresh = both()
    assert remembered == fresh, touchpoint("Session.merge_environment_settings", "remember_environment_settings")
    assert remembered["proxies"]["https"] == "http://proxy.internal:3128"
    assert remembered["verify"] == "/etc/ssl/operator-bundle.pem"
    monkeypatch.setenv("NO_PROXY", "api.segment.io")
    remembered, fresh = both()
    assert remembered == fresh and "https" not in remembered["proxies"]
    remembered["proxies"]["https"] = "changed by a caller"
    assert both()[0] == fresh  # each caller gets its own copy


def test_gzip_level_is_the_gzip_file_name_request_uses(collector: Collector) -> None:
    assert "GzipFile" in inspect.getsource(library_request.post), touchpoint(
        "request.post's GzipFile", "set_gzip_level"
    )
    opened: list[int] = []
    original = gzip.GzipFile

    class Recording(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, compresslevel: int = 9, **kwargs: Any) -> None:
            opened.append(compresslevel)
            super().__init__(*args, compresslevel=compresslevel, **kwargs)

    gzip.GzipFile = Recording  # type: ignore[misc]
    try:
        library.set_gzip_level(1)
        library_request.post(
            WRITE_KEY, host=collector.url, gzip=True, batch=[dict(TRACK, timestamp="2026-12-07T00:00:00Z")]
        )
    finally:
        gzip.GzipFile = original  # type: ignore[misc]
        library.set_gzip_level(9)
    assert opened == [1], touchpoint("request.GzipFile", "set_gzip_level")
    assert library_request.GzipFile is original


def test_only_the_seam_imports_the_library() -> None:
    """import-linter keeps segment-analytics-python out of every package but delivery; inside
    delivery, only library.py may import it, so a new release has one module to check."""
    import quickbot_segment_plugin.delivery as delivery

    package = Path(delivery.__file__).parent
    offenders = [
        path.name
        for path in sorted(package.glob("*.py"))
        if path.name != "library.py"
        and any(
            line.strip().startswith(("import segment", "from segment"))
            for line in path.read_text(encoding="utf-8").splitlines()
        )
    ]
    assert offenders == []
