"""The collector's operator settings (`QUICKBOT_SEGMENT_COLLECTOR_*`); a command-line flag wins over its variable."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ..core import Settings
from .limits import DEFAULT_MAX_STORED_EVENTS, DEFAULT_MAX_STORED_MB

DEFAULT_PORT = 8787
DEFAULT_MAX_CONNECTIONS = 256


class CollectorSettings(Settings):
    title: ClassVar[str] = "Local collector"
    env_prefix: ClassVar[str] = "QUICKBOT_SEGMENT_COLLECTOR_"

    port: int = Field(
        DEFAULT_PORT, ge=0, le=65_535, description="Port `quickbot-segment collector` listens on (0: any)."
    )
    db: str = Field("", description="SQLite file the collector keeps events in (unset: a temporary file).")
    url: str = Field(
        f"http://127.0.0.1:{DEFAULT_PORT}", description="The collector `quickbot-segment events` reads from."
    )
    max_connections: int = Field(
        DEFAULT_MAX_CONNECTIONS, ge=1, le=10_000, description="Connections the collector serves at once."
    )
    max_stored_events: int = Field(
        DEFAULT_MAX_STORED_EVENTS,
        ge=1,
        le=100_000_000,
        description="Events the collector keeps; past it the oldest are dropped (and counted on the page).",
    )
    max_stored_mb: float = Field(
        DEFAULT_MAX_STORED_MB, ge=0.001, le=1_000_000, description="Megabytes of stored JSON the collector keeps."
    )
    allowed_origins: str = Field(
        "",
        description="Comma-separated `scheme://host[:port]` of web pages allowed to send events from a browser.",
    )
