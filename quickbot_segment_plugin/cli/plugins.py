"""`quickbot-segment plugins`: what a QuickBot host would discover on this machine."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..host import ENTRY_POINT_GROUP, ReferenceHost


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "plugins", help="list the QuickBot plugins the reference host discovers", description=__doc__
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    host = ReferenceHost().load()
    plugins = host.plugins()
    blocks = host.block_types()
    if args.json:
        print(
            json.dumps(
                {
                    "plugins": [plugin.__dict__ for plugin in plugins],
                    "block_types": [
                        {"id": b.id, "name": b.name, "version": b.version, "api_version": b.api_version}
                        for b in blocks.values()
                    ],
                },
                indent=2,
            )
        )
        return 0
    if not plugins:
        print(f"No plugins found in the {ENTRY_POINT_GROUP!r} entry-point group.")
        return 1
    print(f"{'plugin':<12} {'distribution':<28} {'version':<10} hooks")
    for plugin in plugins:
        print(f"{plugin.name:<12} {plugin.distribution:<28} {plugin.version:<10} {', '.join(plugin.hooks)}")
    print()
    print(f"{'block type':<12} {'name':<28} {'version':<10} api")
    for block in blocks.values():
        print(f"{block.id:<12} {block.name:<28} {block.version:<10} {block.api_version}")
    return 0
