"""Process-wide adjustments to segment-analytics-python that the pool needs.

Kept apart from the pool because they touch the library's module state, which every client
in the process shares:

- All clients post through one `requests.Session` (`segment.analytics.request._session`)
  whose connection pool keeps 10 connections per host. With up to `max_clients` consumers
  sending to the same host at once, urllib3 would open and discard connections and log a
  warning for each; the session gets an adapter sized for the pool instead.
- After `os.fork()` that session still holds the parent's sockets: a child reusing one would
  interleave its requests with the parent's on the same connection. The child gets a new one.
- Messages that must wait (see the pool's waiting room) are validated and put in their final
  form by a client built with `send=False`: it runs the library's own checks and returns the
  message without queueing it, starting no thread and registering no atexit hook.
- The library's `post` gzips with `GzipFile`'s default level 9: 6.4 us of CPU per event
  (bench_delivery.py), about as much as everything else the consumer does. Level 1 costs
  1.0 us for bodies 22% larger (chat events are repetitive JSON: still 10x smaller). The
  level is set by swapping the `GzipFile` name `request.py` uses for one with the chosen
  level, so the library's `post` (headers, auth, errors, Retry-After, retries) is still what
  sends every request. It applies to every library client in the process; the body is
  valid gzip at any level, so another client sharing the library only sees its CPU drop.
"""

from __future__ import annotations

import functools
import gzip
import threading
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from segment.analytics import Client
from segment.analytics import request as library_request

_lock = threading.Lock()
_pool_size = 0
_validator: Any = None
_ORIGINAL_GZIP_FILE = library_request.GzipFile

DEFAULT_CONNECTIONS_PER_HOST = 10


def prepare_library_session(max_clients: int) -> None:
    """Let every consumer keep its own keep-alive connection to the same host."""
    global _pool_size
    wanted = max(DEFAULT_CONNECTIONS_PER_HOST, max_clients)
    with _lock:
        if wanted <= _pool_size:
            return
        _mount(library_request._session, wanted)
        _pool_size = wanted


def reset_library_session_after_fork() -> None:
    """In a forked child: a session of its own, so no socket is shared with the parent."""
    global _lock
    _lock = threading.Lock()  # the parent may have held it while forking
    session = requests.Session()
    if _pool_size:
        _mount(session, _pool_size)
    library_request._session = session


def library_validator() -> Any:
    """A `send=False` client: the library's validation and final message, nothing queued."""
    global _validator
    if _validator is None:
        _validator = Client(write_key="quickbot-segment-validator", send=False)
    return _validator


def _mount(session: requests.Session, size: int) -> None:
    for prefix in ("https://", "http://"):
        session.mount(prefix, HTTPAdapter(pool_connections=DEFAULT_CONNECTIONS_PER_HOST, pool_maxsize=size))


def set_gzip_level(level: int) -> None:
    """Make the library's `post` compress at `level` (1 fastest ... 9, the library's default)."""
    if level == 9:
        library_request.GzipFile = _ORIGINAL_GZIP_FILE
    else:
        library_request.GzipFile = functools.partial(gzip.GzipFile, compresslevel=level)
