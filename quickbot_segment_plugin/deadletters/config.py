"""The store's operator settings (environment variables and their defaults) and tuning.

In one place so the README, the CLI and the store agree on the variable names and defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from ..core import env_str

PATH_ENV: Final = "QUICKBOT_SEGMENT_DEAD_LETTER_PATH"
RETENTION_DAYS_ENV: Final = "QUICKBOT_SEGMENT_DEAD_LETTER_RETENTION_DAYS"
MAX_ROWS_ENV: Final = "QUICKBOT_SEGMENT_DEAD_LETTER_MAX_ROWS"
COUNTER_FLUSH_ENV: Final = "QUICKBOT_SEGMENT_COUNTERS_FLUSH_SECONDS"

DEFAULT_RETENTION_DAYS: Final = 30.0
DEFAULT_MAX_ROWS: Final = 1_000_000
DEFAULT_PRUNE_EVERY: Final = 1000  # events added between two prunes
DEFAULT_PRUNE_INTERVAL: Final = 300.0  # seconds between two prunes, whatever the traffic
DEFAULT_BUSY_TIMEOUT: Final = 10.0  # seconds to wait for another process's write
DEFAULT_COUNTER_FLUSH_SECONDS: Final = 10.0
FAILURE_LOG_INTERVAL: Final = 60.0  # at most one "still failing" error a minute
MAX_DETAIL_CHARS: Final = 1000
PAGE_SIZE: Final = 500


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    """`QUICKBOT_SEGMENT_DEAD_LETTER_PATH`, else the user's state directory (XDG)."""
    env = os.environ if environ is None else environ
    explicit = env_str(PATH_ENV, "", env)
    if explicit:
        return Path(explicit).expanduser()
    state_home = env_str("XDG_STATE_HOME", "", env)
    base = Path(state_home).expanduser() if state_home else Path.home() / ".local" / "state"
    return base / "quickbot-segment" / "dead-letters.sqlite3"
