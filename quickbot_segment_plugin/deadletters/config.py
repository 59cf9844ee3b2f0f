"""The store's operator settings (environment variables and their defaults) and tuning.

In one place so the settings reference, the CLI and the store agree on the variable names and defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import ClassVar, Final

from pydantic import Field, SecretStr

from ..core import Settings, env_str

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
#: How long Segment deduplicates events by messageId. Segment documents "a 24 hour window" for
#: its deduplication (https://segment.com/docs/guides/duplicate-data/); replaying a row that first
#: failed longer ago than this can add a duplicate if it had reached Segment after all.
SEGMENT_DEDUP_WINDOW: Final = timedelta(hours=24)


class DeadLetterSettings(Settings):
    title: ClassVar[str] = "Dead letters, counters and replicas"

    dead_letter_path: str = Field(
        "",
        description="SQLite file of the dead-letter store and counters (unset: "
        "$XDG_STATE_HOME/quickbot-segment/dead-letters.sqlite3, else ~/.local/state/quickbot-segment/...).",
    )
    database_url: SecretStr = Field(
        SecretStr(""),
        description="postgresql://user:password@host:port/db: keep dead letters, counters and erasure in one "
        "PostgreSQL database shared by every replica instead of the SQLite file (needs the `postgres` extra).",
    )
    replica_id: str = Field(
        "",
        max_length=200,
        description="This process's name in `stats` and the replay lock (unset: hostname:pid).",
    )
    dead_letter_retention_days: float = Field(
        DEFAULT_RETENTION_DAYS, ge=0.0001, le=36_500, description="Days a dead letter is kept after its last failure."
    )
    dead_letter_max_rows: int = Field(
        DEFAULT_MAX_ROWS, ge=1, le=1_000_000_000, description="Dead letters kept at most; the oldest go first."
    )
    counters_flush_seconds: float = Field(
        DEFAULT_COUNTER_FLUSH_SECONDS,
        ge=0.1,
        le=86_400,
        description="How often a server that called start_counter_flusher() writes its counters to the store.",
    )


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    """`QUICKBOT_SEGMENT_DEAD_LETTER_PATH`, else the user's state directory (XDG)."""
    env = os.environ if environ is None else environ
    explicit = DeadLetterSettings.from_env(env).dead_letter_path
    if explicit:
        return Path(explicit).expanduser()
    state_home = env_str("XDG_STATE_HOME", "", env)
    base = Path(state_home).expanduser() if state_home else Path.home() / ".local" / "state"
    return base / "quickbot-segment" / "dead-letters.sqlite3"


def beside_store(name: str, environ: Mapping[str, str] | None = None) -> Path:
    """A directory of the plugin's own state next to the dead-letter store (the spool's default)."""
    return default_path(environ).parent / name
