"""`quickbot-segment validate` and `quickbot-segment run`: a flow file through the reference host.

`run` is the block's main job end to end: it sends to a collector on this machine (or a
temporary one of its own) with a throw-away key, or to Segment with `--credentials`, waits
for delivery and reports per block what was delivered, dead-lettered or in doubt, and why.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ..block import current_block
from ..core import ENDPOINT_ENV
from ..delivery import OutcomeLedger
from ..host import ReferenceHost
from ..privacy import PolicyResolver
from ..quality import PlanResolver, lint, lint_across_blocks
from .flow_files import Flow, FlowError, load_flow, parse_variable
from .flow_variables import variable_name_warnings
from .run_report import delivery_of, exit_status, print_report, wait_for_delivery
from .run_target import LOCAL_WRITE_KEY, run_target


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    validate = subparsers.add_parser(
        "validate",
        help="check every Segment block of a flow file",
        description="Check every Segment block "
        "of a flow file, as the editor does on save. Exit status 1 when any block has a problem.",
    )
    validate.add_argument("flow", type=Path, help="the flow file (JSON)")
    validate.set_defaults(func=run_validate)

    run = subparsers.add_parser(
        "run",
        help="run a flow's Segment blocks and report what was delivered",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("flow", type=Path, help="the flow file (JSON)")
    run.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="set or override a variable")
    run.add_argument(
        "--credentials",
        metavar="TOKEN",
        help="a sealed token (credentials seal): send to Segment, not locally",
    )
    run.add_argument(
        "--endpoint",
        metavar="URL",
        help=f"where to send (default: ${ENDPOINT_ENV}; none: a temporary local collector). "
        "A URL on this machine (a running `quickbot-segment collector`) needs no credentials",
    )
    run.add_argument(
        "--db",
        metavar="PATH",
        help="dead-letter store for this run (default: $QUICKBOT_SEGMENT_DEAD_LETTER_PATH, else a scratch file)",
    )
    run.add_argument("--dry-run", action="store_true", help="render and check, send nothing")
    run.add_argument("--json", action="store_true", help="print the results as JSON")
    run.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for delivery before giving up (default: 10)"
    )
    run.set_defaults(func=run_flow)


def run_validate(args: argparse.Namespace) -> int:
    flow = load_flow(args.flow)
    block_type = ReferenceHost().load().block_type("segment")
    failures = 0
    warnings: list[tuple[str, dict[str, str]]] = []
    for block in flow.blocks_of("segment"):
        problems = block_type.validate(block.options)
        for problem in problems:
            where = f"/{problem['path']}" if problem["path"] else ""
            print(f"{args.flow}: block {block.id}{where}: {problem['message']}")
        failures += bool(problems)
        warnings.extend((block.id, warning) for warning in lint(block.options, flow.workspace_id))
        warnings.extend((block.id, warning) for warning in variable_name_warnings(block.options, flow.variables))
    # Naming conventions (naming.py) are warnings: printed after the problems, never exit status 1.
    warnings.extend(lint_across_blocks([(block.id, block.options) for block in flow.blocks_of("segment")]))
    for block_id, warning in warnings:
        where = f"/{warning['path']}" if warning["path"] else ""
        print(f"{args.flow}: block {block_id}{where}: warning: {warning['message']} [{warning['rule']}]")
    count = len(flow.blocks_of("segment"))
    if flow.workspace_id:
        # Which files the flow's events get: a policy or plan file under an unexpected name is seen here.
        print(f"Workspace {flow.workspace_id!r}:", file=sys.stderr)
        print(f"  privacy policy: {PolicyResolver.from_env().describe(flow.workspace_id)}", file=sys.stderr)
        print(f"  tracking plan: {PlanResolver.from_env().describe(flow.workspace_id)}", file=sys.stderr)
    print(f"{count - failures} of {count} Segment block(s) valid.", file=sys.stderr)
    if warnings:
        print(f"{len(warnings)} warning(s).", file=sys.stderr)
    return 1 if failures else 0


def run_flow(args: argparse.Namespace) -> int:
    flow = load_flow(args.flow)
    variables = dict(flow.variables)
    variables.update(parse_variable(assignment) for assignment in args.var)
    if args.timeout <= 0 or args.timeout > 3600:
        raise FlowError(
            f"--timeout must be more than 0 and at most 3600 seconds, got {args.timeout:g}.", field="timeout"
        )
    if args.dry_run:
        results = _execute(flow, variables, args, token=None)
        print_report(results, None, None, as_json=args.json)
        return exit_status(results)
    with run_target(endpoint=args.endpoint, credentials=args.credentials, db=args.db) as target:
        for note in target.notes:
            print(note, file=sys.stderr)
        host = ReferenceHost().load()
        block_type = host.block_type("segment")
        ledger = OutcomeLedger()
        current_block().pool().add_observer(ledger)
        token = args.credentials
        if target.local_key:
            # Sealed by the block itself, so the key ring that seals is the one that opens.
            token = block_type.seal_credentials({"writeKey": LOCAL_WRITE_KEY}, workspace_id=flow.workspace_id)
        started = time.monotonic()
        results = _execute(flow, variables, args, token=token, block_type=block_type)
        queued = [str(result["message_id"]) for result in results if result["status"] == "queued"]
        remaining = args.timeout - (time.monotonic() - started)
        wait_for_delivery(ledger, queued, remaining, target.where, announced=args.timeout)
        # What has no outcome yet is given up on now and dead-lettered, with the last cause seen.
        host.shutdown(max(0.0, args.timeout - (time.monotonic() - started)))
        for result in results:
            delivery = delivery_of(ledger, result)
            if delivery is not None:
                result["delivery"] = delivery
        received = target.collector.messages() if target.collector is not None else None
    print_report(results, target, received, as_json=args.json)
    return exit_status(results)


def _execute(
    flow: Flow, variables: dict[str, Any], args: argparse.Namespace, *, token: str | None, block_type: Any = None
) -> list[dict[str, Any]]:
    block_type = block_type or ReferenceHost().load().block_type("segment")
    session_id = f"cli-{uuid.uuid4().hex[:8]}"
    results = []
    for block in flow.blocks_of("segment"):
        context = {
            "workspace_id": flow.workspace_id,
            "credentials": token,
            "variables": variables,
            "bot_id": flow.bot_id or args.flow.stem,
            "session_id": session_id,
            "block_id": block.id,
            "execution_id": f"{session_id}:{block.id}",
            "dry_run": args.dry_run,
        }
        results.append({"block": block.id, **block_type.execute(block.options, context)})
    return results
