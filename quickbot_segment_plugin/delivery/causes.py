"""Why a request to Segment failed, in words an operator can act on, and the last failure per client.

The library retries a refused connection, a DNS failure or a 5xx for up to
`max_backoff_seconds`; when a deadline (shutdown, `run --timeout`) ends the wait first, the
events are reported as "shutdown_deadline", which says nothing about what went wrong. So the
library's `post` is wrapped once (`library.wrap_post`): a failure is
remembered per (endpoint, write key) until the next success, and the deadline report quotes
it ("last attempt: connection refused by 127.0.0.1:9"). The wrapper also notes which threads
are inside a request right now: only their batches are "in doubt" at a deadline (they may
arrive); a batch waiting between retries is not.
"""

from __future__ import annotations

import functools
import socket
import ssl
import threading
import urllib.parse
from collections import OrderedDict
from typing import Any, Final

import requests

from ..core import redact
from .library import Post, wrap_post

MAX_REMEMBERED: Final = 4096  # clients failing at once; the oldest is forgotten beyond this
MAX_MESSAGE_CHARS: Final = 300

_lock = threading.Lock()
_last: OrderedDict[tuple[str, str], str] = OrderedDict()
_installed = False
_open_requests: set[int] = set()  # threads inside a request now (set operations are atomic)


def install() -> None:
    """Wrap the library's `post` (idempotent); called before the first client exists."""
    global _installed
    with _lock:
        if _installed:
            return
        wrap_post(_remembering)
        _installed = True


def _remembering(original: Post) -> Post:
    """The library's post, noting who is in a request and what failed last."""

    @functools.wraps(original)
    def post(write_key: str, host: str | None = None, *args: Any, **kwargs: Any) -> Any:
        key = (str(host), write_key)
        me = threading.get_ident()
        _open_requests.add(me)
        try:
            response = original(write_key, host, *args, **kwargs)
        except Exception as error:
            _remember(key, describe_failure(error, host))
            raise
        finally:
            _open_requests.discard(me)
        if _last:
            with _lock:
                _last.pop(key, None)
        return response

    return post


def last_failure(endpoint: str, write_key: str) -> str | None:
    """The last failed attempt of this client since its last success, described; None if none."""
    with _lock:
        return _last.get((endpoint, write_key))


def in_request(thread: threading.Thread) -> bool:
    """Whether `thread` is inside a request now (its batch may arrive), not in a retry wait."""
    return thread.ident in _open_requests


def _remember(key: tuple[str, str], description: str) -> None:
    with _lock:
        _last[key] = description
        _last.move_to_end(key)
        while len(_last) > MAX_REMEMBERED:
            _last.popitem(last=False)


def describe_failure(error: BaseException, endpoint: str | None = None) -> str:
    """One phrase naming the cause: refused, DNS, TLS, timeout, or the HTTP status and Segment's message."""
    status = getattr(error, "status", None)
    if isinstance(status, int):
        message = str(getattr(error, "message", "") or "").strip()
        said = f": {redact(message)[:MAX_MESSAGE_CHARS]}" if message else ""
        return f"HTTP {status} from {_where(endpoint)}{said}"
    chain = _chain(error)
    where = _where(endpoint)
    if any(isinstance(each, ConnectionRefusedError) for each in chain) or _mentions(chain, "connection refused"):
        return f"connection refused by {where}: nothing is listening there"
    if any(isinstance(each, socket.gaierror) for each in chain) or _mentions(
        chain, "name or service not known", "failed to resolve", "nodename nor servname", "temporary failure in name"
    ):
        return f"DNS lookup failed for {where}: the host name does not resolve"
    if any(isinstance(each, (ssl.SSLError, requests.exceptions.SSLError)) for each in chain):
        return f"TLS error with {where}: {_short(error)}"
    if any(isinstance(each, (requests.exceptions.Timeout, TimeoutError, socket.timeout)) for each in chain):
        return f"timed out waiting for {where}"
    if any(isinstance(each, requests.exceptions.ConnectionError) for each in chain):
        return f"could not connect to {where}: {_short(error)}"
    return _short(error) or type(error).__name__


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    pending: list[BaseException] = [error]
    while pending and len(seen) < 20:
        current = pending.pop()
        if any(current is each for each in seen):
            continue
        seen.append(current)
        for linked in (current.__cause__, current.__context__, getattr(current, "reason", None)):
            if isinstance(linked, BaseException):
                pending.append(linked)
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
    return seen


def _mentions(chain: list[BaseException], *phrases: str) -> bool:
    text = " ".join(str(each) for each in chain).lower()
    return any(phrase in text for phrase in phrases)


def _where(endpoint: str | None) -> str:
    if not endpoint:
        return "the endpoint"
    parts = urllib.parse.urlsplit(endpoint)
    return parts.netloc or endpoint


def _short(error: BaseException) -> str:
    return redact(str(error))[:MAX_MESSAGE_CHARS]
