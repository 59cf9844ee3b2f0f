"""Where a Segment message goes: the region's host, or the operator's override.

Bot builders choose only a region; an arbitrary URL is an operator decision
(`QUICKBOT_SEGMENT_ENDPOINT`, for a proxy, a Segment-compatible server or the embedded
collector), because a URL typed in the editor could send a workspace's events anywhere.
EU workspaces must use the EU host: the US host accepts their events and drops them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import Field

from .endpoints import parse_endpoint
from .errors import ConfigurationError
from .settings import Settings

Region = Literal["us", "eu"]

REGION_HOSTS: dict[str, str] = {
    "us": "https://api.segment.io",
    "eu": "https://events.eu1.segmentapis.com",
}
REGION_TITLES: dict[str, str] = {
    "us": "United States (api.segment.io)",
    "eu": "Europe (events.eu1.segmentapis.com)",
}

ENDPOINT_ENV = "QUICKBOT_SEGMENT_ENDPOINT"


class EndpointSettings(Settings):
    title: ClassVar[str] = "Where events go"

    endpoint: str = Field(
        "",
        description="Base URL every event is posted to instead of the region's host: a proxy, a Segment-compatible "
        "server or the local collector (a trailing /v1 or /v1/batch is removed).",
    )


def endpoint_for(region: str, environ: Mapping[str, str] | None = None) -> str:
    """The base URL (no `/v1/...`) that events of `region` are posted to."""
    override = EndpointSettings.from_env(environ).endpoint
    if override:
        return parse_endpoint(override, ENDPOINT_ENV).url
    try:
        return REGION_HOSTS[region]
    except KeyError:
        raise ConfigurationError(
            f"region must be one of {', '.join(sorted(REGION_HOSTS))}, got {region!r}.", field="region"
        ) from None
