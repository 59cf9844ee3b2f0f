"""Where the spool lives and how hard it tries, from operator environment variables.

| variable | default | meaning |
|---|---|---|
| QUICKBOT_SEGMENT_SPOOL_DURABILITY | process | `process`, `machine` or `off` (docs/operators/spool.md) |
| QUICKBOT_SEGMENT_SPOOL_DIR | `spool/` beside the dead-letter store | one directory for every process of a deployment |
| QUICKBOT_SEGMENT_SPOOL_MAX_BYTES | 268435456 | bytes of spool files per process; beyond, "queue_full" |
| QUICKBOT_SEGMENT_SPOOL_SEGMENT_BYTES | 8388608 | a segment file is closed and a new one started past this size |
| QUICKBOT_SEGMENT_SPOOL_SYNC_MS | 5 | `machine`: how often written events are fsynced |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Final

from ..core import ConfigurationError, env_int, env_str
from ..deadletters import default_path as dead_letter_path

DURABILITY_ENV: Final = "QUICKBOT_SEGMENT_SPOOL_DURABILITY"
DIR_ENV: Final = "QUICKBOT_SEGMENT_SPOOL_DIR"
MAX_BYTES_ENV: Final = "QUICKBOT_SEGMENT_SPOOL_MAX_BYTES"
SEGMENT_BYTES_ENV: Final = "QUICKBOT_SEGMENT_SPOOL_SEGMENT_BYTES"
SYNC_MS_ENV: Final = "QUICKBOT_SEGMENT_SPOOL_SYNC_MS"


class Durability(Enum):
    """What `queued` promises about an event when something dies right after it."""

    PROCESS = "process"  # written to the OS before `queued`: survives the process, not the machine
    MACHINE = "machine"  # also fsynced within SYNC_MS: survives a machine crash older than that
    OFF = "off"  # memory only: lost with the process


@dataclass(frozen=True)
class SpoolSettings:
    directory: Path
    durability: Durability = Durability.PROCESS
    # 256 MB holds ~600,000 chat events of ~400 bytes: minutes of a burst at Segment's pace.
    max_bytes: int = 256 * 1024 * 1024
    # Small enough that a delivered segment is deleted soon, large enough that rotation
    # (open, lock, rename: ~0.1 ms on the caller's thread) is rare.
    segment_bytes: int = 8 * 1024 * 1024
    sync_interval: float = 0.005

    def __post_init__(self) -> None:
        if self.segment_bytes > self.max_bytes:
            raise ConfigurationError(
                f"{SEGMENT_BYTES_ENV} ({self.segment_bytes}) must not be larger than {MAX_BYTES_ENV} "
                f"({self.max_bytes}); lower the segment size or raise the spool size.",
                field=SEGMENT_BYTES_ENV,
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SpoolSettings:
        env = os.environ if environ is None else environ
        raw = env_str(DURABILITY_ENV, Durability.PROCESS.value, env).lower()
        try:
            durability = Durability(raw)
        except ValueError:
            choices = ", ".join(mode.value for mode in Durability)
            raise ConfigurationError(
                f"{DURABILITY_ENV} must be one of {choices}, got {raw!r}.", field=DURABILITY_ENV
            ) from None
        explicit = env_str(DIR_ENV, "", env)
        directory = Path(explicit).expanduser() if explicit else dead_letter_path(env).parent / "spool"
        if directory.exists() and not directory.is_dir():
            raise ConfigurationError(
                f"{DIR_ENV} must name a directory, but {directory} is a file; point it at a directory "
                "(it is created when missing).",
                field=DIR_ENV,
            )
        d = cls(directory)
        return cls(
            directory=directory,
            durability=durability,
            max_bytes=env_int(MAX_BYTES_ENV, d.max_bytes, minimum=1024 * 1024, maximum=1 << 40, environ=env),
            segment_bytes=env_int(SEGMENT_BYTES_ENV, d.segment_bytes, minimum=64 * 1024, maximum=1 << 30, environ=env),
            sync_interval=env_int(SYNC_MS_ENV, 5, minimum=1, maximum=1000, environ=env) / 1000,
        )
