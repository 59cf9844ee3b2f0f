"""Running counts behind the debugger's summary strip (events per type, per minute, flagged).

An open debugger page asks for these every few seconds, and every second while events
arrive. Counting them in SQL reads the whole table each time (every row holds the full
message, so the cost grows with the file); kept up to date as rows are stored, the
answer costs microseconds however large the file grows. The store loads the counts from
SQLite once, on the first request, so a file kept from an earlier run is counted too.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

MAX_SUMMARY_MINUTES = 24 * 60


def minute_of(received_at: str) -> str:
    """`2024-05-01T12:03:09.120Z` -> `2024-05-01T12:03`, the key the per-minute counts use."""
    return received_at[:16]


def minute_offset(minute: str, steps: int) -> str:
    moment = datetime.strptime(minute, "%Y-%m-%dT%H:%M") + timedelta(minutes=steps)
    return moment.strftime("%Y-%m-%dT%H:%M")


class SummaryTally:
    """Counts per type (all, duplicates, with warnings, with violations) and per minute and type.

    Minutes older than MAX_SUMMARY_MINUTES before the newest one are forgotten, so memory
    stays bounded however long the collector runs. Not thread-safe: the store calls it
    under its own lock.
    """

    def __init__(self) -> None:
        self._by_type: dict[str, list[int]] = {}  # type -> [count, duplicates, warned, violated]
        self._per_minute: dict[str, dict[str, int]] = {}
        self._newest_minute = ""

    def load(self, totals: Iterable[tuple[Any, ...]], recent: Iterable[tuple[Any, ...]]) -> None:
        """From SQL: (type, count, duplicates, warned, violated) and (minute, type, count) rows."""
        for kind, count, duplicated, warned, violated in totals:
            self._by_type[str(kind)] = [int(count), int(duplicated or 0), int(warned or 0), int(violated or 0)]
        for minute, kind, count in recent:
            self._per_minute.setdefault(str(minute), {})[str(kind)] = int(count)
        if self._per_minute:
            self._newest_minute = max(self._per_minute)

    def record(self, kind: str, received_at: str, *, duplicate: bool, warned: bool, violated: bool) -> None:
        counts = self._by_type.setdefault(kind, [0, 0, 0, 0])
        counts[0] += 1
        counts[1] += duplicate
        counts[2] += warned
        counts[3] += violated
        minute = minute_of(received_at)
        if minute not in self._per_minute:
            self._per_minute[minute] = {}
            if minute > self._newest_minute:
                self._newest_minute = minute
                self._forget_before(minute_offset(minute, -(MAX_SUMMARY_MINUTES - 1)))
        bucket = self._per_minute[minute]
        bucket[kind] = bucket.get(kind, 0) + 1

    def clear(self) -> None:
        self._by_type.clear()
        self._per_minute.clear()
        self._newest_minute = ""

    def report(self, minutes: int, now: str) -> dict[str, Any]:
        """The summary for the last `minutes` minutes up to `now`, oldest first, gaps as zeros."""
        minutes = min(max(minutes, 1), MAX_SUMMARY_MINUTES)
        last = datetime.strptime(minute_of(now), "%Y-%m-%dT%H:%M")
        per_minute = []
        for step in range(minutes - 1, -1, -1):
            minute = (last - timedelta(minutes=step)).strftime("%Y-%m-%dT%H:%M")
            counts = dict(self._per_minute.get(minute, {}))
            per_minute.append({"minute": minute + "Z", "total": sum(counts.values()), "by_type": counts})
        return {
            "total": sum(counts[0] for counts in self._by_type.values()),
            "duplicates": sum(counts[1] for counts in self._by_type.values()),
            "with_warnings": sum(counts[2] for counts in self._by_type.values()),
            "with_violations": sum(counts[3] for counts in self._by_type.values()),
            "by_type": {kind: counts[0] for kind, counts in self._by_type.items() if counts[0]},
            "per_minute": per_minute,
        }

    def _forget_before(self, oldest_kept: str) -> None:
        for minute in [minute for minute in self._per_minute if minute < oldest_kept]:
            del self._per_minute[minute]
