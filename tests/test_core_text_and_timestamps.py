"""The shared helpers of core/text.py and core/timestamps.py that several subsystems' messages and stores rely on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from quickbot_segment_plugin.core import (
    LIBRARY_TIMESTAMP,
    describe,
    excerpt,
    library_timestamp,
    parse_iso8601,
    parse_segment_timestamp,
    parse_stored_timestamp,
    segment_timestamp,
    shorten,
    stored_timestamp,
    utc_now_text,
)


def test_shorten_cuts_to_the_limit_including_the_mark() -> None:
    assert shorten("abcdef", 6) == "abcdef"
    assert shorten("abcdefg", 6) == "abcde…"
    assert shorten("abcdefg", 6, "...") == "abc..."
    assert excerpt("x" * 50) == repr("x" * 39 + "…")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "null"),
        (True, "the yes/no value true"),
        (3, "the number 3"),
        ("hi", "'hi'"),
        ({}, "an object"),
        ([], "a list"),
        (b"", "a bytes"),
    ],
)
def test_describe_names_a_value_for_a_bot_builder(value: object, text: str) -> None:
    assert describe(value) == text


def test_parse_iso8601_keeps_the_offset_reads_z_and_refuses_text_that_is_not_a_date() -> None:
    assert parse_iso8601(" 2024-01-02T03:04:05z ") == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_iso8601("2024-01-02T03:04:05+02:00").utcoffset() == timedelta(hours=2)
    assert parse_iso8601("2024-01-02").tzinfo is UTC
    with pytest.raises(ValueError, match="'soon' is not an ISO-8601 date-time"):
        parse_iso8601("soon")


def test_the_three_written_forms() -> None:
    moment = datetime(2024, 1, 2, 5, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert library_timestamp(moment) == "2024-01-02T05:04:05.123+02:00"
    assert LIBRARY_TIMESTAMP.fullmatch(library_timestamp(moment))
    assert LIBRARY_TIMESTAMP.fullmatch(utc_now_text())
    assert segment_timestamp(moment) == "2024-01-02T03:04:05.123Z"
    assert parse_segment_timestamp(segment_timestamp(moment)) == moment.replace(microsecond=123000)
    assert stored_timestamp(moment) == "2024-01-02T03:04:05.123456Z"
    assert parse_stored_timestamp(stored_timestamp(moment)) == moment
    assert parse_stored_timestamp(None) is None
