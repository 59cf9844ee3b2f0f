"""The one seam between the plugin and segment-analytics-python's internals.

Everything delivery needs from the library beyond its public calls is here, named, so a new
release breaks one module and one contract test (tests/test_segment_library_seam.py names each
touchpoint and what to update), not six. The dependency is pinned to the tested minor
(`>=2.4,<2.5`); widen the pin only once that test passes on the new release.

The touchpoints, each a function below:

- `new_client`: a `Client` built with `send=False` (no consumer started, no atexit hook used:
  `atexit.unregister(client.join)` is called in case a version registers regardless).
- `use_queue`: the client's and its consumer's `queue` swapped for the pool's byte-bounded one.
- `new_sender`: an extra library `Consumer` on the same queue, with the first one's settings.
- `hook_consumer`: the consumer's `next`, `upload` and `_requeue` replaced by the pool's.
- `rate_limit_of` / `set_rate_limit`: the consumer's Retry-After state
  (`rate_limit_start_time`, `rate_limited_until`), shared between a client's senders.
- `is_not_retried`: which HTTP statuses the consumer gives up on at once (mirrors
  `Consumer.request`'s rule).
- `is_queue_full_error`, `refused_field`, `REFUSAL_ERRORS`, `OVERSIZE_ERRORS`: how the library
  says "queue full", "bad id" (`AssertionError` from `require`) and "over 32 KB" (`RuntimeError`).
- `BATCH_SIZE_LIMIT`, `MESSAGE_SIZE_LIMIT`: the consumer's byte limits per batch and per message.
- `prepare_library_session` / `reset_library_session_after_fork`: the module-level
  `requests.Session` (`segment.analytics.request._session`).
- `set_gzip_level`: the `GzipFile` name `request.py` compresses with.
- `library_validator`: a `send=False` client used for the library's own validation.
- `wrap_post` / `post_batch`: the `post` consumers send with, which they call through the
  `consumer` module's global name; shutdown's drain sends its last batches with the same call.

Why each is needed:

- `requests` reads the proxy settings again for every request (`merge_environment_settings`
  walks the whole environment twice through `getproxies()`): 0.25 ms of the 1.3 ms of CPU a
  one-event request costs this process (benchmarks/bench_shutdown.py's 3,000 workspaces).
  Where `getproxies()` reads only the environment (Linux), the session keeps the result per
  endpoint host and re-reads it whenever one of the variables it depends on changes
  (`*_proxy`, `no_proxy` and the CA bundle variables in their usual spellings), so proxies
  and CA bundles set by the operator apply as before; elsewhere (macOS and Windows read
  system settings) nothing is cached.
- All clients post through one `requests.Session` whose connection pool keeps 10 connections
  per host. With up to `max_clients` consumers sending to the same host at once, urllib3 would
  open and discard connections and log a warning for each; the session gets an adapter sized
  for the pool instead.
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

import atexit
import functools
import gzip
import os
import re
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, Final, Protocol

import requests
import requests.utils
from requests.adapters import HTTPAdapter
from segment.analytics import Client
from segment.analytics import consumer as library_consumer
from segment.analytics import request as library_request
from segment.analytics.consumer import BATCH_SIZE_LIMIT as _BATCH_SIZE_LIMIT
from segment.analytics.consumer import MAX_MSG_SIZE as _MAX_MSG_SIZE
from segment.analytics.consumer import Consumer

Batch = list[dict[str, Any]]
RateLimit = tuple[float, float | None]

BATCH_SIZE_LIMIT: Final[int] = _BATCH_SIZE_LIMIT
MESSAGE_SIZE_LIMIT: Final[int] = _MAX_MSG_SIZE  # a bigger message is refused before it is queued
# `require()` raises AssertionError for a missing or mistyped id; `_enqueue` raises
# RuntimeError for a message over 32 KB (its text quotes the whole message: never show it).
REFUSAL_ERRORS: Final = (AssertionError,)
OVERSIZE_ERRORS: Final = (RuntimeError,)
_REQUIRE_MESSAGE: Final = re.compile(r"^(?P<name>[a-z_ ]+?) must have ")

_lock = threading.Lock()
_pool_size = 0
_validator: Any = None
_ORIGINAL_GZIP_FILE = library_request.GzipFile

DEFAULT_CONNECTIONS_PER_HOST = 10
# What `merge_environment_settings` reads from the environment for an http(s) URL.
ENVIRONMENT_SETTINGS: Final = (
    *("http_proxy", "https_proxy", "all_proxy", "no_proxy"),
    *("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"),
    *("REQUEST_METHOD", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"),
)
MAX_REMEMBERED_HOSTS: Final = 256


def prepare_library_session(max_clients: int) -> None:
    """Let every consumer keep its own keep-alive connection to the same host."""
    global _pool_size
    wanted = max(DEFAULT_CONNECTIONS_PER_HOST, max_clients)
    with _lock:
        if wanted <= _pool_size:
            return
        _mount(library_request._session, wanted)
        remember_environment_settings(library_request._session)
        _pool_size = wanted


def reset_library_session_after_fork() -> None:
    """In a forked child: a session of its own, so no socket is shared with the parent."""
    global _lock
    _lock = threading.Lock()  # the parent may have held it while forking
    session = requests.Session()
    if _pool_size:
        _mount(session, _pool_size)
        remember_environment_settings(session)
    library_request._session = session


def remember_environment_settings(session: requests.Session) -> None:
    """Read the proxy and CA bundle variables once per host and variables' values, not per request.

    Only where `requests` takes proxies from the environment alone; idempotent.
    """
    if not (
        requests.utils.getproxies is urllib.request.getproxies_environment  # type: ignore[attr-defined]
        and requests.utils.proxy_bypass is urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    ):
        return
    if getattr(session, "_quickbot_remembers_environment", False):
        return
    original = session.merge_environment_settings
    remembered: dict[tuple[Any, ...], dict[str, Any]] = {}
    remembered_lock = threading.Lock()

    def merge_environment_settings(url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        if proxies or stream is not None or verify is not None or cert is not None:
            return original(url, proxies, stream, verify, cert)  # a call the library does not make
        parts = urllib.parse.urlsplit(url)
        key = (
            parts.scheme,
            parts.netloc,
            tuple(os.environ.get(name) for name in ENVIRONMENT_SETTINGS),
            session.trust_env,
            tuple(sorted(session.proxies.items())),
            session.stream,
            session.verify,
            session.cert,
        )
        with remembered_lock:
            found = remembered.get(key)
        if found is None:
            found = original(url, {}, None, None, None)
            with remembered_lock:
                if len(remembered) >= MAX_REMEMBERED_HOSTS:
                    remembered.clear()
                remembered[key] = found
        return {**found, "proxies": dict(found["proxies"])}

    session.merge_environment_settings = merge_environment_settings  # type: ignore[method-assign]
    session._quickbot_remembers_environment = True  # type: ignore[attr-defined]


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


class LibraryConsumer(Protocol):
    """What delivery reads and replaces on a `segment.analytics.consumer.Consumer` (a thread)."""

    name: str
    queue: Any
    upload_size: int
    upload_interval: float
    running: bool
    rate_limit_start_time: float | None
    rate_limited_until: float | None

    def start(self) -> None: ...
    def is_alive(self) -> bool: ...
    def pause(self) -> None: ...
    def upload(self) -> bool: ...


class LibraryClient(Protocol):
    """What delivery uses of a `segment.analytics.Client`."""

    write_key: str
    queue: Any
    send: bool
    consumers: list[Any]


def new_client(
    write_key: str,
    endpoint: str,
    on_error: Callable[[Exception, Batch], None],
    *,
    max_queue_size: int,
    batch_size: int,
    flush_interval: float,
    gzip: bool,
    timeout: float,
    max_retries: int,
    max_backoff_seconds: float,
    max_rate_limit_seconds: float,
) -> tuple[LibraryClient, LibraryConsumer]:
    """A client whose one consumer is built but not started, with no atexit hook kept."""
    client: Any = Client(
        write_key=write_key,
        host=endpoint,
        on_error=on_error,
        send=False,  # switched on by the caller once its hooks are in place
        thread=1,  # the library joins only its last consumer; extra senders are ours
        max_queue_size=max_queue_size,
        upload_size=batch_size,
        upload_interval=flush_interval,
        gzip=gzip,
        timeout=timeout,
        max_retries=max_retries,
        max_total_backoff_duration=max_backoff_seconds,
        max_rate_limit_duration=max_rate_limit_seconds,
    )
    atexit.unregister(client.join)
    consumer: LibraryConsumer = client.consumers[0]
    return client, consumer


def use_queue(client: LibraryClient, consumer: LibraryConsumer, work_queue: Any) -> None:
    """The client enqueues into, and its consumer reads from, `work_queue` (while both are idle)."""
    client.queue = work_queue
    consumer.queue = work_queue


def new_sender(main: LibraryConsumer, work_queue: Any, on_error: Callable[[Exception, Batch], None]) -> LibraryConsumer:
    """Another library consumer on `work_queue`, with `main`'s settings; not started."""
    source: Any = main
    sender: LibraryConsumer = Consumer(
        work_queue,
        source.write_key,
        upload_size=source.upload_size,
        host=source.host,
        on_error=on_error,
        upload_interval=source.upload_interval,
        gzip=source.gzip,
        retries=source.retries,
        timeout=source.timeout,
        max_total_backoff_duration=source.max_total_backoff_duration,
        max_rate_limit_duration=source.max_rate_limit_duration,
    )
    return sender


