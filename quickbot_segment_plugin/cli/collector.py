"""Placeholder: the `collector` commands are being written (see issues); replaced by the real module."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Adds nothing yet."""
