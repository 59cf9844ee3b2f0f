"""How the delivery pool is tuned, from operator environment variables.

The library's own defaults suit a batch job that sends one workspace's events and exits; a
chat server instead holds many workspaces for days, must keep memory and threads bounded,
and has a dead-letter store that keeps what cannot be sent. The defaults below follow from
that; each field's comment says why.

| variable | default | meaning |
|---|---|---|
| QUICKBOT_SEGMENT_MAX_QUEUE_SIZE | 25000 | events buffered per client before "queue_full" |
| QUICKBOT_SEGMENT_MAX_QUEUE_BYTES | 10000000 | JSON bytes buffered per client before "queue_full" |
| QUICKBOT_SEGMENT_BATCH_SIZE | 1000 | events per request at most (up to 2500; a batch also stops below ~475 KB) |
| QUICKBOT_SEGMENT_MAX_IN_FLIGHT | 4 | requests in flight per client while its queue is deep |
| QUICKBOT_SEGMENT_MAX_SENDERS | 16 | extra sender threads across all clients (beyond one per client) |
| QUICKBOT_SEGMENT_GZIP_LEVEL | 1 | gzip level of request bodies (the library's own is 9) |
| QUICKBOT_SEGMENT_FLUSH_INTERVAL | 0.5 | seconds a partial batch waits (library `upload_interval`) |
| QUICKBOT_SEGMENT_TIMEOUT | 10 | HTTP timeout of one request, seconds |
| QUICKBOT_SEGMENT_MAX_RETRIES | 8 | retries of a failing batch (408/429/5xx/network) |
| QUICKBOT_SEGMENT_MAX_BACKOFF_SECONDS | 120 | total time one batch may spend retrying |
| QUICKBOT_SEGMENT_MAX_RATE_LIMIT_SECONDS | 900 | total time a client may wait out 429 Retry-After |
| QUICKBOT_SEGMENT_GZIP | true | gzip request bodies |
| QUICKBOT_SEGMENT_MAX_CLIENTS | 100 | clients (= delivery threads) alive at once |
| QUICKBOT_SEGMENT_CLIENT_IDLE_SECONDS | 300 | an unused client is flushed and closed after this |
| QUICKBOT_SEGMENT_CLOSE_TIMEOUT | 15 | how long an evicted client may take to flush |
| QUICKBOT_SEGMENT_EXIT_TIMEOUT | 5 | how long interpreter exit may spend flushing |
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core import ConfigurationError, env_bool, env_float, env_int

# Segment accepts at most 2,500 events and 500 KB per batch; the library also cuts by bytes.
SEGMENT_MAX_BATCH_EVENTS = 2500


@dataclass(frozen=True)
class DeliverySettings:
    # A full queue dead-letters at once (the conversation never waits), so the queue must
    # absorb a burst while the senders catch up: 25,000 holds a 20,000-event burst with room
    # to spare. Memory is bounded by max_queue_bytes, not by this count.
    max_queue_size: int = 25_000
    # The real memory bound: 10 MB of JSON (~25,000 chat events of ~400 bytes) per client.
    # Python objects take a few times their JSON size, so budget ~4x this per busy workspace.
    max_queue_bytes: int = 10_000_000
    # Events/s per workspace is roughly batch size x requests in flight / round trip, and a
    # batch is also cut below ~475 KB. 1,000 chat events (~400 KB) is 10 requests per 10,000
    # events; the largest batches (2,500) were slower in benchmarks/bench_throughput.py: the
    # last big batch of a burst is serialized and sent alone, where 1,000-event batches keep
    # several senders busy. Light traffic is sent every flush_interval whatever the size.
    batch_size: int = 1000
    # Extra senders start only while a client's queue holds at least one full batch, and stop
    # once it does not: an idle or light workspace keeps one thread and one request in flight
    # (strict order). 4 in flight at a 50 ms round trip carry well over 10,000 events/s.
    max_in_flight: int = 4
    # The cap on extra sender threads across all clients of the pool, so threads stay
    # bounded at max_clients + max_senders (+ one closer) however many workspaces burst at
    # once; a client that finds no free slot keeps sending with its own thread.
    max_senders: int = 16
    # The library gzips at level 9: 6.4 us of CPU per event. Level 1 costs 1.0 us for bodies
    # 22% larger (still 10x smaller than the JSON; bench_delivery.py). 0 keeps gzip on, stores only.
    gzip_level: int = 1
    # Under light chat traffic batches fill slowly; half a second keeps events near real time
    # for live destinations at the cost of two wake-ups a second per idle client.
    flush_interval: float = 0.5
    # A stuck request blocks one of its workspace's delivery slots; Segment answers in well
    # under a second, so 10 s only cuts off requests that were not going to succeed.
    timeout: float = 10.0
    # 8 retries back off 0 + 0.5 + 1 + ... + 32 s: about a minute, which rides out a blip;
    # longer outages go to the dead-letter store and are replayed rather than held in memory.
    max_retries: int = 8
    # The library allows one batch 12 h of backoff, during which its workspace's queue does
    # not move; 2 minutes bounds that so later events are not stuck behind one bad batch.
    max_backoff_seconds: float = 120.0
    # Retry-After is capped at 300 s by the library; the budget must be several times that
    # (the library's advice), and 15 minutes still dead-letters a workspace that stays throttled.
    max_rate_limit_seconds: float = 900.0
    # Chat events are repetitive JSON: gzip cuts bodies ~5-10x for a few microseconds of CPU.
    gzip: bool = True
    # Each client is one thread and one queue; 100 covers the workspaces active at one time
    # on a typical server, and the rest wait (briefly) for an idle one to be closed.
    max_clients: int = 100
    # A workspace quiet for 5 minutes is likely between conversations; closing its client
    # frees the thread, and re-creating one later costs well under a millisecond.
    client_idle_seconds: float = 300.0
    # An evicted client still counts towards max_clients until it has flushed; longer than
    # one HTTP timeout so an in-flight request can finish, short enough not to stall others.
    close_timeout: float = 15.0
    # Interpreter exit (SIGTERM -> exit) must fit inside the process manager's grace period
    # (docker stop gives 10 s, systemd 90 s); 5 s leaves room for the host's own cleanup.
    exit_timeout: float = 5.0

    def __post_init__(self) -> None:
        _at_least("max_queue_size", self.max_queue_size, 1)
        _at_least("max_queue_bytes", self.max_queue_bytes, 1)
        _at_least("max_in_flight", self.max_in_flight, 1)
        _at_least("max_senders", self.max_senders, 0)
        if not 0 <= self.gzip_level <= 9:
            raise ConfigurationError(f"gzip_level must be 0 to 9, got {self.gzip_level}.", field="gzip_level")
        _at_least("batch_size", self.batch_size, 1)
        if self.batch_size > SEGMENT_MAX_BATCH_EVENTS:
            raise ConfigurationError(
                f"batch_size must be at most {SEGMENT_MAX_BATCH_EVENTS} (Segment's limit), got {self.batch_size}.",
                field="batch_size",
            )
        _above_zero("flush_interval", self.flush_interval)
        _above_zero("timeout", self.timeout)
        _at_least("max_retries", self.max_retries, 0)
        _at_least("max_backoff_seconds", self.max_backoff_seconds, 0)
        _at_least("max_rate_limit_seconds", self.max_rate_limit_seconds, 0)
        _at_least("max_clients", self.max_clients, 1)
        _above_zero("client_idle_seconds", self.client_idle_seconds)
        _above_zero("close_timeout", self.close_timeout)
        _at_least("exit_timeout", self.exit_timeout, 0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeliverySettings:
        """Read every QUICKBOT_SEGMENT_* tuning variable; unset ones keep the defaults above."""
        d = cls()
        return cls(
            max_queue_size=env_int(
                "QUICKBOT_SEGMENT_MAX_QUEUE_SIZE", d.max_queue_size, minimum=1, maximum=1_000_000, environ=environ
            ),
            max_queue_bytes=env_int(
                "QUICKBOT_SEGMENT_MAX_QUEUE_BYTES",
                d.max_queue_bytes,
                minimum=1,
                maximum=10_000_000_000,
                environ=environ,
            ),
            max_in_flight=env_int(
                "QUICKBOT_SEGMENT_MAX_IN_FLIGHT", d.max_in_flight, minimum=1, maximum=64, environ=environ
            ),
            max_senders=env_int(
                "QUICKBOT_SEGMENT_MAX_SENDERS", d.max_senders, minimum=0, maximum=1024, environ=environ
            ),
            gzip_level=env_int("QUICKBOT_SEGMENT_GZIP_LEVEL", d.gzip_level, minimum=0, maximum=9, environ=environ),
            batch_size=env_int(
                "QUICKBOT_SEGMENT_BATCH_SIZE",
                d.batch_size,
                minimum=1,
                maximum=SEGMENT_MAX_BATCH_EVENTS,
                environ=environ,
            ),
            flush_interval=env_float(
                "QUICKBOT_SEGMENT_FLUSH_INTERVAL", d.flush_interval, minimum=0.01, maximum=60, environ=environ
            ),
            timeout=env_float("QUICKBOT_SEGMENT_TIMEOUT", d.timeout, minimum=0.1, maximum=300, environ=environ),
            max_retries=env_int("QUICKBOT_SEGMENT_MAX_RETRIES", d.max_retries, minimum=0, maximum=100, environ=environ),
            max_backoff_seconds=env_float(
                "QUICKBOT_SEGMENT_MAX_BACKOFF_SECONDS",
                d.max_backoff_seconds,
                minimum=0,
                maximum=86_400,
                environ=environ,
            ),
            max_rate_limit_seconds=env_float(
                "QUICKBOT_SEGMENT_MAX_RATE_LIMIT_SECONDS",
                d.max_rate_limit_seconds,
                minimum=0,
                maximum=86_400,
                environ=environ,
            ),
            gzip=env_bool("QUICKBOT_SEGMENT_GZIP", d.gzip, environ=environ),
            max_clients=env_int(
                "QUICKBOT_SEGMENT_MAX_CLIENTS", d.max_clients, minimum=1, maximum=10_000, environ=environ
            ),
            client_idle_seconds=env_float(
                "QUICKBOT_SEGMENT_CLIENT_IDLE_SECONDS",
                d.client_idle_seconds,
                minimum=1,
                maximum=86_400,
                environ=environ,
            ),
            close_timeout=env_float(
                "QUICKBOT_SEGMENT_CLOSE_TIMEOUT", d.close_timeout, minimum=0.1, maximum=600, environ=environ
            ),
            exit_timeout=env_float(
                "QUICKBOT_SEGMENT_EXIT_TIMEOUT", d.exit_timeout, minimum=0, maximum=600, environ=environ
            ),
        )

    def with_overrides(self, **changes: Any) -> DeliverySettings:
        """A copy with some fields changed (and checked again), e.g. tiny queues in a test."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown delivery settings: {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    @property
    def waiting_room_size(self) -> int:
        """Events held for workspaces whose client cannot start yet because max_clients are busy.

        One client's queue worth: the waiting room is a short bridge while an evicted client
        finishes, not a second buffer, so it needs no variable of its own.
        """
        return self.max_queue_size


def _at_least(name: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, got {value}.", field=name)


def _above_zero(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigurationError(f"{name} must be above 0, got {value}.", field=name)
