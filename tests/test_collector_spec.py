"""Segment's rules as the collector applies them: dates, skew correction, debugger warnings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quickbot_segment_plugin.collector.spec import apply_timestamps, check_message
from quickbot_segment_plugin.core.timestamps import parse_segment_timestamp as parse_iso8601
from quickbot_segment_plugin.core.timestamps import segment_timestamp as format_iso8601

RECEIVED = datetime(2024, 6, 1, 12, 0, 0, 500000, tzinfo=UTC)


@given(
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]),
    )
)
def test_iso_dates_round_trip_to_the_millisecond(moment: datetime) -> None:
    text = format_iso8601(moment)
    assert text.endswith("Z")
    parsed = parse_iso8601(text)
    assert parsed is not None
    assert parsed == moment.astimezone(UTC).replace(microsecond=moment.microsecond // 1000 * 1000)
    assert parse_iso8601(moment.isoformat()) == moment  # Python's own format, any offset


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02", datetime(2024, 1, 2, tzinfo=UTC)),
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05.1Z", datetime(2024, 1, 2, 3, 4, 5, 100000, tzinfo=UTC)),
        ("2024-01-02T03:04:05.123456789Z", datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        ("2024-01-02T05:04:05+02:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T05:04:05+0200", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),  # no offset: UTC
    ],
)
def test_iso_dates_segment_payloads_use(text: str, expected: datetime) -> None:
    assert parse_iso8601(text) == expected


@pytest.mark.parametrize(
    "text", ["yesterday", "2024-13-01", "2024-02-30T00:00:00Z", "2024-01-01T25:00:00Z", "", 1700000000, None]
)
def test_non_dates_are_not_dates(text: Any) -> None:
    assert parse_iso8601(text) is None


def test_skew_correction_uses_sent_at_from_the_message_before_the_batch() -> None:
    message = {"timestamp": "2024-06-01T11:59:00.000Z", "sentAt": "2024-06-01T11:59:30.000Z"}
    warnings = apply_timestamps(message, RECEIVED, batch_sent_at="2000-01-01T00:00:00Z")
    assert warnings == []
    assert message["timestamp"] == "2024-06-01T11:59:30.500Z"  # 30 s before it was received
    assert message["receivedAt"] == "2024-06-01T12:00:00.500Z"


def test_unreadable_dates_are_warned_about_and_not_used() -> None:
    bad_sent_at = {"timestamp": "2024-06-01T11:59:00.000Z"}
    warnings = apply_timestamps(bad_sent_at, RECEIVED, batch_sent_at="soon")
    assert bad_sent_at["timestamp"] == "2024-06-01T11:59:00.000Z"
    assert any("sentAt is not an ISO-8601 date" in warning for warning in warnings)

    bad_timestamp: dict[str, Any] = {"timestamp": 12}
    warnings = apply_timestamps(bad_timestamp, RECEIVED, batch_sent_at=None)
    assert bad_timestamp["timestamp"] == bad_timestamp["receivedAt"]
    assert bad_timestamp["originalTimestamp"] == 12
    assert any("timestamp is not an ISO-8601 date" in warning for warning in warnings)


def test_a_skew_past_the_calendar_falls_back_to_received_at() -> None:
    message = {"timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-01-01T00:00:00Z"}
    apply_timestamps(message, RECEIVED, batch_sent_at=None)
    assert message["timestamp"] == message["receivedAt"]


def clean(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "messageId": "m", "userId": "u", **fields}


@pytest.mark.parametrize(
    "message",
    [
        clean("identify", traits={"email": "a@b.c", "age": 3, "createdAt": "2020-01-01", "company": {"name": "x"}}),
        clean("identify", traits={"first_name": "Ada", "created_at": "2020-01-01T00:00:00Z", "id": 7}),
        clean("track", event="Signed Up", properties={"anything": [1, {"x": None}]}),
        clean("page", name="Home", category="Docs"),
        clean("screen"),
        clean("group", groupId="g", traits={"employees": 20, "plan": "pro"}),
        clean("group", groupId=5, traits={"employees": "20"}),
        {"type": "alias", "messageId": "m", "userId": "u", "previousId": "anon"},
        {"type": "track", "messageId": "m", "anonymousId": "a", "event": "e"},
        clean("track", event="e", userId=12345),
    ],
)
def test_messages_that_follow_the_spec_have_no_warnings(message: dict[str, Any]) -> None:
    assert check_message(message) == []


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"type": "track", "messageId": "m", "event": "e"}, "no_user_anon_id"),
        ({"type": "track", "messageId": "m", "event": "e", "userId": ""}, "no_user_anon_id"),
        ({"type": "alias", "messageId": "m", "anonymousId": "a", "previousId": "p"}, "alias requires userId"),
        ({"type": "alias", "messageId": "m", "userId": "u"}, "alias requires previousId"),
        (clean("track"), "track requires event"),
        (clean("track", event="  "), "track requires event"),
        (clean("group"), "group requires groupId"),
        (clean("signup"), "type must be one of"),
        ({"messageId": "m", "userId": "u"}, "type must be one of"),
        (clean("track", event="e", messageId="m" * 101), "at most 100"),
        (clean("track", event="e", messageId=5), "messageId must be a string"),
        (clean("track", event="e", userId={"id": 1}), "userId must be a string"),
        (clean("track", event="e", properties=[1]), "properties must be an object"),
        (clean("page", name=3), "page name must be a string"),
        (clean("identify", traits={"email": ["a@b.c"]}), "traits.email"),
        (clean("identify", traits={"age": "31"}), "traits.age"),
        (clean("identify", traits={"age": True}), "traits.age"),
        (clean("identify", traits={"birthday": "soon"}), "traits.birthday"),
        (clean("identify", traits={"created_at": 1700000000}), "traits.created_at"),
        (clean("identify", traits={"address": "1 Main St"}), "traits.address"),
        (clean("identify", traits={"company": "Initech"}), "traits.company"),
        (clean("identify", traits={"first_name": 5}), "traits.first_name"),
        (clean("group", groupId="g", traits={"employees": [1]}), "traits.employees"),
        (clean("group", groupId="g", traits={"industry": 5}), "traits.industry"),
    ],
)
def test_spec_violations_are_named(message: dict[str, Any], expected: str) -> None:
    warnings = check_message(message)
    assert any(expected in warning for warning in warnings), warnings
