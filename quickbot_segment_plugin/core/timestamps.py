"""ISO-8601 timestamps: reading them, and the three forms the plugin writes.

- the library's form (`library_timestamp`, `utc_now_text`): what segment-analytics-python writes
  into a message, milliseconds and the datetime's own offset; `delivery/final.py` queues a message
  without the library's rebuild only when its timestamp is exactly this (`LIBRARY_TIMESTAMP`);
- Segment's form (`segment_timestamp`): what Segment's servers write (`receivedAt`), UTC,
  milliseconds, `Z`; `parse_segment_timestamp` reads timestamps as leniently as they do;
- the stores' form (`stored_timestamp`, `parse_stored_timestamp`): fixed-width UTC with
  microseconds, so SQL compares the text in time order.
"""

from __future__ import annotations

import functools
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

#: `library_timestamp` of an aware datetime whose offset is whole minutes.
LIBRARY_TIMESTAMP: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2}")

_STORED_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"

_SEGMENT_ISO_8601 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"(Z|z|[+-]\d{2}(?::?\d{2})?)?)?$"
)


def parse_iso8601(text: str) -> datetime:
    """An aware datetime for ISO-8601 text, keeping its offset; text without one is UTC.

    Surrounding space and a lower-case `z` are accepted, as people type them. Raises
    `ValueError` naming the text, for the caller to turn into its own error.
    """
    stripped = text.strip()
    if stripped.endswith(("Z", "z")):
        stripped = stripped[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO-8601 date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def library_timestamp(moment: datetime) -> str:
    """The library's form: milliseconds and the datetime's own offset."""
    return moment.isoformat(timespec="milliseconds")


def utc_now_text() -> str:
    """`library_timestamp(datetime.now(UTC))` in a third of the time.

    Every event without a timestamp option needs it, and `execute`'s latency is measured by
    benchmarks/bench_execute.py: the date and time up to the second are formatted once per
    second and kept (one tuple, replaced whole, so threads never see half).
    """
    global _current_second
    now = time.time()
    second = int(now)
    cached_second, prefix = _current_second
    if second != cached_second:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _current_second = (second, prefix)
    return f"{prefix}.{int((now - second) * 1000):03d}+00:00"


_current_second: tuple[int, str] = (-1, "")


def segment_timestamp(moment: datetime) -> str:
    """Segment's own form: UTC, milliseconds, `Z`."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_segment_timestamp(value: object) -> datetime | None:
    """An aware UTC datetime for a timestamp Segment would read, or None when it is not one.

    Segment's reading, not Python's: a date alone, a space for `T`, a comma or any number of
    fraction digits, `Z`, `z` or an offset with or without its colon; a time without an offset is
    UTC. Ordinal and week dates, which `datetime.fromisoformat` also reads, are not dates here.
    """
    if not isinstance(value, str) or len(value) > 64:
        return None
    return _parse_segment_text(value)


@functools.lru_cache(maxsize=4096)  # a batch's sentAt is read once per message
def _parse_segment_text(value: str) -> datetime | None:
    match = _SEGMENT_ISO_8601.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), micro)
    except ValueError:
        return None
    zone = UTC
    if offset and offset not in ("Z", "z"):
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
        if hours > 23 or minutes > 59:
            return None
        zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        return moment.replace(tzinfo=zone).astimezone(UTC)
    except OverflowError:
        return None


def stored_timestamp(moment: datetime) -> str:
    """The stores' form: fixed-width UTC text, so SQL compares it correctly and `sqlite3` shows it readably."""
    return moment.astimezone(UTC).strftime(_STORED_FORMAT)


def parse_stored_timestamp(text: str | None) -> datetime | None:
    """A time the stores wrote with `stored_timestamp`; None for none."""
    if text is None:
        return None
    return datetime.strptime(text, _STORED_FORMAT).replace(tzinfo=UTC)
