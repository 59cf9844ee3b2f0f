"""`quickbot-segment privacy forget|check`: answer a deletion request, see a workspace's policy.

`forget` removes one end user's events from everything this plugin keeps: the dead-letter
store (events that could not be delivered, kept for replay) and an embedded collector's
SQLite file (what a test or staging setup received). It prints what it removed, by row and
messageId, never the messages. Segment's own copy is a separate request (Segment's user
deletion and suppression: the Privacy Portal or the Public API), which this command cannot
make: it holds no Segment workspace token, only write keys.

Exit status: 0 done (also when nothing was found), 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ..collector import EventStore
from ..core import PluginError, env_str, redact
from ..privacy import DEFAULT_POLICY, DETECTORS, HASH_KEY_ENV, PolicyResolver, PrivacyPolicy, load_policy
from .collector import DB_ENV
from .operations import add_store_option, open_store

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
        "QUICKBOT_SEGMENT_TRACKING_PLAN_DIR, /<workspace>.privacy.json) or a given file, and print "
        "what it does. Exit 2 when the file cannot be used.",
    )
    check.add_argument("--workspace", metavar="WORKSPACE_ID", help="the workspace whose file to read")
    check.add_argument("--file", metavar="PATH", help="a policy file to check instead")
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(func=_check)


def _forget(args: argparse.Namespace) -> int:
    if not (args.user_id or "").strip() and not (args.anonymous_id or "").strip():
        raise PluginError("privacy forget needs --user-id or --anonymous-id.", field="user-id")
    user_id = (args.user_id or "").strip() or None
    anonymous_id = (args.anonymous_id or "").strip() or None
    collector_paths = args.collector_db or ([env_str(DB_ENV, "")] if env_str(DB_ENV, "") else [])
    for path in collector_paths:
        if not os.path.isfile(path):
            raise PluginError(f"--collector-db {path!r}: no such collector file.", field="collector-db")
    store = open_store(args)
    report: dict[str, Any] = {
        "workspace_id": args.workspace,
        "dead_letters": {"path": str(store.path), "removed": store.forget(args.workspace, user_id, anonymous_id)},
        "collectors": [],
        "segment": SEGMENT_DELETION_NOTE,
    }
    store.close()
    for path in collector_paths:
        events = EventStore(Path(path))
        try:
            removed = events.forget(user_id, anonymous_id)
        finally:
            events.close()
        report["collectors"].append({"path": path, "removed": removed})
    if args.json:
        print(redact(json.dumps(report, indent=2)))
        return 0
    who = " / ".join(
        part
        for part in (f"userId {user_id!r}" if user_id else "", f"anonymousId {anonymous_id!r}" if anonymous_id else "")
        if part
    )
    dead = report["dead_letters"]
    print(f"Dead-letter store {dead['path']}: removed {len(dead['removed'])} event(s) of {who} in {args.workspace}.")
    for row in dead["removed"]:
        print(f"  #{row['id']}  {row['type'] or '-':<9} {row['message_id']}  ({row['reason']}, {row['state']})")
    for collector in report["collectors"]:
        print(f"Collector {collector['path']}: removed {len(collector['removed'])} event(s) of {who}.")
        for row in collector["removed"]:
            label = f"{row['type'] or '-'} {row['event'] or ''}".strip()
            print(f"  #{row['id']}  {label:<30} {row['message_id']}  (received {row['received_at']})")
    if not report["collectors"]:
        print(f"No collector file given (--collector-db or ${DB_ENV}): no collector was searched.")
    print(SEGMENT_DELETION_NOTE)
    return 0


def _check(args: argparse.Namespace) -> int:
    if args.file:
        policy = load_policy(args.file)
    elif args.workspace:
        resolver = PolicyResolver.from_env()
        path = resolver.path_for(args.workspace)
        policy = load_policy(path) if path is not None and os.path.isfile(path) else DEFAULT_POLICY
    else:
        raise PluginError("privacy check needs --workspace or --file.", field="workspace")
    described = describe(policy)
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    print(f"Privacy policy: {described['source']}")
    print(f"  denied key names ({len(described['deny_names'])}): {', '.join(described['deny_names'])}")
    if described["deny_paths"]:
        print(f"  denied paths: {', '.join(described['deny_paths'])}")
    for name, action in described["detectors"].items():
        print(f"  detector {name:<6} {action}")
    for rule in described["hash"]:
        print(f"  hash {rule['path']} with {rule['method']} (normalised as {rule['normalise']})")
    if policy.needs_hash_key and not env_str(HASH_KEY_ENV, ""):
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
