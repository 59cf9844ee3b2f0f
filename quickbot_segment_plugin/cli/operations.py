"""`quickbot-segment dead-letters list|purge|replay` and `quickbot-segment stats`.

The operator's side of the delivery promise "nothing accepted is lost silently": see what
could not be delivered and why, send it again through the same delivery path as live
traffic, or remove it deliberately. Exit status: 0 done, 1 something was not done (a purge
without --yes, a replay with failures or rows that cannot be replayed), 2 a usage or
configuration error. Nothing here prints a write key (only fingerprints); the stored data is
redacted when written, and everything printed goes through `redact` again.

Replay decisions, for the README:
- A row is sent to `regions.endpoint_for(region)` as configured now (region from its sealed
  credentials, `QUICKBOT_SEGMENT_ENDPOINT` if set), not to the endpoint stored with it: an
  operator who fixed a wrong endpoint override gets the fix. The stored endpoint is shown for
  diagnosis only.
- Each message keeps its messageId, so Segment deduplicates anything that had arrived after
  all; replaying a row twice (`--state replayed` or `all`) is safe for the same reason.
- A row whose token does not open, or opens a different write key than the one it failed
  with, is skipped and reported; it stays as it was.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, TextIO

from ..collector import parse_iso8601
from ..core import REASONS, REJECTED, DeliveryError, Undeliverable, endpoint_for, redact
from ..credentials import CredentialsError, KeyRing
from ..deadletters import STATES, DeadLetter, DeadLetterFilter, DeadLetterStore, ReplayReport
from ..delivery import DeliveryPool, DeliverySettings
from ..quality import split_quality_counters

DEFAULT_REPLAY_TIMEOUT: Final = 60.0
# Rows enqueued before waiting for the pool to drain: keeps a replay of a large store inside the
# pool's per-workspace queue instead of overflowing it into "queue_full".
REPLAY_CHUNK: Final = 1000
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_AGE_UNITS: Final = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400, "w": 604_800}


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    group = subparsers.add_parser(
        "dead-letters",
        help="list, replay or purge events that could not be delivered",
        description=(
            "Events the delivery pool could not deliver (queue full, retries exhausted, rejected, shutdown "
            "deadline) are kept in the dead-letter store with the reason. Filters select rows by workspace, "
            "reason and the time of their last failure; by default only rows not yet replayed."
        ),
    )
    actions = group.add_subparsers(dest="dead_letters_action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="show dead letters (oldest first)")
    _add_filters(listing)
    listing.add_argument("--limit", type=_count, default=100, help="rows to show (default: 100)")
    listing.add_argument("--offset", type=_count, default=0, help="rows to skip (default: 0)")
    listing.add_argument("--json", action="store_true", help="print JSON (one object, rows with their message)")
    listing.set_defaults(func=_list)

    purge = actions.add_parser(
        "purge",
        help="delete dead letters (asks for --yes)",
        description="Delete the selected dead letters. Without --yes it only says how many would go and exits 1.",
    )
    _add_filters(purge)
    purge.add_argument("--yes", action="store_true", help="really delete")
    purge.set_defaults(func=_purge)

    replay = actions.add_parser(
        "replay",
        help="send dead letters again through the delivery pool",
        description=(
            "Send the selected dead letters again, each with its own messageId (Segment deduplicates), to "
            "the endpoint of its region as configured now (QUICKBOT_SEGMENT_ENDPOINT when set). Needs "
            "QUICKBOT_ENCRYPTION_KEYS to open the stored credentials. Accepted rows are marked replayed; "
            "rows that fail again stay, with attempts + 1."
        ),
    )
    _add_filters(replay)
    replay.add_argument("--limit", type=_count, default=None, help="replay at most N rows (default: all)")
    replay.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_REPLAY_TIMEOUT,
        help=f"seconds to wait for delivery to finish (default: {DEFAULT_REPLAY_TIMEOUT:g})",
    )
    replay.add_argument("--json", action="store_true", help="print the report as JSON")
    replay.set_defaults(func=_replay)

    stats = subparsers.add_parser(
        "stats",
        help="dead letters per workspace and reason, and persisted counters",
        description=(
            "Show what the dead-letter store knows: rows per workspace and reason, rows removed by retention "
            "or purge, and counters flushed by running workers. The live counters of a running server are "
            "in its memory: from Python, quickbot_segment_plugin.counters.COUNTERS.snapshot()."
        ),
    )
    add_store_option(stats)
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(func=_stats)


def add_store_option(parser: argparse.ArgumentParser) -> None:
    """`--db`, for every command that reads or changes the dead-letter store (`open_store`)."""
    parser.add_argument(
        "--db", metavar="PATH", help="the dead-letter store (default: $QUICKBOT_SEGMENT_DEAD_LETTER_PATH)"
    )


def open_store(args: argparse.Namespace) -> DeadLetterStore:
    return DeadLetterStore(args.db or None)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    add_store_option(parser)
    parser.add_argument("--workspace", metavar="WORKSPACE_ID", help="only this workspace")
    parser.add_argument("--reason", metavar="REASON", help=f"only this reason ({', '.join(REASONS)}, replay_failed)")
    parser.add_argument(
        "--older-than", type=parse_age, metavar="AGE", help="last failure before this: 90s, 30m, 2h, 3d, 1w or a date"
    )
    parser.add_argument("--newer-than", type=parse_age, metavar="AGE", help="last failure after this (same forms)")
    parser.add_argument(
        "--state",
        choices=STATES,
        default=None,
        help="pending (not replayed yet; the default), replayed, or all (the default with --id)",
    )
    parser.add_argument("--id", dest="ids", type=int, action="append", metavar="ID", help="only this row (repeatable)")


# --- argument types ------------------------------------------------------------------------


def parse_age(text: str) -> timedelta | datetime:
    """`2h`, `3d`, `90s`, `1.5h`, `2w` as an age, or an ISO-8601 date/time as a cutoff (UTC if no offset)."""
    match = _AGE.match(text)
    if match:
        return timedelta(seconds=float(match.group(1)) * _AGE_UNITS[match.group(2).lower()])
    moment = parse_iso8601(text.strip())  # the collector's reader: any fraction, Z, on Python 3.10 too
    if moment is None:
        raise argparse.ArgumentTypeError(
            f"must be an age such as 90s, 30m, 2h, 3d or 1w, or a date such as 2024-05-01T12:00Z; got {text!r}"
        )
    return moment


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600 seconds, got {text!r}")
    return value


def _reports_store_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A store that cannot be opened (no permission, not an SQLite file, disk error) is one clear
    line and exit status 2, like every other operator error, not a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (sqlite3.Error, OSError) as error:
            where = args.db or "the dead-letter store ($QUICKBOT_SEGMENT_DEAD_LETTER_PATH)"
            _print(f"quickbot-segment: error: cannot use {where}: {error}", sys.stderr)
            return 2

    return run


def _selection(args: argparse.Namespace) -> DeadLetterFilter:
    return DeadLetterFilter(
        workspace_id=args.workspace,
        reason=args.reason,
        older_than=args.older_than,
        newer_than=args.newer_than,
        state=args.state or ("all" if args.ids else "pending"),
        ids=args.ids,
    )


def _print(text: str, stream: TextIO | None = None) -> None:
    """Every line the commands print passes here: a last scrub of anything key-like."""
    print(redact(text), file=stream or sys.stdout)


# --- list ----------------------------------------------------------------------------------


@_reports_store_errors
def _list(args: argparse.Namespace) -> int:
    store = open_store(args)
    selection = _selection(args)
    rows = store.list(limit=args.limit, offset=args.offset, selection=selection)
    total = store.count(selection=selection)
    if args.json:
        document = {
            "store": str(store.path),
            "total": total,
            "offset": args.offset,
            "dead_letters": [row.as_dict() for row in rows],
        }
        _print(json.dumps(document, indent=2, sort_keys=True))
        return 0
    if not rows:
        where = "" if store.path.exists() else " (the store does not exist yet)"
        _print(f"No {_state_words(selection.state)}dead letters match in {store.path}{where}.")
        return 0
    _print_table(
        ["ID", "WORKSPACE", "REASON", "STATUS", "ATTEMPTS", "LAST FAILED (UTC)", "TYPE", "MESSAGE ID", "REPLAY"],
        [_row_cells(row) for row in rows],
    )
    shown_to = args.offset + len(rows)
    _print(
        f"\n{args.offset + 1}-{shown_to} of {total} {_state_words(selection.state)}dead letter(s) in {store.path}."
        + (
            " REPLAY 'no token': no credentials were recorded, the row cannot be replayed."
            if _any_tokenless(rows)
            else ""
        )
    )
    return 0


def _row_cells(row: DeadLetter) -> list[str]:
    replay = "no token" if not row.replayable else ("done" if row.replayed_at else "yes")
    event = row.message.get("event") if row.type == "track" else None
    kind = f"{row.type}:{event}" if isinstance(event, str) else (row.type or "?")
    return [
        str(row.id),
        _shorten(row.workspace_id, 24),
        row.reason,
        "" if row.status is None else str(row.status),
        str(row.attempts),
        row.last_failed_at.strftime("%Y-%m-%d %H:%M:%S"),
        _shorten(kind, 28),
        _shorten(row.message_id, 36),
        replay,
    ]


def _any_tokenless(rows: Iterable[DeadLetter]) -> bool:
    return any(not row.replayable for row in rows)


def _state_words(state: str) -> str:
    return {"pending": "pending ", "replayed": "replayed ", "all": ""}.get(state, "")


# --- purge ---------------------------------------------------------------------------------


@_reports_store_errors
def _purge(args: argparse.Namespace) -> int:
    store = open_store(args)
    selection = _selection(args)
    matching = store.count(selection=selection)
    what = f"{matching} {_state_words(selection.state)}dead letter(s)"
    if not args.yes:
        _print(f"Would purge {what} from {store.path}. Nothing was deleted: run again with --yes to delete them.")
        return 1
    deleted = store.purge(selection=selection)
    _print(f"Purged {deleted} dead letter(s) from {store.path}.")
    return 0


# --- replay --------------------------------------------------------------------------------


@_reports_store_errors
def _replay(args: argparse.Namespace) -> int:
    store = open_store(args)
    selection = _selection(args)
    report = replay_through_pool(store, selection, limit=args.limit, timeout=args.timeout)
    if args.json:
        _print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        for problem in report.problems:
            _print(problem)
        _print(
            f"Replayed {report.replayed} of {report.attempted} dead letter(s): {report.failed} failed again "
            f"(kept, attempts + 1), {report.skipped} skipped (kept as they were)."
        )
    return 0 if report.failed == 0 and report.skipped == 0 else 1


class _FailureLog:
    """Collects what the replay pool reports undeliverable, by (workspace, messageId); any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures: dict[tuple[str, str], Undeliverable] = {}

    def __call__(self, undeliverable: Undeliverable) -> None:
        with self._lock:
            for message in undeliverable.messages:
                self.failures[(undeliverable.workspace_id, str(message.get("messageId")))] = undeliverable