def hook_consumer(
    consumer: LibraryConsumer,
    next_batch: Callable[[], Batch],
    make_upload: Callable[[Callable[[], bool]], Callable[[], bool]],
    make_requeue: Callable[[Callable[[Batch], None]], Callable[[Batch], None]],
) -> None:
    """Replace the consumer's `next`, `upload` and `_requeue`; the wrappers get the originals."""
    target: Any = consumer
    original_upload = target.upload
    original_requeue = target._requeue
    target.next = next_batch
    target.upload = make_upload(original_upload)
    target._requeue = make_requeue(original_requeue)


def set_run(consumer: LibraryConsumer, run: Callable[[], None]) -> None:
    """Give an extra sender its own loop instead of the library's run-forever one."""
    target: Any = consumer
    target.run = run


def rate_limit_of(consumer: LibraryConsumer) -> RateLimit | None:
    """The consumer's Retry-After episode: (start, wait until), or None outside one."""
    if consumer.rate_limit_start_time is None:
        return None
    return consumer.rate_limit_start_time, consumer.rate_limited_until


def set_rate_limit(consumer: LibraryConsumer, state: RateLimit) -> None:
    """Make `consumer` wait out an episode another consumer of the same client started."""
    consumer.rate_limit_start_time, consumer.rate_limited_until = state


def is_not_retried(status: int) -> bool:
    """The statuses the consumer gives up on at once (mirrors `Consumer.request`'s rule)."""
    if 300 <= status < 400:
        return True
    if 400 <= status < 500:
        return status not in (408, 410, 429, 460)
    return status in (501, 505, 511)


def is_queue_full_error(error: Exception) -> bool:
    """The library reports a full queue to `on_error` only through the error's text."""
    return "queue full" in str(error).lower()


def refused_field(text: str) -> str:
    """The library's name of the field a `require()` AssertionError is about ("" when unknown)."""
    match = _REQUIRE_MESSAGE.match(text)
    return match.group("name") if match else ""


Post = Callable[..., Any]


def wrap_post(make: Callable[[Post], Post]) -> None:
    """Route every consumer's request through `make(the library's post)` (the module global it calls)."""
    library_consumer.post = make(library_consumer.post)


def post_batch(write_key: str, endpoint: str, batch: Batch, *, gzip: bool, timeout: float) -> Any:
    """One request exactly as a consumer sends it (through `wrap_post`'s wrapper, if any)."""
    return library_consumer.post(write_key, endpoint, gzip=gzip, timeout=timeout, batch=batch)
