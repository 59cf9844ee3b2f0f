"""`quickbot-segment privacy forget|check`: answer a deletion request, see a workspace's policy.

`forget` removes one end user's events from everything this plugin keeps: the dead-letter
store (events that could not be delivered, kept for replay) and an embedded collector's
SQLite file (what a test or staging setup received). It prints what it removed, by row and
messageId, never the messages. Segment's own copy is a separate request (Segment's user
deletion and suppression: the Privacy Portal or the Public API), which this command cannot
make: it holds no Segment workspace token, only write keys.

Every store is checked before any is changed: a missing path, a file that is not SQLite or a
store of the other kind (`--db` and `--collector-db` swapped) is an error and nothing is
erased. Besides the user's own events, their identifiers (ids, email, phone found in their
events) are replaced by "[erased]" in other users' events and in the raw requests kept.

Exit status: 0 done (also when nothing was found), 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..collector import CollectorSettings, EventStore
from ..core import DEAD_LETTER_STORE, ERASED, ErasureReport, PluginError, open_private_database, redact
from ..privacy import (
    DETECTORS,
    HASH_KEY_ENV,
    PolicyResolver,
    PrivacyPolicy,
    PrivacyPolicyError,
    PrivacyVariables,
    load_policy,
)
from .collector import DB_ENV
from .operations import add_store_option, open_store, reports_store_errors

SEGMENT_DELETION_NOTE = (
    "This removed the copies the plugin keeps. Segment's copy needs its own request: a user deletion "
    "(and suppression) regulation in Segment's Privacy Portal or through its Public API."
)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    group = subparsers.add_parser(
        "privacy",
        help="erase an end user's events, or show a workspace's privacy policy",
        description="Privacy operations: `forget` answers a deletion request for the data the plugin holds; "
        "`check` shows the privacy policy a workspace's events get.",
    )
    actions = group.add_subparsers(dest="privacy_action", metavar="ACTION", required=True)

    forget = actions.add_parser(
        "forget",
        help="remove one end user's events from the dead-letter store and the collector",
        description="Remove every event of one end user (by userId, also an alias's previousId, and/or "
        "anonymousId) from the dead-letter store of the workspace and from embedded collector files. "
        "Prints what was removed. " + SEGMENT_DELETION_NOTE,
    )
    forget.add_argument("--workspace", required=True, metavar="WORKSPACE_ID", help="the workspace the user is in")
    forget.add_argument("--user-id", metavar="USER_ID", help="the end user's userId")
    forget.add_argument("--anonymous-id", metavar="ANONYMOUS_ID", help="the end user's anonymousId")
    add_store_option(forget)
    forget.add_argument(
        "--collector-db",
        metavar="PATH",
        action="append",
        default=None,
        help=f"an embedded collector's SQLite file; repeat for several (default: ${DB_ENV} when set)",
    )
    forget.add_argument("--json", action="store_true", help="print JSON")
    forget.set_defaults(func=_forget)

    check = actions.add_parser(
        "check",
        help="show the privacy policy a workspace's events get",
        description="Read the workspace's policy file (QUICKBOT_SEGMENT_PRIVACY_DIR, else "
        "QUICKBOT_SEGMENT_TRACKING_PLAN_DIR, /<workspace file name>.privacy.json, where the name is the "
        "workspace id with characters other than A-Z a-z 0-9 . _ - percent-encoded: team:acme -> "
        "team%3Aacme) or a given file, and print which file applies and what it does. Exit 2 when the "
        "workspace's events would be refused (the file cannot be used).",
    )
    check.add_argument("--workspace", metavar="WORKSPACE_ID", help="the workspace whose file to read")
    check.add_argument("--file", metavar="PATH", help="a policy file to check instead")
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(func=_check)


@reports_store_errors
def _forget(args: argparse.Namespace) -> int:
    if not (args.user_id or "").strip() and not (args.anonymous_id or "").strip():
        raise PluginError("privacy forget needs --user-id or --anonymous-id.", field="user-id")
    user_id = (args.user_id or "").strip() or None
    anonymous_id = (args.anonymous_id or "").strip() or None
    configured = CollectorSettings.from_env().db
    collector_paths = args.collector_db or ([configured] if configured else [])
    store = open_store(args)
    # Every store is checked before any is changed: a mistyped or swapped path erases nothing anywhere.
    if store.path is not None:  # a file store; PostgreSQL is checked by connecting
        _check_dead_letter_store(store.path, given=bool(args.db))
    collectors: list[EventStore] = []
    try:
        for path in collector_paths:
            if not os.path.lexists(path):
                raise PluginError(
                    f"--collector-db {path!r}: no such collector file; check the path (nothing was erased).",
                    field="collector-db",
                )
            collectors.append(_open(functools.partial(EventStore, Path(path), create=False, setting="--collector-db")))
        dead = _run(lambda: store.erase(args.workspace, user_id, anonymous_id), store.location)
        store.close()
        erased = [_run(functools.partial(events.erase, user_id, anonymous_id), events.path) for events in collectors]
    finally:
        for events in collectors:
            events.close()
    report: dict[str, Any] = {
        "workspace_id": args.workspace,
        "dead_letters": dead.as_json(),
        "collectors": [collector.as_json() for collector in erased],
        "segment": SEGMENT_DELETION_NOTE,
    }
    if args.json:
        print(redact(json.dumps(report, indent=2)))
        return 0
    who = " / ".join(
        part
        for part in (f"userId {user_id!r}" if user_id else "", f"anonymousId {anonymous_id!r}" if anonymous_id else "")
        if part
    )
    print(f"Dead-letter store {dead.path}: removed {len(dead.removed)} event(s) of {who} in {args.workspace}.")
    for row in dead.removed:
        print(f"  #{row['id']}  {row['type'] or '-':<9} {row['message_id']}  ({row['reason']}, {row['state']})")
    print(f"  {dead.rewritten_events} other event(s) held the user's identifiers; they now read {ERASED!r}.")
    for collector in erased:
        print(f"Collector {collector.path}: removed {len(collector.removed)} event(s) of {who}.")
        for row in collector.removed:
            label = f"{row['type'] or '-'} {row['event'] or ''}".strip()
            print(f"  #{row['id']}  {label:<30} {row['message_id']}  (received {row['received_at']})")
        print(
            f"  {collector.rewritten_events} other event(s) and {collector.rewritten_batches} raw request(s) held "
            f"the user's identifiers; they now read {ERASED!r}."
        )
    if not erased:
        print(f"No collector file given (--collector-db or ${DB_ENV}): no collector was searched.")
    print(SEGMENT_DELETION_NOTE)
    return 0


def _check_dead_letter_store(path: Path, *, given: bool) -> None:
    """The dead-letter store must exist and be one: "removed 0" from a mistyped path would be a false answer."""
    if not os.path.lexists(path):
        where = f"--db {str(path)!r}" if given else f"the dead-letter store {path} ($QUICKBOT_SEGMENT_DEAD_LETTER_PATH)"
        raise PluginError(
            f"{where}: no such file, so nothing was erased. Give --db the path the workers use "
            "(QUICKBOT_SEGMENT_DEAD_LETTER_PATH where they run).",
            field="db",
        )
    _open(lambda: open_private_database(path, DEAD_LETTER_STORE, create=False, setting="--db").close())


_T = TypeVar("_T")


def _open(opening: Callable[[], _T]) -> _T:
    """A file SQLite cannot read is one clear line, not a traceback."""
    try:
        return opening()
    except (sqlite3.Error, OSError) as error:
        raise PluginError(f"cannot open a store for erasure: {error}; nothing was erased.", field="db") from None


def _run(erasing: Callable[[], ErasureReport], path: Path | str) -> ErasureReport:
    try:
        return erasing()
    except (sqlite3.Error, OSError) as error:
        raise PluginError(
            f"erasing from {path} failed ({error}); its transaction was rolled back, so nothing was erased there. "
            "Run the command again once the cause is fixed.",
            field="db",
        ) from None


def _check(args: argparse.Namespace) -> int:
    applies: str | None = None
    if args.file:
        policy = load_policy(args.file)
    elif args.workspace is not None:
        resolver = PolicyResolver.from_env()
        applies = resolver.describe(args.workspace)
        resolution = resolver.for_workspace(args.workspace)
        if resolution.policy is None or resolution.warning is not None:
            # Events of this workspace are refused (or get an older version): the file must be fixed.
            if resolution.warning is not None:
                raise PrivacyPolicyError(f"workspace {args.workspace!r}: {resolution.warning}")
            raise PrivacyPolicyError(
                f"workspace {args.workspace!r}: {resolution.error}; its events are refused until this is fixed."
            )
        policy = resolution.policy
    else:
        raise PluginError("privacy check needs --workspace or --file.", field="workspace")
    described = describe(policy)
    if applies is not None:
        described["workspace_id"] = args.workspace
        described["file"] = PolicyResolver.from_env().path_for(args.workspace)
        described["applies"] = applies
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    if applies is not None:
        print(f"Workspace {args.workspace!r}: {applies}.")
    print(f"Privacy policy: {described['source']}")
    print(f"  denied key names ({len(described['deny_names'])}): {', '.join(described['deny_names'])}")
    if described["deny_paths"]:
        print(f"  denied paths: {', '.join(described['deny_paths'])}")
    for name, action in described["detectors"].items():
        print(f"  detector {name:<6} {action}")
    for rule in described["hash"]:
        print(f"  hash {rule['path']} with {rule['method']} (normalised as {rule['normalise']})")
    if policy.needs_hash_key and not PrivacyVariables.from_env().hash_key.get_secret_value():
        print(f"  warning: keyed hashes need {HASH_KEY_ENV}, which is not set: such events will fail.")
    return 0


def describe(policy: PrivacyPolicy) -> dict[str, Any]:
    active = dict(policy.detectors)
    return {
        "source": policy.name,
        "deny_names": sorted(policy.deny_names),
        "deny_paths": sorted(".".join(path) for path in policy.deny_paths | policy.deny_any_object_paths),
        "detectors": {name: active.get(name, "off") for name in DETECTORS},
        "hash": [{"path": rule.dotted, "method": rule.method, "normalise": rule.normalise} for rule in policy.hashes],
    }