def replay_through_pool(
    store: DeadLetterStore,
    selection: DeadLetterFilter,
    *,
    limit: int | None = None,
    timeout: float = DEFAULT_REPLAY_TIMEOUT,
    keyring_factory: Callable[[], KeyRing] = KeyRing.from_env,
    settings: DeliverySettings | None = None,
) -> ReplayReport:
    """Send the selected rows again through a `DeliveryPool`, then mark each by what became of it.

    The pool reports every event it cannot deliver through `on_undeliverable`; after the pool
    has shut down (within `timeout`), rows it reported stay with attempts + 1 and the new
    reason, the others are marked replayed.
    """
    report = ReplayReport()
    failures = _FailureLog()
    settings = settings or DeliverySettings.from_env()
    chunk = min(REPLAY_CHUNK, settings.max_queue_size)
    pool = DeliveryPool(settings, on_undeliverable=failures)
    keyring: KeyRing | None = None
    sent: dict[tuple[str, str], int] = {}
    refused: list[tuple[int, str]] = []
    try:
        for letter in store.iter(selection, limit):
            report.attempted += 1
            if letter.credentials_token is None:
                _skip(report, letter, "no credentials token was recorded with it, so it cannot be replayed")
                continue
            if keyring is None:
                keyring = keyring_factory()  # ConfigurationError (no keys) stops the whole replay, clearly
            try:
                credentials = keyring.open(letter.credentials_token, letter.workspace_id)
            except CredentialsError as error:
                _skip(report, letter, f"its credentials do not open: {error}")
                continue
            if letter.write_key_fingerprint and credentials.write_key.fingerprint != letter.write_key_fingerprint:
                _skip(
                    report,
                    letter,
                    f"its credentials now hold write key {credentials.write_key.fingerprint}, not "
                    f"{letter.write_key_fingerprint} that it was sent with",
                )
                continue
            endpoint = endpoint_for(credentials.region)
            try:
                pool.enqueue(letter.workspace_id, credentials.write_key.reveal(), endpoint, letter.message)
            except DeliveryError as error:
                refused.append((letter.id, str(error)))
                report.failed += 1
                report.problems.append(_problem(letter, f"refused by the analytics library: {error}"))
                continue
            sent[(letter.workspace_id, letter.message_id)] = letter.id
            if len(sent) % chunk == 0:
                pool.flush(timeout)
    finally:
        pool.shutdown(timeout)
    for row_id, detail in refused:
        store.record_failed_replay([row_id], REJECTED, detail)
    delivered: list[int] = []
    failed_groups: dict[tuple[str, str, int | None], list[int]] = {}
    for key, row_id in sent.items():
        failure = failures.failures.get(key)
        if failure is None:
            delivered.append(row_id)
            continue
        failed_groups.setdefault((failure.reason, failure.detail, failure.status), []).append(row_id)
        report.failed += 1
        report.problems.append(
            f"dead letter {row_id} (messageId {key[1]}): failed again: {failure.reason}: {failure.detail}"
        )
    for (reason, detail, status), row_ids in failed_groups.items():
        store.record_failed_replay(row_ids, reason, detail, status)
    store.mark_replayed(delivered)
    report.replayed = len(delivered)
    return report


