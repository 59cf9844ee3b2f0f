"""`quickbot-segment dead-letters list|purge|replay` and `quickbot-segment stats`.

The operator's side of the delivery promise "nothing accepted is lost silently": see what
could not be delivered and why, send it again through the same delivery path as live
traffic, or remove it deliberately. Exit status: 0 done, 1 something was not done (a purge
without --yes, a replay with failures or rows that cannot be replayed), 2 a usage or
configuration error. Nothing here prints a write key (only fingerprints); the stored data is
redacted when written, and everything printed goes through `redact` again.

How a replay decides what it sends and how it marks each row: `deadletters.replay`.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sqlite3
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, TextIO

from ..core import (
    REASONS,
    Undeliverable,
    parse_segment_timestamp,
    redact,
    shorten,
)
from ..deadletters import (
    DEFAULT_REPLAY_TIMEOUT,
    SEGMENT_DEDUP_WINDOW,
    STATES,
    DatabaseError,
    DeadLetter,
    DeadLetterFilter,
    DeadLetterStore,
    ReplayInProgress,
    dedup_warning,
    replay_dead_letters,
    scrub_database_secrets,
)
from ..delivery import DeliveryPool, DeliverySettings
from ..quality import split_quality_counters

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
            "rows that fail again stay, with attempts + 1; rows still queued or in flight at the deadline "
            "are kept in doubt and not resent without --include-in-doubt. One replay at a time per store."
        ),
    )
    _add_filters(replay)
    replay.add_argument(
        "--include-in-doubt",
        action="store_true",
        help="also resend rows in doubt (Segment deduplicates them by messageId only within about "
        f"{_hours(SEGMENT_DEDUP_WINDOW)} hours)",
    )
    replay.add_argument("--limit", type=_count, default=None, help="replay at most N rows (default: all)")
    replay.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_REPLAY_TIMEOUT,
        help=f"seconds to wait for delivery to finish (default: {DEFAULT_REPLAY_TIMEOUT:g})",
    )
    replay.add_argument("--json", action="store_true", help="print the report as JSON")
    replay.set_defaults(func=_replay)

    confirm = actions.add_parser(
        "confirm",
        help="settle rows in doubt: delivered (mark replayed) or not (back to pending)",
        description=(
            "Rows in doubt were handed to Segment by a replay that could not learn whether they arrived (its "
            "deadline passed, or it was killed). Segment cannot be asked; check its debugger or your "
            "destination, then say --delivered (they are marked replayed) or --not-delivered (they go back to "
            "pending and the next replay sends them)."
        ),
    )
    _add_filters(confirm)
    verdict = confirm.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--delivered", action="store_true", help="Segment has them: mark them replayed")
    verdict.add_argument("--not-delivered", action="store_true", help="Segment does not: make them pending again")
    confirm.set_defaults(func=_confirm)

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
        "--db",
        metavar="PATH",
        help="the dead-letter store: an SQLite file (default: $QUICKBOT_SEGMENT_DEAD_LETTER_PATH), or a "
        "postgresql:// URL (default: $QUICKBOT_SEGMENT_DATABASE_URL; prefer the variable, a password on the "
        "command line is visible to other users in the process list)",
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
        help="pending (not replayed yet; the default), in_doubt (sent by a replay that could not learn the "
        "outcome), replayed, or all (the default with --id)",
    )
    parser.add_argument("--id", dest="ids", type=int, action="append", metavar="ID", help="only this row (repeatable)")


# --- argument types ------------------------------------------------------------------------


def parse_age(text: str) -> timedelta | datetime:
    """`2h`, `3d`, `90s`, `1.5h`, `2w` as an age, or an ISO-8601 date/time as a cutoff (UTC if no offset)."""
    match = _AGE.match(text)
    if match:
        return timedelta(seconds=float(match.group(1)) * _AGE_UNITS[match.group(2).lower()])
    moment = parse_segment_timestamp(text.strip())  # Segment's reading: any fraction, Z
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


def reports_store_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A store that cannot be opened (no permission, not an SQLite file, disk error) is one clear
    line and exit status 2, like every other operator error, not a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (sqlite3.Error, DatabaseError, OSError) as error:
            where = (
                args.db
                or "the dead-letter store ($QUICKBOT_SEGMENT_DATABASE_URL or $QUICKBOT_SEGMENT_DEAD_LETTER_PATH)"
            )
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
        include_in_doubt=bool(getattr(args, "include_in_doubt", False)),
    )


def _print(text: str, stream: TextIO | None = None) -> None:
    """Every line the commands print passes here: a last scrub of anything key-like or a database password."""
    print(scrub_database_secrets(redact(text)), file=stream or sys.stdout)


def _hours(window: timedelta) -> str:
    return f"{window.total_seconds() / 3600:g}"


# --- list ----------------------------------------------------------------------------------


@reports_store_errors
def _list(args: argparse.Namespace) -> int:
    store = open_store(args)
    selection = _selection(args)
    rows = store.list(limit=args.limit, offset=args.offset, selection=selection)
    total = store.count(selection=selection)
    if args.json:
        document = {
            "store": store.location,
            "total": total,
            "offset": args.offset,
            "dead_letters": [row.as_dict() for row in rows],
        }
        _print(json.dumps(document, indent=2, sort_keys=True))
        return 0
    if not rows:
        where = "" if store.exists() else " (the store does not exist yet)"
        _print(f"No {_state_words(selection.state)}dead letters match in {store.location}{where}.")
        return 0
    _print_table(
        ["ID", "WORKSPACE", "REASON", "STATUS", "ATTEMPTS", "LAST FAILED (UTC)", "TYPE", "MESSAGE ID", "REPLAY"],
        [_row_cells(row) for row in rows],
    )
    shown_to = args.offset + len(rows)
    _print(
        f"\n{args.offset + 1}-{shown_to} of {total} {_state_words(selection.state)}dead letter(s) in {store.location}."
        + (
            " REPLAY 'no token': no credentials were recorded, the row cannot be replayed."
            if _any_tokenless(rows)
            else ""
        )
    )
    return 0


def _row_cells(row: DeadLetter) -> list[str]:
    replay = "no token" if not row.replayable else ("done" if row.replayed_at else "yes")
    if row.in_doubt_since is not None and row.replayed_at is None:
        replay = "in doubt"
    event = row.message.get("event") if row.type == "track" else None
    kind = f"{row.type}:{event}" if isinstance(event, str) else (row.type or "?")
    return [
        str(row.id),
        shorten(row.workspace_id, 24, "..."),
        row.reason,
        "" if row.status is None else str(row.status),
        str(row.attempts),
        row.last_failed_at.strftime("%Y-%m-%d %H:%M:%S"),
        shorten(kind, 28, "..."),
        shorten(row.message_id, 36, "..."),
        replay,
    ]


def _any_tokenless(rows: Iterable[DeadLetter]) -> bool:
    return any(not row.replayable for row in rows)


def _state_words(state: str) -> str:
    return {"pending": "pending ", "in_doubt": "in-doubt ", "replayed": "replayed ", "all": ""}.get(state, "")


# --- purge ---------------------------------------------------------------------------------


@reports_store_errors
def _purge(args: argparse.Namespace) -> int:
    store = open_store(args)
    selection = _selection(args)
    matching = store.count(selection=selection)
    what = f"{matching} {_state_words(selection.state)}dead letter(s)"
    if not args.yes:
        _print(f"Would purge {what} from {store.location}. Nothing was deleted: run again with --yes to delete them.")
        return 1
    deleted = store.purge(selection=selection)
    _print(f"Purged {deleted} dead letter(s) from {store.location}.")
    return 0


# --- replay --------------------------------------------------------------------------------


@reports_store_errors
def _replay(args: argparse.Namespace) -> int:
    store = open_store(args)
    selection = _selection(args)
    try:
        report = replay_dead_letters(store, _delivery_pool, selection, limit=args.limit, timeout=args.timeout)
    except ReplayInProgress as error:
        _print(f"quickbot-segment: error: {error}", sys.stderr)
        return 1
    if args.json:
        _print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        for problem in report.problems:
            _print(problem)
        _print(
            f"Replayed {report.replayed} of {report.attempted} dead letter(s): {report.failed} failed again "
            f"(kept, attempts + 1), {report.in_doubt} in doubt (kept, not resent), {report.skipped} skipped "
            "(kept as they were)."
        )
        if report.in_doubt:
            _print(
                f"{report.in_doubt} row(s) were still queued or in flight when --timeout ran out: Segment may have "
                "them. They are kept in doubt and the next replay leaves them alone; check Segment, then run "
                "`dead-letters confirm --state in_doubt --delivered` (or --not-delivered), or resend them with "
                f"`replay --include-in-doubt` (Segment deduplicates by messageId within about "
                f"{_hours(SEGMENT_DEDUP_WINDOW)} hours)."
            )
        if report.beyond_dedup_window:
            _print(dedup_warning(report.beyond_dedup_window))
    if report.beyond_dedup_window and args.json:
        _print(dedup_warning(report.beyond_dedup_window), sys.stderr)
    return 0 if report.failed == 0 and report.skipped == 0 and report.in_doubt == 0 else 1


def _delivery_pool(on_undeliverable: Callable[[Undeliverable], None]) -> DeliveryPool:
    """The pool a replay sends through: live traffic's settings, failures to the replay's report."""
    return DeliveryPool(DeliverySettings.from_env(), on_undeliverable=on_undeliverable)


@reports_store_errors
def _confirm(args: argparse.Namespace) -> int:
    store = open_store(args)
    chosen = _selection(args)
    selection = DeadLetterFilter(
        workspace_id=chosen.workspace_id,
        reason=chosen.reason,
        older_than=chosen.older_than,
        newer_than=chosen.newer_than,
        state="in_doubt",
        ids=chosen.ids,
    )
    ids = [letter.id for letter in store.iter(selection)]
    changed = store.confirm(ids, delivered=bool(args.delivered))
    if args.delivered:
        _print(f"Marked {changed} in-doubt dead letter(s) replayed in {store.location}.")
    else:
        _print(f"Made {changed} in-doubt dead letter(s) pending again in {store.location}; the next replay sends them.")
    return 0


# --- stats ---------------------------------------------------------------------------------


@reports_store_errors
def _stats(args: argparse.Namespace) -> int:
    store = open_store(args)
    summary = store.summary()
    tallies = store.tallies()
    counters = store.persisted_counters()
    replicas = store.counters_by_replica()
    delivery_counters, quality = split_quality_counters(counters)  # quality.py: violations, cleaned, refused
    if args.json:
        document = {
            "store": store.location,
            "backend": store.backend.kind.value,
            "exists": store.exists(),
            "dead_letters": summary,
            "removed": tallies,
            "counters": counters,
            "replicas": replicas,
            "quality": quality,
        }
        _print(json.dumps(document, indent=2, sort_keys=True))
        return 0
    _print(f"Dead-letter store: {store.location}" + ("" if store.exists() else " (does not exist yet)"))
    _print("")
    if summary:
        rows = [
            [
                entry["workspace_id"],
                entry["reason"],
                str(entry["pending"]),
                str(entry["replayed"]),
                str(entry["in_doubt"]),
                _day(entry["oldest_failure"]),
                _day(entry["newest_failure"]),
            ]
            for entry in summary
        ]
        rows.append(
            [
                "TOTAL",
                "",
                *(str(sum(e[name] for e in summary)) for name in ("pending", "replayed", "in_doubt")),
                "",
                "",
            ]
        )
        _print_table(
            ["WORKSPACE", "REASON", "PENDING", "REPLAYED", "IN-DOUBT", "OLDEST FAILURE", "NEWEST FAILURE"], rows
        )
    else:
        _print("No dead letters.")
    if tallies:
        _print("\nWhat became of dead letters (replayed; removed undelivered by retention or purge):")
        _print_nested(tallies)
    if delivery_counters:
        _print("\nCounters flushed by QuickBot workers (sum over every replica that flushed):")
        _print_nested(delivery_counters)
    if replicas:
        _print("\nBy replica (QUICKBOT_SEGMENT_REPLICA_ID, else host:pid; all workspaces):")
        names = [
            name for name in sorted({n for entry in replicas.values() for n in entry["counters"]}) if ":" not in name
        ]
        _print_table(
            ["REPLICA", "LAST FLUSH (UTC)", *(name.upper() for name in names)],
            [
                [replica, _day(entry["last_flush"]), *(str(entry["counters"].get(name, 0)) for name in names)]
                for replica, entry in replicas.items()
            ],
        )
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
