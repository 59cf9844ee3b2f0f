"""Cleaning what gets written: no write key ever reaches the file.

Events and error details come from code that may have made a mistake (a key in a property, a
proxy URL with a password, a raw key where a token belongs); everything is redacted here,
before any write, as a last line of defence.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ..core import REDACTED, fingerprint, redact

TOKEN_PREFIX: Final = "qbseg."
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{12}")
_WRITE_KEY_NAME = re.compile(r"write_?key", re.IGNORECASE)


@dataclass(frozen=True)
class Row:
    """One message, cleaned and ready to write."""

    message_id: str
    type: str | None
    message_json: str


# --- cleaning what gets written --------------------------------------------------------------


class Scrubber:
    """Copies a JSON value with every string redacted and every `writeKey`-like field blanked,
    noting whether anything had to be removed (worth a warning: a key got into an event)."""

    def __init__(self) -> None:
        self.removed_something = False

    def text(self, value: str) -> str:
        cleaned = redact(value)
        if cleaned != value:
            self.removed_something = True
        return cleaned

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            cleaned: dict[str, Any] = {}
            for key, item in value.items():
                name = self.text(str(key))
                if _WRITE_KEY_NAME.fullmatch(name):
                    self.removed_something = True
                    cleaned[name] = REDACTED
                else:
                    cleaned[name] = self.value(item)
            return cleaned
        if isinstance(value, (list, tuple)):
            return [self.value(item) for item in value]
        if isinstance(value, datetime):
            return value.isoformat()
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self.text(str(value))


def clean_endpoint(endpoint: object) -> str:
    """The endpoint without user:password@ or a query (a proxy URL can carry credentials)."""
    text = str(endpoint or "")
    try:
        parts = urllib.parse.urlsplit(text)
        if parts.username is not None or parts.password is not None or parts.query:
            host = parts.hostname or ""
            if parts.port is not None:
                host = f"{host}:{parts.port}"
            text = urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        text = ""
    return redact(text)


def clean_fingerprint(value: object) -> str:
    """A `sha256:...` fingerprint as given; anything else (say, a key passed by mistake) fingerprinted."""
    text = str(value or "")
    if not text or _FINGERPRINT.fullmatch(text):
        return text
    return fingerprint(text)