def _skip(report: ReplayReport, letter: DeadLetter, why: str) -> None:
    report.skipped += 1
    report.problems.append(_problem(letter, f"skipped: {why}"))


def _problem(letter: DeadLetter, what: str) -> str:
    return redact(f"dead letter {letter.id} (workspace {letter.workspace_id}, messageId {letter.message_id}): {what}")


# --- stats ---------------------------------------------------------------------------------


@_reports_store_errors
def _stats(args: argparse.Namespace) -> int:
    store = open_store(args)
    summary = store.summary()
    tallies = store.tallies()
    counters = store.persisted_counters()
    delivery_counters, quality = split_quality_counters(counters)  # quality.py: violations, cleaned, refused
    if args.json:
        document = {
            "store": str(store.path),
            "exists": store.path.exists(),
            "dead_letters": summary,
            "removed": tallies,
            "counters": counters,
            "quality": quality,
        }
        _print(json.dumps(document, indent=2, sort_keys=True))
        return 0
    _print(f"Dead-letter store: {store.path}" + ("" if store.path.exists() else " (does not exist yet)"))
    _print("")
    if summary:
        rows = [
            [
                entry["workspace_id"],
                entry["reason"],
                str(entry["pending"]),
                str(entry["replayed"]),
                _day(entry["oldest_failure"]),
                _day(entry["newest_failure"]),
            ]
            for entry in summary
        ]
        rows.append(
            ["TOTAL", "", str(sum(e["pending"] for e in summary)), str(sum(e["replayed"] for e in summary)), "", ""]
        )
        _print_table(["WORKSPACE", "REASON", "PENDING", "REPLAYED", "OLDEST FAILURE", "NEWEST FAILURE"], rows)
    else:
        _print("No dead letters.")
    if tallies:
        _print("\nWhat became of dead letters (replayed; removed undelivered by retention or purge):")
        _print_nested(tallies)
    if delivery_counters:
        _print("\nCounters flushed by QuickBot workers (sum over every process that flushed):")
        _print_nested(delivery_counters)
    if quality:
        _print("\nData quality (violations found, values cleaned, events refused; by rule and event):")
        _print_table(
            ["WORKSPACE", "KIND", "RULE", "EVENT", "COUNT"],
            [[row["workspace_id"], row["kind"], row["rule"], row["event"], str(row["count"])] for row in quality],
        )
    if not counters:
        _print(
            "\nNo persisted counters. Live counters are in the memory of each QuickBot worker: "
            "quickbot_segment_plugin.counters.COUNTERS.snapshot() from Python."
        )
    return 0


def _day(text: str | None) -> str:
    return "" if text is None else text[:19].replace("T", " ")


def _print_nested(values: dict[str, dict[str, int]]) -> None:
    names = sorted({name for by_name in values.values() for name in by_name})
    rows = [[workspace, *(str(by_name.get(name, 0)) for name in names)] for workspace, by_name in values.items()]
    rows.append(["TOTAL", *(str(sum(by_name.get(name, 0) for by_name in values.values())) for name in names)])
    _print_table(["WORKSPACE", *(name.upper() for name in names)], rows)


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(len(headers))]
    _print("  ".join(header.ljust(width) for header, width in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        _print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
