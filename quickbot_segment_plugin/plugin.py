"""The hook implementations QuickBot calls: deliberately thin.

Everything with state (the template engine, the key ring, the clients) is built on the first
hook call, not at import: the host imports every plugin when it starts, and the contract
forbids I/O, threads and reading secrets there.
"""

from __future__ import annotations

from .block import SegmentBlock, current_block, shutdown_current_block
from .host import hookimpl


@hookimpl
def quickbot_block_types() -> list[SegmentBlock]:
    return [current_block()]


@hookimpl
def quickbot_shutdown(timeout: float) -> None:
    shutdown_current_block(timeout)
