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
MIN_SECRET_CHARS = 8  # shorter strings are not remembered as secrets: they would match ordinary text
FEW_SECRETS = 64  # up to this many, `scrub` tests each secret; past it, it looks keys up by prefix
_NON_SPACE_RUN = re.compile(rf"\S{{{MIN_SECRET_CHARS},}}")
_SPACE = re.compile(r"\s")


def fingerprint(secret: str) -> str:
    """A short, stable, non-reversible name for a secret, safe to log and store.

    Write keys are long random tokens, so twelve hex digits of their SHA-256 reveal nothing
    usable while still telling an operator which of their keys an event belongs to.
    """
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


class _KnownSecrets:
    """Secrets the process has opened, so text that quotes one verbatim can be scrubbed.

    Every result log line passes through `scrub`, and a host serving many workspaces knows
    many keys: a `secret in text` test per key cost 69 us per line at 1,000 keys (760 at 10,000). Past
    `FEW_SECRETS`, keys are found by their first `MIN_SECRET_CHARS` characters instead: only
    windows of the text's runs of non-space characters (a key has no whitespace) are looked
    up, so the cost follows the length of the text, not the number of keys (~6 us for a
    two-sentence line at any count; see tests/test_redaction.py for the cases).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[str, str] = {}  # secret -> "[sha256:...]"
        self._by_prefix: dict[str, tuple[str, ...]] = {}  # first MIN_SECRET_CHARS characters -> secrets
        self._spaced: tuple[str, ...] = ()  # secrets with whitespace (no Segment key has any): not in a run

    def add(self, secret: str) -> None:
        if len(secret) < MIN_SECRET_CHARS:
            return
        with self._lock:
            if secret in self._names:
                return
            # Each value is replaced whole, so `scrub` reads without the lock.
            prefix = secret[:MIN_SECRET_CHARS]
            self._by_prefix[prefix] = (*self._by_prefix.get(prefix, ()), secret)
            if _SPACE.search(secret):
                self._spaced = (*self._spaced, secret)
            self._names[secret] = f"[{fingerprint(secret)}]"

    def discard(self, secret: str) -> None:
        """Forget `secret` (tests use it to stand for a key that another process sealed)."""
        with self._lock:
            if self._names.pop(secret, None) is None:
                return
            prefix = secret[:MIN_SECRET_CHARS]
            self._by_prefix[prefix] = tuple(known for known in self._by_prefix[prefix] if known != secret)
            self._spaced = tuple(known for known in self._spaced if known != secret)

    def scrub(self, text: str) -> str:
        names = self._names
        if not names:
            return text
        if len(names) <= FEW_SECRETS:
            with self._lock:
                found = {secret for secret in names if secret in text}
        else:
            found = self._found_by_prefix(text)
        for secret in sorted(found, key=len, reverse=True):  # a key inside a longer one: the longer first
            text = text.replace(secret, names[secret])
        return text

    def _found_by_prefix(self, text: str) -> set[str]:
        by_prefix = self._by_prefix
        found: set[str] = set()
        for run in _NON_SPACE_RUN.finditer(text):
            start, end = run.span()
            for index in range(start, end - MIN_SECRET_CHARS + 1):
                for secret in by_prefix.get(text[index : index + MIN_SECRET_CHARS], ()):
                    if text.startswith(secret, index):
                        found.add(secret)
        found.update(secret for secret in self._spaced if secret in text)
        return found


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
