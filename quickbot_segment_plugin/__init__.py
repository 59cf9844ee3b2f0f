"""The Segment block for QuickBot.

Importing this package must stay free of I/O, threads and secrets (the host contract): the
host imports every plugin at start, and a plugin that reads a key or opens a socket there
slows or breaks every QuickBot server that has it installed.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("quickbot-segment-plugin")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
