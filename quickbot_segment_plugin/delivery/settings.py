"""How the delivery pool is tuned, from operator environment variables (`QUICKBOT_SEGMENT_*`).

The library's own defaults suit a batch job that sends one workspace's events and exits; a
chat server instead holds many workspaces for days, must keep memory and threads bounded,
and has a dead-letter store that keeps what cannot be sent. The defaults below follow from
that; each field's comment says why, and its description is the operator reference's line.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ..core import Flag, Settings

# Segment accepts at most 2,500 events and 500 KB per batch; the library also cuts by bytes.
SEGMENT_MAX_BATCH_EVENTS = 2500


class DeliverySettings(Settings):
    title: ClassVar[str] = "Delivery"

    # A full queue dead-letters at once (the conversation never waits), so the queue must
    # absorb a burst while the senders catch up: 25,000 holds a 20,000-event burst with room
    # to spare. Memory is bounded by max_queue_bytes, not by this count.
    max_queue_size: int = Field(
        25_000, ge=1, le=1_000_000, description='Events buffered per workspace before "queue_full".'
    )
    # The real memory bound: 10 MB of JSON (~25,000 chat events of ~400 bytes) per client.
    # Python objects take a few times their JSON size, so budget ~4x this per busy workspace.
    max_queue_bytes: int = Field(
        10_000_000, ge=1, le=10_000_000_000, description='JSON bytes buffered per workspace before "queue_full".'
    )
    # Events/s per workspace is roughly batch size x requests in flight / round trip, and a
    # batch is also cut below ~475 KB. 1,000 chat events (~400 KB) is 10 requests per 10,000
    # events; the largest batches (2,500) were slower in benchmarks/bench_throughput.py: the
    # last big batch of a burst is serialized and sent alone, where 1,000-event batches keep
    # several senders busy. Light traffic is sent every flush_interval whatever the size.
    batch_size: int = Field(
        1000,
        ge=1,
        le=SEGMENT_MAX_BATCH_EVENTS,
        description="Events per request at most (a batch also stops below about 475 KB).",
    )
    # Extra senders start only while a client's queue holds at least one full batch, and stop
    # once it does not: an idle or light workspace keeps one thread and one request in flight
    # (strict order). 4 in flight at a 50 ms round trip carry well over 10,000 events/s.
    max_in_flight: int = Field(4, ge=1, le=64, description="Requests in flight per workspace while its queue is deep.")
    # The cap on extra sender threads across all clients of the pool, so threads stay
    # bounded at max_clients + max_senders (+ one closer) however many workspaces burst at
    # once; a client that finds no free slot keeps sending with its own thread.
    max_senders: int = Field(
        16, ge=0, le=1024, description="Extra sender threads across all workspaces (beyond one per workspace)."
    )
    # The library gzips at level 9: 6.4 us of CPU per event. Level 1 costs 1.0 us for bodies
    # 22% larger (still 10x smaller than the JSON; bench_delivery.py). 0 keeps gzip on, stores only.
    gzip_level: int = Field(1, ge=0, le=9, description="gzip level of request bodies (the library's own is 9).")
    # Under light chat traffic batches fill slowly; half a second keeps events near real time
    # for live destinations at the cost of two wake-ups a second per idle client.
    flush_interval: float = Field(0.5, ge=0.01, le=60, description="Seconds a partial batch waits before it is sent.")
    # A stuck request blocks one of its workspace's delivery slots; Segment answers in well
    # under a second, so 10 s only cuts off requests that were not going to succeed.
    timeout: float = Field(10.0, ge=0.1, le=300, description="HTTP timeout of one request, in seconds.")
    # 8 retries back off 0 + 0.5 + 1 + ... + 32 s: about a minute, which rides out a blip;
    # longer outages go to the dead-letter store and are replayed rather than held in memory.
    max_retries: int = Field(8, ge=0, le=100, description="Retries of a failing batch (408, 429, 5xx, network errors).")
    # The library allows one batch 12 h of backoff, during which its workspace's queue does
    # not move; 2 minutes bounds that so later events are not stuck behind one bad batch.
    max_backoff_seconds: float = Field(
        120.0, ge=0, le=86_400, description="Total seconds one batch may spend retrying before it is dead-lettered."
    )
    # Retry-After is capped at 300 s by the library; the budget must be several times that
    # (the library's advice), and 15 minutes still dead-letters a workspace that stays throttled.
    max_rate_limit_seconds: float = Field(
        900.0, ge=0, le=86_400, description="Total seconds a workspace may wait out 429 Retry-After answers."
    )
    # Chat events are repetitive JSON: gzip cuts bodies ~5-10x for a few microseconds of CPU.
    gzip: Flag = Field(True, description="gzip request bodies.")
    # Each client is one thread and one queue; 100 covers the workspaces active at one time
    # on a typical server, and the rest wait (briefly) for an idle one to be closed.
    max_clients: int = Field(
        100, ge=1, le=10_000, description="Workspace clients (each one delivery thread) alive at once."
    )
    # A workspace quiet for 5 minutes is likely between conversations; closing its client
    # frees the thread, and re-creating one later costs well under a millisecond.
    client_idle_seconds: float = Field(
        300.0,
        ge=0.01,
        le=86_400,
        description="An unused workspace client is flushed and closed after this many seconds.",
    )
    # An evicted client still counts towards max_clients until it has flushed; longer than
    # one HTTP timeout so an in-flight request can finish, short enough not to stall others.
    close_timeout: float = Field(
        15.0, ge=0.1, le=600, description="Seconds an evicted workspace client may take to flush."
    )
    # Interpreter exit (SIGTERM -> exit) must fit inside the process manager's grace period
    # (docker stop gives 10 s, systemd 90 s); 5 s leaves room for the host's own cleanup.
    exit_timeout: float = Field(
        5.0,
        ge=0,
        le=600,
        description="Seconds interpreter exit may spend flushing (when the host never called shutdown).",
    )

    @property
    def waiting_room_size(self) -> int:
        """Events held for workspaces whose client cannot start yet because max_clients are busy.

        One client's queue worth: the waiting room is a short bridge while an evicted client
        finishes, not a second buffer, so it needs no variable of its own.
        """
        return self.max_queue_size
