"""`quickbot-segment spool status|drain`: the spool of stopped processes, from the command line.

`status` reads every spool file (never claims one) and says whose it is: "running" while its
process holds the file's lock, "orphan" once that process has died and its events wait for
recovery. `drain` does what a starting QuickBot process does on its first `execute`: claims
the orphans, delivers their events through a delivery pool (its own spool first, so a drain
killed half-way loses nothing either), waits up to --timeout, and dead-letters what is left.
Exit status: 0 done, 1 something was left or dead-lettered, 2 a usage or configuration error.
Nothing printed holds a write key or a credentials token: files show workspaces and counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Final, TextIO

from ..core import COUNTERS, Undeliverable, redact
from ..credentials import KeyRing
from ..deadletters import DeadLetterRecorder, DeadLetterStore, beside_store

DEFAULT_DRAIN_TIMEOUT: Final = 60.0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    group = subparsers.add_parser(
        "spool",
        help="show or deliver events left in the spool by stopped processes",
        description=(
            "Every event `execute` answers `queued` is written to the spool (QUICKBOT_SEGMENT_SPOOL_DIR) until "
            "Segment has it. Files whose process died are recovered by the next process's first execute, or "
            "by `spool drain`."
        ),
    )
    actions = group.add_subparsers(dest="spool_action", metavar="ACTION", required=True)
    status = actions.add_parser("status", help="list spool files, their owner and undelivered events")
    _add_directory(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)

    drain = actions.add_parser(
        "drain",
        help="deliver the events of stopped processes now",
        description=(
            "Claim the spool files whose process has died and deliver their events (each keeps its messageId, "
            "so Segment deduplicates any that had arrived). Needs QUICKBOT_ENCRYPTION_KEYS to open the spooled "
            "credentials. What is not delivered within --timeout goes to the dead-letter store."
        ),
    )
    _add_directory(drain)
    drain.add_argument(
        "--db", metavar="PATH", help="the dead-letter store (default: $QUICKBOT_SEGMENT_DEAD_LETTER_PATH)"
    )
    drain.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_DRAIN_TIMEOUT,
        help=f"seconds to wait for delivery (default: {DEFAULT_DRAIN_TIMEOUT:g})",
    )
    drain.add_argument("--json", action="store_true", help="print the report as JSON")
    drain.set_defaults(func=_drain)


def _add_directory(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        metavar="PATH",
        help="the spool directory (default: $QUICKBOT_SEGMENT_SPOOL_DIR, or spool/ beside the dead-letter store)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600 seconds, got {text!r}")
    return value


def _directory(args: argparse.Namespace) -> Path:
    from ..delivery import SpoolSettings

    if args.dir:
        return Path(args.dir).expanduser()
    return SpoolSettings.from_env(default_directory=beside_store("spool")).directory


def _print(text: str, stream: TextIO | None = None) -> None:
    print(redact(text), file=stream or sys.stdout)


def _status(args: argparse.Namespace) -> int:
    from ..delivery import status

    directory = _directory(args)
    files = status(directory)
    if args.json:
        document = {
            "directory": str(directory),
            "exists": directory.is_dir(),
            "files": [entry.as_dict() for entry in files],
            "live_events": sum(entry.live for entry in files),
            "orphan_events": sum(entry.live for entry in files if entry.owner == "orphan"),
        }
        _print(json.dumps(document, indent=2, sort_keys=True))
        return 0
    if not files:
        where = "" if directory.is_dir() else " (the directory does not exist yet)"
        _print(f"No spool files in {directory}{where}.")
        return 0
    headers = ["FILE", "OWNER", "PID", "BYTES", "EVENTS", "UNDELIVERED", "WORKSPACES", "PROBLEM"]
    rows = [
        [
            entry.name,
            entry.owner,
            "" if entry.pid is None else str(entry.pid),
            str(entry.size),
            str(entry.events),
            str(entry.live),
            ",".join(entry.workspaces)[:40],
            entry.problem,
        ]
        for entry in files
    ]
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(len(headers))]
    for line in [headers, *rows]:
        _print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    orphans = sum(entry.live for entry in files if entry.owner == "orphan")
    running = sum(entry.live for entry in files if entry.owner == "running")
    _print(
        f"\n{running} undelivered event(s) held by running processes, {orphans} left by stopped processes "
        f"in {directory}." + (" Run `quickbot-segment spool drain` to deliver them now." if orphans else "")
    )
    return 0


class _Outcomes:
    """What the drain's pool reported undeliverable (any thread), forwarded to the dead-letter store."""

    def __init__(self, recorder: DeadLetterRecorder) -> None:
        self.recorder = recorder
        self._lock = threading.Lock()
        self.by_reason: Counter[str] = Counter()

    def __call__(self, undeliverable: Undeliverable) -> int:
        with self._lock:
            self.by_reason[undeliverable.reason] += undeliverable.count
        return self.recorder(undeliverable)


def _drain(args: argparse.Namespace) -> int:
    from ..delivery import DeliveryPool, DeliverySettings, Durability, Recovery, Spool, SpoolSettings

    settings = SpoolSettings.from_env(default_directory=beside_store("spool"))
    directory = _directory(args)
    durability = settings.durability if settings.durability is not Durability.OFF else Durability.PROCESS
    spool = Spool(SpoolSettings(directory, durability, settings.max_bytes, settings.segment_bytes))
    recorder = DeadLetterRecorder(DeadLetterStore(args.db or None))
    outcomes = _Outcomes(recorder)
    pool = DeliveryPool(DeliverySettings.from_env(), outcomes, COUNTERS, spool=spool)
    try:
        report = Recovery(pool, KeyRing.from_env, recorder.remember_token).run()
        drained = pool.flush(args.timeout)
    finally:
        shutdown = pool.shutdown(min(args.timeout, 10.0))
    dead_lettered = sum(outcomes.by_reason.values())
    document = {
        **report.as_dict(),
        "delivered_within_timeout": drained and shutdown.drained,
        "dead_lettered": dict(outcomes.by_reason),
        "dead_letter_store": str(recorder.store.path),
        "directory": str(directory),
    }
    if args.json:
        _print(json.dumps(document, indent=2, sort_keys=True))
    else:
        for problem in report.problems:
            _print(problem)
        _print(
            f"Claimed {report.files_claimed} spool file(s) of stopped processes in {directory}: "
            f"{report.events_requeued} event(s) sent, {dead_lettered} dead-lettered "
            f"({', '.join(f'{reason} {count}' for reason, count in sorted(outcomes.by_reason.items())) or 'none'}), "
            f"{report.events_duplicate} duplicate(s) skipped, {report.files_left} file(s) left for another process."
        )
        if dead_lettered:
            _print(f"Dead letters are in {recorder.store.path}: `quickbot-segment dead-letters list`.")
    return 0 if report.files_left == 0 and dead_lettered == 0 and not report.problems else 1
