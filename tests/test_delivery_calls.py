"""Wire-form message -> the library's public call, and the delivery settings from the environment.

The mapping is checked through the real library: a `send=False` client runs the library's
own validation and builds its final message without queueing or sending anything.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segment.analytics import Client

from quickbot_segment_plugin.core.errors import ConfigurationError
from quickbot_segment_plugin.delivery.calls import CALL_FIELDS, parse_timestamp, python310_iso, to_library_call
from quickbot_segment_plugin.delivery.pool import DeliveryError, DeliverySettings

OFFLINE = Client(write_key="offline-validator", send=False)  # validates and builds; no thread, no network

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=12), json_values, max_size=6)
ids = st.text(min_size=1, max_size=30).filter(str.strip)
aware_datetimes = st.builds(
    lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=datetime(1971, 1, 2), max_value=datetime(2200, 1, 1)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)


@st.composite
def wire_messages(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(CALL_FIELDS)))
    moment = draw(aware_datetimes)
    message: dict[str, Any] = {
        "type": kind,
        "messageId": draw(ids),
        "timestamp": moment.isoformat(timespec="milliseconds"),
        "context": draw(json_objects.filter(lambda context: "library" not in context)),
        "integrations": draw(st.dictionaries(st.text(min_size=1, max_size=10), st.booleans(), max_size=3)),
    }
    if kind == "alias":
        message.update(userId=draw(ids), previousId=draw(ids))
        return message
    subject = draw(st.sampled_from(["userId", "anonymousId", "both"]))
    if subject in ("userId", "both"):
        message["userId"] = draw(ids)
    if subject in ("anonymousId", "both"):
        message["anonymousId"] = draw(ids)
    if kind == "track":
        message.update(event=draw(ids), properties=draw(json_objects))
    elif kind in ("identify", "group"):
        message["traits"] = draw(json_objects)
        if kind == "group":
            message["groupId"] = draw(ids)
    else:
        message.update(name=draw(ids), category=draw(ids), properties=draw(json_objects))
    return message


def library_message(message: dict[str, Any]) -> dict[str, Any]:
    queued, built = to_library_call(message).apply(OFFLINE)
    assert queued
    return built


@settings(max_examples=150, deadline=None)
@given(wire_messages())
def test_every_field_given_reaches_the_library_message_unchanged(message: dict[str, Any]) -> None:
    original = json.loads(json.dumps(message))
    built = library_message(message)
    assert message == original  # the caller's dicts (context above all) are not touched
    built = json.loads(json.dumps(built))
    context = built.pop("context")
    assert context.pop("library")["name"] == "analytics-python"  # the one thing the library adds
    assert context == original.pop("context")
    # The library adds nulls for absent ids/names and {} for absent traits/properties only.
    extra = {k: v for k, v in built.items() if k not in original}
    assert all(v is None or v == {} for v in extra.values())
    assert {k: v for k, v in built.items() if k in original} == original


@settings(max_examples=100, deadline=None)
@given(wire_messages())
def test_a_message_rebuilt_from_its_library_form_is_the_same_message(message: dict[str, Any]) -> None:
    """What the waiting room does: validate now, make the real call later."""
    first = library_message(message)
    _, second = to_library_call(first).apply(OFFLINE)
    assert second == first


@settings(max_examples=200, deadline=None)
@given(aware_datetimes, st.sampled_from(["auto", "milliseconds", "seconds"]))
def test_timestamps_parse_to_the_same_instant_and_offset(moment: datetime, spec: str) -> None:
    text = moment.isoformat(timespec=spec)
    parsed = parse_timestamp(text)
    kept = {"auto": moment.microsecond, "milliseconds": moment.microsecond // 1000 * 1000, "seconds": 0}[spec]
    assert parsed == moment.replace(microsecond=kept)
    assert parsed is not None and parsed.utcoffset() == moment.utcoffset()
    assert parse_timestamp(text.replace("+00:00", "Z")) == parsed
    # The spelling Python 3.10 is given when its fromisoformat refuses the text: the same instant.
    respelled = python310_iso(text.replace("+00:00", "Z"))
    assert re.fullmatch(r"[^.]+T\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d(:\d\d(\.\d+)?)?", respelled), respelled
    assert datetime.fromisoformat(respelled) == parsed


@pytest.mark.parametrize(
    ("spelling", "python310"),
    [
        ("2024-02-29T23:59:59.9876543-03:00", "2024-02-29T23:59:59.987654-03:00"),
        ("2024-02-29T23:59:59.5Z", "2024-02-29T23:59:59.500000+00:00"),
        ("2024-02-29T23:59:59z", "2024-02-29T23:59:59.000000+00:00"),
        (" 2024-02-29T23:59:59,25+01:00 ", "2024-02-29T23:59:59.250000+01:00"),
    ],
)
def test_spellings_python_310_refuses_are_rewritten_to_the_same_instant(spelling: str, python310: str) -> None:
    assert python310_iso(spelling) == python310
    assert parse_timestamp(spelling) == datetime.fromisoformat(python310)


def test_a_timestamp_without_offset_is_utc_and_garbage_is_refused() -> None:
    assert parse_timestamp("2024-01-02T03:04:05") == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_timestamp(None) is None
    for bad in ("soon", "2024-13-01T00:00:00Z", 12345):
        with pytest.raises(DeliveryError) as raised:
            parse_timestamp(bad)
        assert raised.value.field == "timestamp"


def test_fields_a_call_cannot_carry_are_refused_not_dropped() -> None:
    with pytest.raises(DeliveryError) as raised:
        to_library_call({"type": "alias", "userId": "u", "previousId": "p", "anonymousId": "a"})
    assert raised.value.field == "anonymousId"
    with pytest.raises(DeliveryError) as raised:
        to_library_call({"type": "identify", "userId": "u", "properties": {}})
    assert raised.value.field == "properties"
    with pytest.raises(DeliveryError) as raised:
        to_library_call(["not", "a", "message"])  # type: ignore[arg-type]
    assert raised.value.field == "message"
    with pytest.raises(DeliveryError) as raised:
        to_library_call({"type": "track", "userId": "u", "event": "E", "context": "ctx"})
    assert raised.value.field == "context"


# --- settings -----------------------------------------------------------------------------


def test_settings_defaults_and_every_variable() -> None:
    assert DeliverySettings.from_env({}) == DeliverySettings()
    environ = {
        "QUICKBOT_SEGMENT_MAX_QUEUE_SIZE": "1_000",
        "QUICKBOT_SEGMENT_BATCH_SIZE": "500",
        "QUICKBOT_SEGMENT_FLUSH_INTERVAL": "0.25",
        "QUICKBOT_SEGMENT_TIMEOUT": "3",
        "QUICKBOT_SEGMENT_MAX_RETRIES": "0",
        "QUICKBOT_SEGMENT_GZIP": "off",
        "QUICKBOT_SEGMENT_MAX_CLIENTS": "7",
        "QUICKBOT_SEGMENT_CLIENT_IDLE_SECONDS": "60",
        "QUICKBOT_SEGMENT_CLOSE_TIMEOUT": "2.5",
        "QUICKBOT_SEGMENT_EXIT_TIMEOUT": "0",
        "QUICKBOT_SEGMENT_MAX_BACKOFF_SECONDS": "30",
        "QUICKBOT_SEGMENT_MAX_RATE_LIMIT_SECONDS": "600",
    }
    assert DeliverySettings.from_env(environ) == DeliverySettings(
        max_queue_size=1000,
        batch_size=500,
        flush_interval=0.25,
        timeout=3.0,
        max_retries=0,
        gzip=False,
        max_clients=7,
        client_idle_seconds=60.0,
        close_timeout=2.5,
        exit_timeout=0.0,
        max_backoff_seconds=30.0,
        max_rate_limit_seconds=600.0,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("QUICKBOT_SEGMENT_MAX_QUEUE_SIZE", "0"),
        ("QUICKBOT_SEGMENT_BATCH_SIZE", "2501"),  # Segment takes at most 2,500 events a batch
        ("QUICKBOT_SEGMENT_FLUSH_INTERVAL", "soon"),
        ("QUICKBOT_SEGMENT_TIMEOUT", "-1"),
        ("QUICKBOT_SEGMENT_GZIP", "maybe"),
        ("QUICKBOT_SEGMENT_MAX_CLIENTS", "0"),
        ("QUICKBOT_SEGMENT_CLIENT_IDLE_SECONDS", "0.001"),
    ],
)
def test_a_malformed_variable_is_an_error_naming_it(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        DeliverySettings.from_env({name: value})
    assert raised.value.field == name
    assert name in str(raised.value)


def test_with_overrides_checks_what_it_changes() -> None:
    tuned = DeliverySettings().with_overrides(max_clients=3, flush_interval=0.05)
    assert (tuned.max_clients, tuned.flush_interval, tuned.batch_size) == (3, 0.05, DeliverySettings().batch_size)
    with pytest.raises(TypeError):
        DeliverySettings().with_overrides(max_client=3)
    with pytest.raises(ConfigurationError) as raised:
        DeliverySettings().with_overrides(batch_size=0)
    assert raised.value.field == "batch_size"
