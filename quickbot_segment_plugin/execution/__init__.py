"""One run of the block: options are checked and compiled into a plan once, then each call renders,
screens, checks and hands the message to an event sink (delivery, wired by the block).
"""

from .executor import Executor
from .validation import check_options

__all__ = [
    "Executor",
    "check_options",
]
