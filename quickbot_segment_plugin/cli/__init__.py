"""`quickbot-segment`: the operator's and bot builder's command line.

Each command group lives in its own module under `cli/` and adds itself to the parser
through `register(subparsers)`; this module only assembles them, so adding a command never
touches another command's code. A command returns its exit status; `PluginError`s become
one clear line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..core import PluginError
from . import collector, credentials, flows, operations, plugins, privacy, schema, settings, spool

COMMAND_MODULES = (plugins, schema, settings, flows, credentials, collector, operations, privacy, spool)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quickbot-segment",
        description="The Segment block for QuickBot: run flows, check options, manage credentials.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except PluginError as error:
        print(f"quickbot-segment: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status
