"""Keeping write keys out of every log line, whoever writes it.

segment-analytics-python logs each request body at DEBUG on the `segment` logger
(`making request: {... "writeKey": "..."}`), so an operator who turns on debug logging to
chase a delivery problem would otherwise write every workspace's key to the log. A filter on
that logger rewrites such records before any handler sees them; it is installed by the
delivery pool before the first client exists, and is idempotent.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading

# `"writeKey": "abc"` in a JSON body, `writeKey=abc` in a repr, and HTTP Basic credentials.
_WRITE_KEY_FIELD = re.compile(r"""(["']?writeKey["']?\s*[:=]\s*["']?)([^"'\s,}]+)""", re.IGNORECASE)
_BASIC_AUTH = re.compile(r"(Basic\s+)[A-Za-z0-9+/=]+")
REDACTED = "[redacted]"


def fingerprint(secret: str) -> str:
    """A short, stable, non-reversible name for a secret, safe to log and store.

    Write keys are long random tokens, so twelve hex digits of their SHA-256 reveal nothing
    usable while still telling an operator which of their keys an event belongs to.
    """
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


class _KnownSecrets:
    """Secrets the process has opened, so text that quotes one verbatim can be scrubbed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, str] = {}

    def add(self, secret: str) -> None:
        if len(secret) >= 8:
            with self._lock:
                self._secrets[secret] = fingerprint(secret)

    def scrub(self, text: str) -> str:
        if not self._secrets:
            return text
        with self._lock:
            known = list(self._secrets.items())
        for secret, name in known:
            if secret in text:
                text = text.replace(secret, f"[{name}]")
        return text


known_secrets = _KnownSecrets()


def redact(text: str) -> str:
    """Remove write keys from free text: JSON fields, Basic credentials, and known keys."""
    text = known_secrets.scrub(text)
    text = _WRITE_KEY_FIELD.sub(lambda m: m.group(1) + REDACTED, text)
    return _BASIC_AUTH.sub(lambda m: m.group(1) + REDACTED, text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with `redact` (never drops the record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report, not ours
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # The traceback text is formatted later from exc_info; pre-format it scrubbed.
            formatter = logging.Formatter()
            record.exc_text = redact(formatter.formatException(record.exc_info))
            record.exc_info = None
        return True


_install_lock = threading.Lock()
_FILTER = RedactingFilter()
# Logger filters do not apply to child loggers; the library logs on exactly "segment".
PROTECTED_LOGGERS = ("segment",)


def install() -> None:
    """Attach the filter to the loggers that can carry a key; safe to call many times."""
    with _install_lock:
        for name in PROTECTED_LOGGERS:
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
