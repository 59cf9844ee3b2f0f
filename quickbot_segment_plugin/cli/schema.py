"""`quickbot-segment schema`: print the block's form schemas, or regenerate block_schemas/."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import schemas


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("schema", help="print or regenerate the block's JSON Schemas", description=__doc__)
    parser.add_argument(
        "which",
        nargs="?",
        default="options",
        choices=sorted(schemas.SCHEMA_FILES),
        help="which document to print (default: options)",
    )
    parser.add_argument(
        "--write",
        metavar="DIR",
        nargs="?",
        const="block_schemas",
        help="write all four documents into DIR (default: ./block_schemas) instead of printing",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.write:
        for path in schemas.write(Path(args.write)):
            print(f"wrote {path}")
        return 0
    print(schemas.render(schemas.generate()[args.which]), end="")
    return 0
