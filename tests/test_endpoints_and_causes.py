"""Endpoint URLs checked and normalised; request failures described in words an operator acts on."""

from __future__ import annotations

import socket
import ssl

import pytest
import requests
from segment.analytics.request import APIError

from quickbot_segment_plugin.core.endpoints import parse_endpoint
from quickbot_segment_plugin.core.errors import ConfigurationError
from quickbot_segment_plugin.core.regions import endpoint_for
from quickbot_segment_plugin.delivery.causes import describe_failure


@pytest.mark.parametrize(
    ("raw", "url", "removed"),
    [
        ("https://api.segment.io", "https://api.segment.io", None),
        ("https://api.segment.io/", "https://api.segment.io", None),
        ("https://api.segment.io/v1", "https://api.segment.io", "/v1"),
        ("https://api.segment.io/v1/batch", "https://api.segment.io", "/v1/batch"),
        ("https://api.segment.io/v1/batch/", "https://api.segment.io", "/v1/batch"),
        ("http://127.0.0.1:8787/segment/v1/batch", "http://127.0.0.1:8787/segment", "/v1/batch"),
        ("http://proxy.internal/segment", "http://proxy.internal/segment", None),
    ],
)
def test_a_base_url_is_kept_and_a_trailing_api_path_removed(raw: str, url: str, removed: str | None) -> None:
    endpoint = parse_endpoint(raw, "QUICKBOT_SEGMENT_ENDPOINT")
    assert (endpoint.url, endpoint.removed_suffix) == (url, removed)


def test_removing_v1_batch_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="quickbot_segment_plugin.endpoints"):
        assert endpoint_for("us", {"QUICKBOT_SEGMENT_ENDPOINT": "https://logged.example/v1/batch"}) == (
            "https://logged.example"
        )
        endpoint_for("us", {"QUICKBOT_SEGMENT_ENDPOINT": "https://logged.example/v1/batch"})
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "QUICKBOT_SEGMENT_ENDPOINT ends in /v1/batch; using https://logged.example (the plugin adds /v1/batch itself)."
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("api.segment.io", "must start with http:// or https://"),
        ("ftp://api.segment.io", "must start with http:// or https://"),
        ("https://", "has no host name"),
        ("https://api.segment.io:99999", "has an invalid port"),
        ("https://user:secret@api.segment.io", "must not contain a user name or password"),
        ("https://api.segment.io/?x=1", "must not have a query or fragment"),
    ],
)
def test_an_endpoint_that_cannot_work_is_refused_naming_the_variable(raw: str, expected: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        endpoint_for("us", {"QUICKBOT_SEGMENT_ENDPOINT": raw})
    assert str(raised.value).startswith("QUICKBOT_SEGMENT_ENDPOINT ")
    assert expected in str(raised.value)
    assert "secret" not in str(raised.value)


def _wrapped(inner: BaseException) -> requests.exceptions.ConnectionError:
    """How requests reports a socket-level failure: the OS error deep in the chain."""
    try:
        try:
            raise inner
        except BaseException as error:
            raise requests.exceptions.ConnectionError("HTTPSConnectionPool: Max retries exceeded") from error
    except requests.exceptions.ConnectionError as outer:
        return outer


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_wrapped(ConnectionRefusedError(111, "Connection refused")), "connection refused by events.example:443"),
        (_wrapped(socket.gaierror(-2, "Name or service not known")), "DNS lookup failed for events.example:443"),
        (
            requests.exceptions.SSLError(ssl.SSLError(1, "CERTIFICATE_VERIFY_FAILED")),
            "TLS error with events.example:443",
        ),
        (requests.exceptions.ReadTimeout("read timed out"), "timed out waiting for events.example:443"),
        (APIError(404, "not_found", "no such route"), "HTTP 404 from events.example:443: no such route"),
    ],
)
def test_each_failure_is_named(error: Exception, expected: str) -> None:
    assert describe_failure(error, "https://events.example:443").startswith(expected)
