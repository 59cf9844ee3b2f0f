"""`quickbot-segment validate` and `quickbot-segment run`: a flow file through the reference host.

`run` is the block's main job end to end on one machine: with no credentials it starts the
embedded collector, points delivery at it and seals a throw-away local key, so a bot builder
sees real Segment payloads arrive without an account or a network.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core import ENDPOINT_ENV
from ..host import ReferenceHost
from ..quality import lint, lint_across_blocks
from .flow_files import load_flow, parse_variable

LOCAL_WRITE_KEY = "localDemoWriteKey0123456789"


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
        help="run a flow's Segment blocks (locally, or to Segment with --credentials)",
        description=__doc__,
    )
    run.add_argument("flow", type=Path, help="the flow file (JSON)")
    run.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="set or override a variable")
    run.add_argument(
        "--credentials",
        metavar="TOKEN",
        help="a sealed token (credentials seal): send to Segment, not locally",
    )
    run.add_argument("--dry-run", action="store_true", help="render and check, send nothing")
    run.add_argument("--json", action="store_true", help="print the results as JSON")
    run.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for delivery at the end")
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
    # Naming conventions (naming.py) are warnings: printed after the problems, never exit status 1.
    warnings.extend(lint_across_blocks([(block.id, block.options) for block in flow.blocks_of("segment")]))
    for block_id, warning in warnings:
        where = f"/{warning['path']}" if warning["path"] else ""
        print(f"{args.flow}: block {block_id}{where}: warning: {warning['message']} [{warning['rule']}]")
    count = len(flow.blocks_of("segment"))
    print(f"{count - failures} of {count} Segment block(s) valid.", file=sys.stderr)
    if warnings:
        print(f"{len(warnings)} naming warning(s).", file=sys.stderr)
    return 1 if failures else 0


def run_flow(args: argparse.Namespace) -> int:
    flow = load_flow(args.flow)
    variables = dict(flow.variables)
    variables.update(parse_variable(assignment) for assignment in args.var)
    local = not args.credentials and not args.dry_run
    with _local_segment(enabled=local) as collector:
        host = ReferenceHost().load()
        block_type = host.block_type("segment")
        token = args.credentials
        if local:
            # Sealed by the block itself, so the key ring that seals is the one that opens.
            token = block_type.seal_credentials({"writeKey": LOCAL_WRITE_KEY}, workspace_id=flow.workspace_id)
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
        host.shutdown(args.timeout)
        received = collector.messages() if collector is not None else None
    _print(results, received, as_json=args.json)
    return 1 if any(result["status"] == "failed" for result in results) else 0


@contextlib.contextmanager
def _local_segment(*, enabled: bool) -> Iterator[Any]:
    """The embedded collector, with delivery pointed at it and a local key ring; restored afterwards."""
    if not enabled:
        yield None
        return
    # Imported here: `validate` and `--credentials` runs need neither the collector nor a local key.
    from ..collector import Collector
    from ..credentials import ENCRYPTION_KEYS_ENV, generate_key

    saved = {name: os.environ.get(name) for name in (ENDPOINT_ENV, ENCRYPTION_KEYS_ENV)}
    with Collector() as collector:
        os.environ[ENDPOINT_ENV] = collector.url
        if not os.environ.get(ENCRYPTION_KEYS_ENV):
            # A throw-away key: the token it seals lives only as long as this run.
            os.environ[ENCRYPTION_KEYS_ENV] = generate_key()
        try:
            yield collector
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _print(results: list[dict[str, Any]], received: list[dict[str, Any]] | None, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"results": results, "received": received}, indent=2, ensure_ascii=False))
        return
    for result in results:
        print(
            f"== block {result['block']}: {result['status']}"
            + (f" ({result['message_id']})" if "message_id" in result else "")
        )
        for entry in result["logs"]:
            print(f"   [{entry['level']}] {entry['message']}")
        if "payload" in result:
            print("   payload: " + json.dumps(result["payload"], ensure_ascii=False))
    if received is not None:
        print(f"\nThe local collector received {len(received)} event(s):")
        for message in received:
            who = message.get("userId") or message.get("anonymousId") or ""
            what = (
                message.get("event") or message.get("name") or message.get("groupId") or message.get("previousId") or ""
            )
            print(f"   {message.get('type', '?'):<9} {what!s:<28} {who}")
