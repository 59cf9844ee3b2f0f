"""Where the spool lives and how hard it tries, from operator environment variables.

The variables are the fields of `SpoolVariables` (the operator reference lists them); the
directory's default, beside the dead-letter store, is given by the caller, which knows where
that store is (delivery does not import the dead-letter package).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import ClassVar, Final

from pydantic import Field, field_validator

from ..core import ConfigurationError, Settings

DURABILITY_ENV: Final = "QUICKBOT_SEGMENT_SPOOL_DURABILITY"
DIR_ENV: Final = "QUICKBOT_SEGMENT_SPOOL_DIR"
MAX_BYTES_ENV: Final = "QUICKBOT_SEGMENT_SPOOL_MAX_BYTES"
SEGMENT_BYTES_ENV: Final = "QUICKBOT_SEGMENT_SPOOL_SEGMENT_BYTES"
SYNC_MS_ENV: Final = "QUICKBOT_SEGMENT_SPOOL_SYNC_MS"

# 256 MB holds ~600,000 chat events of ~400 bytes: minutes of a burst at Segment's pace.
DEFAULT_MAX_BYTES: Final = 256 * 1024 * 1024
# Small enough that a delivered segment is deleted soon, large enough that rotation
# (open, lock, rename: ~0.1 ms on the caller's thread) is rare.
DEFAULT_SEGMENT_BYTES: Final = 8 * 1024 * 1024
DEFAULT_SYNC_MS: Final = 5


class Durability(Enum):
    """What `queued` promises about an event when something dies right after it."""

    PROCESS = "process"  # written to the OS before `queued`: survives the process, not the machine
    MACHINE = "machine"  # also fsynced within SYNC_MS: survives a machine crash older than that
    OFF = "off"  # memory only: lost with the process


@dataclass(frozen=True)
class SpoolSettings:
    directory: Path
    durability: Durability = Durability.PROCESS
    max_bytes: int = DEFAULT_MAX_BYTES
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    sync_interval: float = DEFAULT_SYNC_MS / 1000

    def __post_init__(self) -> None:
        if self.segment_bytes > self.max_bytes:
            raise ConfigurationError(
                f"{SEGMENT_BYTES_ENV} ({self.segment_bytes}) must not be larger than {MAX_BYTES_ENV} "
                f"({self.max_bytes}); lower the segment size or raise the spool size.",
                field=SEGMENT_BYTES_ENV,
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, default_directory: Path) -> SpoolSettings:
        """The spool the variables describe; `default_directory` when QUICKBOT_SEGMENT_SPOOL_DIR is unset."""
        variables = SpoolVariables.from_env(environ)
        directory = Path(variables.spool_dir).expanduser() if variables.spool_dir else default_directory
        if directory.exists() and not directory.is_dir():
            raise ConfigurationError(
                f"{DIR_ENV} must name a directory, but {directory} is a file; point it at a directory "
                "(it is created when missing).",
                field=DIR_ENV,
            )
        return cls(
            directory=directory,
            durability=variables.spool_durability,
            max_bytes=variables.spool_max_bytes,
            segment_bytes=variables.spool_segment_bytes,
            sync_interval=variables.spool_sync_ms / 1000,
        )


class SpoolVariables(Settings):
    title: ClassVar[str] = "Spool (crash safety)"

    spool_durability: Durability = Field(
        Durability.PROCESS,
        description="What `queued` promises: `process` (written to the OS first: survives the process), `machine` "
        "(also fsynced every SPOOL_SYNC_MS: survives the machine) or `off` (memory only).",
    )
    spool_dir: str = Field(
        "", description="Directory of the spool files of every process (unset: spool/ beside the dead-letter store)."
    )
    spool_max_bytes: int = Field(
        DEFAULT_MAX_BYTES,
        ge=1024 * 1024,
        le=1 << 40,
        description="Bytes of spool files per process, a preallocated file counted at its full size; beyond, "
        'new events are dead-lettered as "queue_full".',
    )
    spool_segment_bytes: int = Field(
        DEFAULT_SEGMENT_BYTES,
        ge=64 * 1024,
        le=1 << 30,
        description="The size a spool file is preallocated at; a new one is started when the next event does not "
        "fit (at most SPOOL_MAX_BYTES).",
    )
    spool_sync_ms: int = Field(
        DEFAULT_SYNC_MS, ge=1, le=1000, description="`machine` durability: how often events are fsynced."
    )

    @field_validator("spool_durability", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value
