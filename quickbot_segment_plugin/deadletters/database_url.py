"""`QUICKBOT_SEGMENT_DATABASE_URL`: which shared database holds the store, and how to print it safely.

The URL carries the database password. It is parsed once here; everything else (logs, errors,
reprs, CLI output) uses `DatabaseUrl.display`, which shows user, host, port and database but
never the password, and `scrub` removes the password (raw or percent-encoded, with the whole
URL) from text that came from elsewhere, such as a driver's error message that echoes the
connection string.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from ..core import ConfigurationError
from .config import DeadLetterSettings

DATABASE_URL_ENV: Final = "QUICKBOT_SEGMENT_DATABASE_URL"
SCHEMES: Final = ("postgresql", "postgres")
HIDDEN: Final = "***"
# Parameters of a libpq URL whose values are secrets as much as the password is.
_SECRET_PARAMETERS: Final = frozenset({"password", "sslpassword", "passfile", "sslkey"})


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed `postgresql://` URL: the text for the driver, and a printable form without secrets."""

    conninfo: str = field(repr=False)
    display: str
    secrets: tuple[str, ...] = field(repr=False, default=())

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.display!r})"

    def __str__(self) -> str:
        return self.display

    def scrub(self, text: str) -> str:
        """`text` without the password in any form this URL holds (raw, percent-encoded, the whole URL)."""
        text = text.replace(self.conninfo, self.display)
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, HIDDEN)
        return text


def is_database_url(text: str) -> bool:
    return text.split(":", 1)[0].lower() in SCHEMES and "://" in text


def parse_database_url(text: str, *, source: str = DATABASE_URL_ENV) -> DatabaseUrl:
    """Check the URL's shape (scheme, host, database) and build its safe display form.

    Errors name `source` (the variable or option) and never quote the URL itself, which may
    hold a password even when malformed.
    """
    secrets = _secrets_in(text)
    try:
        parts = urllib.parse.urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise ConfigurationError(
            f"{source} is not a valid URL (the port or the brackets around the host are malformed); "
            "expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE.",
            field=source,
        ) from None
    if parts.scheme.lower() not in SCHEMES:
        raise ConfigurationError(
            f"{source} must start with postgresql:// (got a URL with scheme {parts.scheme or 'none'!r}); "
            "leave it unset to keep the dead-letter store in a local SQLite file.",
            field=source,
        )
    database = urllib.parse.unquote(parts.path.lstrip("/"))
    if not database:
        raise ConfigurationError(
            f"{source} names no database: add it after the host, as in postgresql://USER@HOST:5432/DATABASE.",
            field=source,
        )
    host = parts.hostname or ""
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if not host and not any(name == "host" for name, _ in query):
        raise ConfigurationError(
            f"{source} names no host: use postgresql://USER@HOST:PORT/DATABASE (or ?host=/path/to/socket/dir).",
            field=source,
        )
    user = urllib.parse.unquote(parts.username or "")
    shown_query = "&".join(
        f"{name}={HIDDEN if name in _SECRET_PARAMETERS else value}" for name, value in query if name != "password"
    )
    netloc = (f"{user}{':' + HIDDEN if parts.password is not None else ''}@" if user else "") + (
        f"[{host}]" if ":" in host else host
    )
    if port is not None:
        netloc += f":{port}"
    display = urllib.parse.urlunsplit((parts.scheme, netloc, "/" + database, shown_query, ""))
    if any(name == "password" for name, _ in query):
        display += ("&" if shown_query else "?") + f"password={HIDDEN}"
    url = DatabaseUrl(conninfo=text.strip(), display=display, secrets=tuple(secrets))
    _PSYCOPG_FILTER.remember(url)
    return url


def database_url_from_env(environ: Mapping[str, str] | None = None) -> DatabaseUrl | None:
    text = DeadLetterSettings.from_env(environ).database_url.get_secret_value()
    return parse_database_url(text) if text else None


def _secrets_in(text: str) -> set[str]:
    """Every spelling of the password and secret parameters a message could quote."""
    found: set[str] = set()
    match = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://([^@/?#]*)@", text.strip())
    if match and ":" in match.group(1):
        found.add(match.group(1).split(":", 1)[1])
    for name, value in re.findall(r"[?&]([A-Za-z_]+)=([^&#]*)", text):
        if name.lower() in _SECRET_PARAMETERS:
            found.add(value)
    spellings: set[str] = set()
    for secret in found:
        if secret:
            decoded = urllib.parse.unquote(secret)
            spellings.update({secret, decoded, urllib.parse.quote(decoded, safe=""), repr(decoded)[1:-1]})
    return {spelling for spelling in spellings if spelling}


class _ScrubbingFilter(logging.Filter):
    """On psycopg's loggers: a record that quotes a database password is rewritten without it."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._urls: tuple[DatabaseUrl, ...] = ()

    def remember(self, url: DatabaseUrl) -> None:
        with self._lock:
            if url not in self._urls:
                self._urls = (*self._urls, url)

    def scrub(self, text: str) -> str:
        for url in self._urls:
            text = url.scrub(text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return True
        cleaned = self.scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_PSYCOPG_FILTER = _ScrubbingFilter()
logging.getLogger("psycopg").addFilter(_PSYCOPG_FILTER)
logging.getLogger("quickbot_segment_plugin.deadletters").addFilter(_PSYCOPG_FILTER)


def scrub_database_secrets(text: str) -> str:
    """`text` without any database password this process has parsed (for CLI output and errors)."""
    return _PSYCOPG_FILTER.scrub(text)
