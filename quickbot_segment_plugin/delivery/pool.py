"""The pool of long-lived Segment clients that delivers events in the background.

`execute` hands each message to `DeliveryPool.enqueue`, which puts it on the queue of the
client for (workspace, write key, endpoint) and returns: no network round trip, ever. One
client (one consumer thread, one queue) serves every conversation of that workspace.

What the pool promises, and how (see architecture.md, "Facts about segment-analytics-python"):

- Throughput that does not collapse with latency: a client whose queue holds at least a full
  batch starts extra senders (up to `max_in_flight` requests in flight for that workspace,
  `max_senders` extra threads for the whole pool); they stop once the queue is shallow.
- Bounded threads and memory however many workspaces: at most `max_clients` clients exist,
  counting those still closing, plus at most `max_senders` extra senders; every queue is
  bounded by events and by bytes. A workspace without a client while all are busy waits in a
  small waiting room while the least recently used client is evicted; idle clients are
  closed after `client_idle_seconds`. Evicting is O(1) on the caller's thread; the flush
  happens on one background closer thread, started when needed and gone when idle.
- Nothing accepted is lost silently: a full queue, a batch Segment rejects or that outlasts
  its retries, and whatever is still queued when a deadline passes all go to
  `on_undeliverable` (a dead-letter store), with the reason.
- Nothing accepted is lost with the process, given a `Spool`: each event is appended to it
  before `enqueue` accepts it, and leaves it once delivered or dead-lettered
  (delivery_spool.py; recovery of a dead process's spool is delivery_recovery.py).
- Shutdown and interpreter exit flush every client in parallel within a deadline (the
  library's own atexit hook sends one more batch and its `flush()` can hang forever).
- Fork safety: after `os.fork()` (gunicorn preload, celery prefork) the library's calls
  succeed and nothing is sent; the child drops the parent's clients and builds its own.
- Write keys never reach a log line: the redaction filter is installed before the first
  client exists (the library logs request bodies, key included, at DEBUG).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any, Final

from ..core import (
    CLIENT_CLOSED,
    QUEUE_FULL,
    REJECTED,
    SHUTDOWN_DEADLINE,
    SHUTTING_DOWN,
    SPOOL_FAILED,
    Counters,
    DeliveryError,
    Undeliverable,
    fingerprint,
    install_redaction,
    known_secrets,
)
from .calls import LibraryCall
from .causes import install as install_causes
from .client import ManagedClient, SenderSlots, Submitted
from .drain import REQUEST_CPU_SECONDS, WaitingRoomDrain
from .final import FinalMessage, encode, submission_for, vouched_message
from .library import prepare_library_session, reset_library_session_after_fork, set_gzip_level
from .registry import ClientKey, ClientRegistry, Message, Route
from .reports import DeliveryObserver, OnUndeliverable, Reporter, load_factor
from .settings import DeliverySettings
from .spool import Spool
from .types import ACCEPTED, EnqueueOutcome, ShutdownReport

__all__ = [
    "DeliveryError",
    "DeliveryPool",
    "DeliverySettings",
    "EnqueueOutcome",
    "ShutdownReport",
    "Undeliverable",
]

logger = logging.getLogger("quickbot_segment_plugin.delivery")

# How often the closer (or shutdown) looks at clients that are flushing: fine enough that a
# drained client stops within a few milliseconds, coarse enough to cost nothing.
POLL_SECONDS: Final = 0.005
# `enqueue` outcome when no delivery thread can be started (interpreter exiting, no threads left).
CLIENT_UNAVAILABLE: Final = "client_unavailable"
# Shutdown stops waiting this long (plus the reporting estimate) before its deadline, so the
# final reports and the return fit inside it; never more than RESERVE_SHARE of the deadline.
RESERVE_FLOOR: Final = 0.03  # a pass of the loop under load, and the return
RESERVE_SHARE: Final = 0.9
RESERVE_FACTOR: Final = 1.5  # the measured cost can rise with the machine's load
# Reports a client still closing at the deadline can make: events in an open request (in
# doubt) and events not sent.
REPORTS_PER_CLIENT: Final = 2


class DeliveryPool:
    """One Segment client per (workspace, write key, endpoint), shared, bounded, fork-safe.

    Thread-safe: `enqueue` may be called from any number of threads at once.
    """

    def __init__(
        self,
        settings: DeliverySettings,
        on_undeliverable: OnUndeliverable | None = None,
        counters: Counters | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self._spool_full_warned = False
        self._reports = Reporter(on_undeliverable, counters, spool)
        self._pid = os.getpid()
        self._closed = False
        self._last_report: ShutdownReport | None = None
        self._forks = 0
        self._abandoned = 0
        self._new_state()
        _POOLS.add(self)

    def _new_state(self) -> None:
        """Fresh registry and locks: at construction, after shutdown, in a forked child."""
        self._registry = ClientRegistry(self.settings)
        self._sender_slots = SenderSlots(self.settings.max_senders)
        self._setup_lock = threading.Lock()
        self._shutdown_lock = threading.Lock()
        self._tick_lock = threading.Lock()
        self._closer: threading.Thread | None = None
        self._atexit_registered = False
        self._shutdown_deadline: float | None = None
        self._shutdown_clients: list[ManagedClient] = []
        self._drain: WaitingRoomDrain | None = None
        self._shutdown_started = 0.0

    def __repr__(self) -> str:
        return f"<DeliveryPool closed={self._closed} live_clients={self.live_clients}>"

    # --- public API -------------------------------------------------------------------

    def enqueue(
        self,
        workspace_id: str,
        write_key: str,
        endpoint: str,
        message: Mapping[str, Any],
        *,
        token: str | None = None,
        final_form: bool = False,
    ) -> EnqueueOutcome:
        """Queue one wire-form message for background delivery; never waits on the network.

        Raises `DeliveryError` only for a message the library refuses outright (no user id,
        over 32 KB, unknown type). A full queue is not an exception: the outcome says
        `queue_full` and the message has gone to `on_undeliverable`, as has every message
        refused with `accepted=False`. With a spool, the message is written to it first;
        `token` (the sealed credentials it came with) is written beside it so that another
        process can deliver it if this one dies. `final_form=True` is the caller's guarantee
        that the message is in the library's final form (the block's compiled messages): it
        is serialised and queued without being proved so again (final.py).
        """
        if self._pid != os.getpid():
            self._after_fork()
        if not isinstance(write_key, str) or not write_key:
            raise DeliveryError("The Segment write key is empty.", field="write_key")
        call = vouched_message(message) if final_form and type(message) is dict else submission_for(message)
        key: ClientKey = (workspace_id, write_key, endpoint)
        if self.spool is not None and not self._closed:  # a closed pool refuses it below, unspooled
            call, refusal = self._spool_first(self.spool, key, call, token)
            if refusal is not None:
                return refusal
        for _ in range(3):  # a client evicted between lookup and submit: look again
            route, client = self._registry.route(key)
            if route is Route.REFUSE:
                return self._refuse(key, call.final_form(), SHUTTING_DOWN)
            if route is Route.START:
                started = self._start(key)
                if started is None:
                    return self._refuse(key, call.final_form(), CLIENT_UNAVAILABLE)
                client, backlog = started
                outcome = self._submit(client, call)
                self._feed(key, client, backlog)
                if outcome is not None:
                    return outcome
                continue
            if route is Route.USE and client is not None:
                outcome = self._submit(client, call)
                if outcome is not None:
                    return outcome
                continue
            return self._hold(key, call)
        return self._hold(key, call)

    def flush(self, timeout: float) -> bool:
        """Wait until every queue (and the waiting room) is empty, at most `timeout` seconds."""
        deadline = time.monotonic() + max(0.0, timeout)
        pause = 0.001
        while True:
            registry = self._registry
            with registry.lock:
                clients = [*registry.live.values(), *registry.closing]
                pending = registry.waiting_events + len(registry.starting)
            if pending == 0 and all(client.unfinished == 0 for client in clients):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.02)

    def shutdown(self, timeout: float) -> ShutdownReport:
        """Flush every client in parallel and stop; returns within `timeout` (+ a few ms).

        What is still queued or in flight at the deadline goes to `on_undeliverable` with
        reason "shutdown_deadline". Afterwards `enqueue` refuses ("shutting_down") until
        `restart()`. Calling it again returns at once with `already_shut_down=True`.
        """
        started = time.monotonic()
        deadline = started + max(0.0, timeout)
        if self._pid != os.getpid():
            self._after_fork()
        if not self._shutdown_lock.acquire(timeout=max(0.0, timeout)):
            return self._already_shut_down(started)
        try:
            if self._closed:
                return self._already_shut_down(started)
            self._shutdown_deadline = deadline
            self._shutdown_started = started
            self._reports.take_shutdown_losses()
            closing = self._registry.stop_accepting()
            self._shutdown_clients = list(closing)
            for client in closing:  # all at once: they flush in parallel, each on its own thread
                client.begin_close(deadline, SHUTDOWN_DEADLINE)
            # Workspaces still waiting for a client are posted directly, many at once (delivery_drain).
            drain = WaitingRoomDrain(self.settings, self._reports, deadline)
            for (workspace_id, write_key, endpoint), messages in self._registry.take_waiting():
                drain.add(workspace_id, write_key, endpoint, messages)
            self._drain = drain
            self._run_until(deadline)
            return self._finish_shutdown(started)
        finally:
            self._shutdown_lock.release()

    def restart(self) -> None:
        """Accept events again after `shutdown` (a host that stops and starts its plugins)."""
        with self._shutdown_lock:
            if self._closed:
                self._new_state()
                self._closed = False

    def add_observer(self, observer: DeliveryObserver) -> None:
        """Tell `observer` what becomes of every event from now on (delivered, or lost and why)."""
        self._reports.add_observer(observer)

    @property
    def live_clients(self) -> int:
        """Clients whose delivery thread the pool owns: active, starting, and still closing."""
        with self._registry.lock:
            return self._registry.owned()

    def stats(self) -> dict[str, Any]:
        """Counters for a health endpoint or the CLI; no write keys, no message content."""
        registry = self._registry
        with registry.lock:
            active = list(registry.live.values())
            closing = list(registry.closing)
            starting = len(registry.starting)
            waiting = registry.waiting_events
            created, lru, idle, closed = registry.created, registry.evicted_lru, registry.evicted_idle, registry.closed
        undeliverable = self._reports.counts()
        return {
            "state": "closed" if self._closed else ("open" if registry.accepting else "shutting_down"),
            "live_clients": len(active) + len(closing) + starting,
            "active_clients": len(active),
            "closing_clients": len(closing),
            "max_clients": self.settings.max_clients,
            "queued_now": sum(client.unfinished for client in (*active, *closing)),
            "waiting_to_send_now": sum(client.waiting for client in (*active, *closing)),
            "waiting_now": waiting,
            "clients_created": created,
            "clients_evicted_lru": lru,
            "clients_evicted_idle": idle,
            "clients_closed": closed,
            "clients_abandoned": self._abandoned,
            "senders_now": sum(client.senders for client in active) + sum(client.senders for client in closing),
            "extra_senders_now": self._sender_slots.in_use,
            "extra_senders_started": self._sender_slots.started,
            "extra_senders_peak": self._sender_slots.peak,
            "max_senders": self.settings.max_senders,
            "forks_detected": self._forks,
            "undeliverable": undeliverable,
            "undeliverable_total": sum(undeliverable.values()),
            "spool": self.spool.stats() if self.spool is not None else None,
        }

    def report_undeliverable(
        self, workspace_id: str, key_fingerprint: str, endpoint: str, messages: list[Message], reason: str, detail: str
    ) -> None:
        """Hand events to `on_undeliverable` as the pool's own losses are (recovery uses it)."""
        self._reports.lost(workspace_id, key_fingerprint, endpoint, messages, reason, detail)

    @property
    def accepting(self) -> bool:
        return not self._closed and self._registry.accepting

    # --- enqueue internals ------------------------------------------------------------

    def _spool_first(
        self, spool: Spool, key: ClientKey, call: FinalMessage | LibraryCall, token: str | None
    ) -> tuple[FinalMessage | LibraryCall, EnqueueOutcome | None]:
        """Write the event to the spool before it is queued: the call to queue, or the refusal."""
        if isinstance(call, FinalMessage):
            message, text = call.message, call.text or encode(call.message)
        else:
            call = call.pinned()  # the id and time the spool keeps are the ones that will be sent
            message = call.final_form()
            text = json.dumps(message, default=str)
        workspace_id, write_key, endpoint = key
        try:
            written = spool.append(workspace_id, write_key, endpoint, token, str(message.get("messageId")), text)
        except OSError as error:
            detail = f"the spool in {spool.directory} could not be written ({error.strerror or error})"
            self._reports.lost(workspace_id, fingerprint(write_key), endpoint, [message], SPOOL_FAILED, detail)
            return call, EnqueueOutcome(False, SPOOL_FAILED)
        if not written:
            detail = f"delivery spool full ({spool.settings.max_bytes} bytes)"
            if not self._spool_full_warned:  # once per episode, as for a full queue
                self._reports.queue_full_warning(workspace_id, detail)
                self._spool_full_warned = True
            self._reports.lost(workspace_id, fingerprint(write_key), endpoint, [message], QUEUE_FULL, detail, log=False)
            return call, EnqueueOutcome(False, QUEUE_FULL)
        if self._spool_full_warned:
            self._spool_full_warned = False
        return call, None

    def _start(self, key: ClientKey) -> tuple[ManagedClient, list[Message]] | None:
        """Build the client of a reserved key, outside the registry lock; None if impossible."""
        workspace_id, write_key, endpoint = key
        try:
            self._first_client_setup()
            known_secrets.add(write_key)
            client = ManagedClient(workspace_id, write_key, endpoint, self.settings, self._reports, self._sender_slots)
        except RuntimeError as error:  # no thread can be started: interpreter exit, or none left
            logger.error("Could not start a Segment delivery thread: %s", error)
            backlog = self._registry.start_failed(key)
            self._lost(key, backlog, self._closed_reason())
            return None
        backlog = self._registry.started(key, client)
        if self._shutdown_deadline is not None:
            self._shutdown_clients.append(client)
        self._ensure_closer()
        return client, backlog

    def _first_client_setup(self) -> None:
        with self._setup_lock:
            if self._atexit_registered:
                return
            install_redaction()  # before any client can log a request body
            install_causes()  # so a deadline report can name the last failure
            # Every request in flight may want its own keep-alive connection to the host.
            prepare_library_session(self.settings.max_clients + self.settings.max_senders)
            set_gzip_level(self.settings.gzip_level)
            atexit.register(self._at_exit)
            self._atexit_registered = True

    def _submit(self, client: ManagedClient, call: FinalMessage | LibraryCall) -> EnqueueOutcome | None:
        """Queue on `client`: the outcome, or None when the client closed under our feet."""
        status, message = client.submit(call)
        if status is Submitted.QUEUED:
            if client.queue_full_warned:
                client.queue_full_warned = False
            return ACCEPTED
        if status is Submitted.FULL and message is not None:
            self._queue_full(client, message)
            return EnqueueOutcome(False, QUEUE_FULL)
        return None  # Submitted.CLOSED

    def _hold(self, key: ClientKey, call: FinalMessage | LibraryCall) -> EnqueueOutcome:
        """All `max_clients` are busy: validate now, keep the event until its client exists."""
        message = call.final_form()  # DeliveryError here, on the caller's thread
        refusal, client = self._registry.hold(key, message)
        if client is not None:
            outcome = self._submit(client, submission_for(message))
            return outcome if outcome is not None else self._refuse(key, message, CLIENT_UNAVAILABLE)
        if refusal is not None:
            return self._refuse(key, message, refusal)
        self._ensure_closer()
        return ACCEPTED

    def _refuse(self, key: ClientKey, message: Message, reason: str) -> EnqueueOutcome:
        """Report a message that will not be queued (so it is kept for replay) and say why."""
        workspace_id, write_key, endpoint = key
        if reason == QUEUE_FULL:
            detail = f"waiting room full ({self.settings.waiting_room_size} events)"
            self._reports.queue_full_warning(workspace_id, detail)
        elif reason == SHUTTING_DOWN:
            detail = "the delivery pool is shut down; the event was not queued"
        else:
            detail = "no delivery thread could be started for this workspace"
        self._reports.lost(
            workspace_id,
            fingerprint(write_key),
            endpoint,
            [message],
            reason if reason in (QUEUE_FULL, SHUTTING_DOWN) else CLIENT_CLOSED,
            detail,
            log=reason != QUEUE_FULL,
        )
        return EnqueueOutcome(False, reason)

    def _queue_full(self, client: ManagedClient, message: Message) -> None:
        """The library only logs a warning per event; the pool reports each and warns once per episode."""
        detail = client.queue_full_detail()
        if not client.queue_full_warned or not self._reports.has_callback:
            self._reports.queue_full_warning(client.workspace_id, detail)
            client.queue_full_warned = True
        self._reports.lost(
            client.workspace_id,
            client.fingerprint,
            client.endpoint,
            [message],
            QUEUE_FULL,
            detail,
            log=False,
        )

    def _feed(self, key: ClientKey, client: ManagedClient, messages: list[Message]) -> None:
        """Queue events that waited for this client (validated before they were accepted)."""
        for message in messages:
            try:
                status, queued = client.submit(submission_for(message))
            except DeliveryError as error:  # only a library change could get here
                self._lost(key, [message], REJECTED, str(error))
                continue
            if status is Submitted.FULL and queued is not None:
                self._queue_full(client, queued)
            elif status is Submitted.CLOSED:
                self._lost(key, [message], self._closed_reason())

    def _lost(self, key: ClientKey, messages: list[Message], reason: str, detail: str = "") -> None:
        workspace_id, write_key, endpoint = key
        detail = detail or f"{len(messages)} event(s) were waiting for a delivery thread"
        self._reports.lost(workspace_id, fingerprint(write_key), endpoint, messages, reason, detail)

    def _closed_reason(self) -> str:
        """Why events that lost their client are reported: an eviction, or a shutdown under way."""
        return CLIENT_CLOSED if self._registry.accepting else SHUTDOWN_DEADLINE

    # --- the closer -------------------------------------------------------------------

    def _ensure_closer(self) -> None:
        """Start the one closer thread unless it runs (or shutdown drives the work itself)."""
        registry = self._registry
        with registry.lock:
            if not registry.accepting or (self._closer is not None and self._closer.is_alive()):
                return
            closer = threading.Thread(target=self._closer_loop, name="quickbot-segment-closer", daemon=True)
            self._closer = closer
        try:
            closer.start()
        except RuntimeError as error:  # interpreter exit, or no thread left: shutdown will do the closing
            logger.error("Could not start the Segment delivery closer thread: %s", error)
            with registry.lock:
                if self._closer is closer:
                    self._closer = None

    def _closer_loop(self) -> None:
        """Close idle and evicted clients and admit waiting workspaces; ends when there are none."""
        idle_check = max(0.01, min(self.settings.client_idle_seconds / 4, 5.0))
        me = threading.current_thread()
        registry = self._registry
        while True:
            with registry.lock:
                if self._closer is not me or not registry.accepting:
                    return
                if registry.is_empty():
                    self._closer = None  # started again with the next client
                    return
                registry.wakeup.wait(POLL_SECONDS if registry.has_work() else idle_check)
                if self._closer is not me or not registry.accepting:
                    return
            try:
                self._tick(time.monotonic())
            except Exception:  # keep closing the others; a bug worth a traceback
                logger.exception("Segment delivery closer failed; retrying")
                time.sleep(POLL_SECONDS)

    def _tick(self, now: float) -> None:
        """One pass: evict idle clients, move closing ones on, admit waiting workspaces."""
        with self._tick_lock:
            closing = self._registry.closing_snapshot(now)
            self._begin_closing(closing, now)
            finished = [client for client in closing if client.advance(now)]
            admitted, evicted = self._registry.settle(finished)
            for key, messages in admitted:
                started = self._start_admitted(key, messages)
                if started is not None:
                    self._feed(key, *started)
            # Clients evicted to make room are hurried now rather than on the next pass.
            self._begin_closing(evicted, now)

    def _start_admitted(self, key: ClientKey, messages: list[Message]) -> tuple[ManagedClient, list[Message]] | None:
        started = self._start(key)
        if started is None:
            self._lost(key, messages, self._closed_reason())
            return None
        client, backlog = started
        return client, [*messages, *backlog]

    def _begin_closing(self, clients: list[ManagedClient], now: float) -> None:
        for client in clients:
            if self._shutdown_deadline is not None:
                client.begin_close(self._shutdown_deadline, SHUTDOWN_DEADLINE)
            elif client.close_deadline is None:
                client.begin_close(now + self.settings.close_timeout, CLIENT_CLOSED)

    # --- shutdown internals -----------------------------------------------------------

    def _run_until(self, deadline: float) -> None:
        """Do the closer's work from this thread until everything settled or the cutoff.

        Each pass is short (no thread is started here but the drain's first worker), so the
        cutoff is seen within a pass of its coming.
        """
        drain = self._drain
        while True:
            self._tick(time.monotonic())
            if drain is not None:
                # Drain workers take the slots closing clients free: threads stay within max_clients.
                with self._registry.lock:
                    free = self.settings.max_clients - self._registry.owned()
                drain.top_up(max(1, free))
            if self._registry.settled() and (drain is None or drain.done()):
                return
            cutoff = deadline - self._report_reserve(drain, deadline)
            if drain is not None:
                drain.set_cutoff(cutoff)
            remaining = cutoff - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(POLL_SECONDS, remaining))

    def _report_reserve(self, drain: WaitingRoomDrain | None, deadline: float) -> float:
        """Time to keep before the deadline for dead-lettering what is still pending by then.

        Reporting costs per report (one for each waiting workspace, batch or closing client)
        and per event (`Reporter.cost`, measured as reports are made), so waiting until the
        deadline itself and only then reporting thousands of them would overrun it; requests
        still open at the cutoff compete with that reporting for this interpreter. Recomputed
        on every pass: as events are delivered the reserve shrinks and the waiting goes on.
        """
        registry = self._registry
        with registry.lock:
            events = registry.waiting_events
            reports = len(registry.waiting) + len(registry.for_starting)
            unsettled = [client for client in registry.closing if not client.settled]
        unfinished = [count for count in (client.unfinished for client in unsettled) if count]
        events += sum(unfinished)
        reports += REPORTS_PER_CLIENT * len(unfinished)
        competing = len(unfinished)  # a client with nothing left is only pausing its thread
        request_cpu = REQUEST_CPU_SECONDS
        if drain is not None:
            batches, drain_events = drain.pending()
            reports += batches
            events += drain_events
            competing += drain.in_flight()
            request_cpu = drain.pace.cpu_seconds
        estimate = self._reports.cost.estimate(reports, events) + competing * request_cpu * load_factor()
        share = RESERVE_SHARE * max(0.0, deadline - self._shutdown_started)
        return min(share, RESERVE_FLOOR + RESERVE_FACTOR * estimate)

    def _finish_shutdown(self, started: float) -> ShutdownReport:
        """At the deadline (or once drained): report what is left, stop, and say how it went.

        Everything left goes to the callback in one `lost_many` (one dead-letter transaction),
        timed from the first report built, so the cost estimate learns what the deadline paid.
        """
        building = time.perf_counter()
        leftovers: list[Undeliverable] = []
        drained_late = self._drain.finish(leftovers) if self._drain is not None else 0
        self._drain = None
        if drained_late:
            logger.error(
                "Segment delivery: %d event(s) of workspaces waiting for a delivery thread were not delivered "
                "before the shutdown deadline; they are dead-lettered (shutdown_deadline)",
                drained_late,
                extra={"workspace": None, "count": drained_late, "reason": SHUTDOWN_DEADLINE, "status": None},
            )
        with self._tick_lock:
            clients, waiting = self._registry.take_everything()
            abandoned_reports: list[Undeliverable] = []
            for client in clients:
                if not client.settled:
                    client.abandon(abandoned_reports)
            self._log_abandoned(abandoned_reports)
            leftovers.extend(abandoned_reports)
            leftovers.extend(
                Undeliverable(
                    workspace_id=workspace_id,
                    write_key_fingerprint=fingerprint(write_key),
                    endpoint=endpoint,
                    messages=messages,
                    reason=SHUTDOWN_DEADLINE,
                    detail=f"{len(messages)} event(s) were waiting for a delivery thread",
                )
                for (workspace_id, write_key, endpoint), messages in waiting.items()
            )
            self._reports.lost_many(leftovers, started=building)
        if self._atexit_registered:
            atexit.unregister(self._at_exit)
            self._atexit_registered = False
        abandoned = sum(1 for client in self._shutdown_clients if client.abandoned)
        self._abandoned += abandoned
        lost = self._reports.take_shutdown_losses()
        total = sum(lost.values())
        report = ShutdownReport(
            drained=total == 0 and abandoned == 0,
            undelivered=total,
            clients_closed=len(self._shutdown_clients),
            abandoned_clients=abandoned,
            elapsed_seconds=time.monotonic() - started,
            undelivered_by_workspace=dict(lost),
        )
        self._closed = True
        self._shutdown_deadline = None
        self._shutdown_clients = []
        self._last_report = report
        if self.spool is not None:
            self.spool.close()  # everything left the spool but events whose dead-letter write failed
        logger.info(
            "Segment delivery pool shut down in %.2fs: %d client(s), %d event(s) undelivered",
            report.elapsed_seconds,
            report.clients_closed,
            report.undelivered,
            extra={"workspace": None, "count": report.undelivered, "reason": SHUTDOWN_DEADLINE, "status": None},
        )
        return report

    def _log_abandoned(self, reports: list[Undeliverable]) -> None:
        """One line for what the deadline took from clients (a line per client cost the deadline)."""
        if not reports:
            return
        count = sum(report.count for report in reports)
        in_doubt = sum(report.count for report in reports if report.in_doubt)
        causes = sorted(
            {report.detail.split("; last attempt: ", 1)[1] for report in reports if "; last attempt: " in report.detail}
        )
        logger.error(
            "Segment delivery: %d event(s) of %d workspace(s) not delivered by the shutdown deadline "
            "(%d in requests still open, which may have arrived); dead-lettered%s",
            count,
            len({report.workspace_id for report in reports}),
            in_doubt,
            f"; last attempt: {causes[0]}" + (f" (and {len(causes) - 1} other cause(s))" if len(causes) > 1 else "")
            if causes
            else "",
            extra={"workspace": None, "count": count, "reason": SHUTDOWN_DEADLINE, "status": None},
        )

    def _already_shut_down(self, started: float) -> ShutdownReport:
        previous = self._last_report
        return ShutdownReport(
            drained=previous.drained if previous else True,
            undelivered=0,
            clients_closed=0,
            abandoned_clients=0,
            elapsed_seconds=time.monotonic() - started,
            already_shut_down=True,
        )

    def _at_exit(self) -> None:
        """The one interpreter-exit hook: flush everything within QUICKBOT_SEGMENT_EXIT_TIMEOUT."""
        try:
            self.shutdown(self.settings.exit_timeout)
        except Exception:
            logger.exception("Segment delivery pool could not shut down cleanly at exit")

    # --- fork -------------------------------------------------------------------------

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's clients (their threads do not exist here)."""
        if self._pid == os.getpid():
            return
        registry = self._registry
        for client in [*registry.live.values(), *registry.closing]:
            client.forget_after_fork()
        registered = self._atexit_registered  # the child inherited the parent's exit hooks
        self._new_state()
        self._atexit_registered = registered
        self._reports.reset_after_fork()
        if self._closed:
            self._registry.accepting = False
        self._pid = os.getpid()
        self._forks += 1


# Every pool in this process, so a fork can reset them all (weak: a dropped pool just goes).
_POOLS: weakref.WeakSet[DeliveryPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    reset_library_session_after_fork()
    for pool in list(_POOLS):
        pool._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
