"""Checking and normalising an operator's endpoint URL (QUICKBOT_SEGMENT_ENDPOINT, `run --endpoint`).

The endpoint is a base URL: the library appends `/v1/batch` itself. An operator who pastes
Segment's full URL (`https://api.segment.io/v1/batch`) would otherwise send every event to
`/v1/v1/batch` and see them all become `rejected` dead letters, so a trailing `/v1` or
`/v1/batch` is removed, with an info log line saying so. Everything else that cannot work is
refused with a message naming where the URL came from.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
from dataclasses import dataclass
from typing import Final

from .errors import ConfigurationError

logger = logging.getLogger("quickbot_segment_plugin.endpoints")

_API_SUFFIXES: Final = ("/v1/batch", "/v1")
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})
_logged: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Endpoint:
    url: str  # scheme://host[:port][/prefix], no trailing slash, no /v1
    host: str
    removed_suffix: str | None  # "/v1/batch" or "/v1" when it was removed

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)


def parse_endpoint(raw: str, source: str) -> Endpoint:
    """`raw` checked and normalised; `source` names where it came from, for the error message."""
    text = raw.strip()
    parts = urllib.parse.urlsplit(text)
    example = "for example https://api.segment.io or http://127.0.0.1:8787"
    if parts.scheme not in ("http", "https"):
        raise ConfigurationError(
            f"{source} must start with http:// or https://, got {text[:80]!r} ({example}).", field=source
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(
            f"{source} must not contain a user name or password; the write key is sent by the plugin.",
            field=source,
        )
    host = parts.hostname or ""
    if not host:
        raise ConfigurationError(f"{source} has no host name, got {text[:80]!r} ({example}).", field=source)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        raise ConfigurationError(
            f"{source} has an invalid port, got {text[:80]!r} ({example}).", field=source
        ) from None
    if parts.query or parts.fragment:
        raise ConfigurationError(
            f"{source} must not have a query or fragment (?... or #...), got {text[:80]!r} ({example}).",
            field=source,
        )
    path = parts.path.rstrip("/")
    removed = None
    for suffix in _API_SUFFIXES:
        if path.lower().endswith(suffix):
            path = path[: -len(suffix)].rstrip("/")
            removed = suffix
            break
    url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    if removed is not None and (source, text) not in _logged:
        _logged.add((source, text))
        logger.info(
            "%s ends in %s; using %s (the plugin adds /v1/batch itself).",
            source,
            removed,
            url,
            extra={"endpoint": url},
        )
    return Endpoint(url=url, host=host, removed_suffix=removed)


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: a URL that can only reach this machine."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
