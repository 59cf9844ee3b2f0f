"""Replaying dead letters through a delivery pool, as a Python API: `replay_dead_letters`.

The operator's way to send what could not be delivered again, through the same delivery path
as live traffic (`quickbot-segment dead-letters replay` is a thin caller). The pool comes from
the caller (`ReplayPool`): the delivery package sits beside this one, not below it.

How a replay decides:
- A row is sent to `regions.endpoint_for(region)` as configured now (region from its sealed
  credentials, `QUICKBOT_SEGMENT_ENDPOINT` if set), not to the endpoint stored with it: an
  operator who fixed a wrong endpoint override gets the fix. The stored endpoint is shown for
  diagnosis only.
- Each message keeps its messageId, so Segment deduplicates anything that had arrived after
  all; replaying a row twice (state "replayed" or "all") is safe for the same reason.
- A row whose token does not open, or opens a different write key than the one it failed
  with, is skipped and reported; it stays as it was.
- One replay at a time per store (`replay_lock`): a second one refuses at once.
  Rows are marked in doubt before they are handed to the pool; what was still queued or in
  flight at the deadline stays in doubt (Segment may have it) and is resent only with
  `include_in_doubt`, or after `DeadLetterStore.confirm(..., delivered=False)`.
- Rows that first failed longer ago than Segment's deduplication window
  (`SEGMENT_DEDUP_WINDOW`) are sent, and counted (`ReplayReport.beyond_dedup_window`, see
  `dedup_warning`): had one reached Segment, it now counts twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from ..core import CLIENT_CLOSED, REJECTED, SHUTDOWN_DEADLINE, DeliveryError, Undeliverable, endpoint_for, redact
from ..credentials import CredentialsError, KeyRing
from .config import SEGMENT_DEDUP_WINDOW
from .filters import DeadLetterFilter
from .models import DeadLetter, ReplayReport
from .replay_lock import replay_lock
from .replica import replica_id
from .store import DeadLetterStore

DEFAULT_REPLAY_TIMEOUT: Final = 60.0
# Rows enqueued before waiting for the pool to drain: keeps a replay of a large store inside the
# pool's per-workspace queue instead of overflowing it into "queue_full".
REPLAY_CHUNK: Final = 1000

#: Reasons that mean "handed over, outcome unknown": the pool gave up waiting, not Segment refusing.
UNKNOWN_OUTCOME: Final = frozenset({SHUTDOWN_DEADLINE, CLIENT_CLOSED})


class ReplayPoolSettings(Protocol):
    """The one setting a replay sizes its chunks by."""

    @property
    def max_queue_size(self) -> int: ...


class ReplayPool(Protocol):
    """What a replay needs from a delivery pool (`delivery.DeliveryPool` is one).

    `enqueue` raises `DeliveryError` for a message refused outright; what cannot be delivered
    later goes to the `on_undeliverable` callback the pool was made with (`PoolFactory`).
    """

    @property
    def settings(self) -> ReplayPoolSettings: ...

    def enqueue(self, workspace_id: str, write_key: str, endpoint: str, message: Mapping[str, Any]) -> object: ...

    def flush(self, timeout: float) -> object: ...

    def shutdown(self, timeout: float) -> object: ...


#: Makes the pool a replay sends through, given the callback for what it could not deliver.
PoolFactory = Callable[[Callable[[Undeliverable], None]], ReplayPool]


def replay_dead_letters(
    store: DeadLetterStore,
    open_pool: PoolFactory,
    selection: DeadLetterFilter | None = None,
    *,
    limit: int | None = None,
    timeout: float = DEFAULT_REPLAY_TIMEOUT,
    keyring_factory: Callable[[], KeyRing] = KeyRing.from_env,
    **filters: Any,
) -> ReplayReport:
    """Send the selected rows again through a pool from `open_pool`, then mark each by what became of it.

    `filters` are those of `DeadLetterFilter` (workspace_id, reason, older_than, newer_than,
    state, ids, include_in_doubt) when no `selection` is given. Holds the store's replay lock
    throughout (`ReplayInProgress` when another replay has it). Rows are marked in doubt before
    they are handed to the pool, so a replay killed midway leaves them in doubt, not pending.
    After the pool has shut down (within `timeout`), rows it reported failed stay pending with
    attempts + 1 and the new reason; rows it gave up on at the deadline stay in doubt; the
    others are marked replayed. Needs the operator's encryption keys (`keyring_factory`) only
    when a row has credentials to open.
    """
    chosen = selection or DeadLetterFilter(**filters)
    if not store.exists():  # nothing to replay, and a replay must not create a store to lock it
        return ReplayReport()
    with replay_lock(store, replica_id(), seconds=max(600.0, 4 * timeout)) as lease:
        return _replay_locked(store, chosen, limit, timeout, keyring_factory, open_pool, lease.renew)


def dedup_warning(count: int) -> str:
    """The warning for `ReplayReport.beyond_dedup_window` rows, in words an operator can act on."""
    hours = f"{SEGMENT_DEDUP_WINDOW.total_seconds() / 3600:g}"
    return (
        f"warning: {count} replayed row(s) first failed more than {hours} hours ago, "
        "beyond Segment's deduplication window: if any of them had reached Segment after all, it is now "
        "counted twice."
    )


class _FailureLog:
    """Collects what the replay pool reports undeliverable, by (workspace, messageId); any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures: dict[tuple[str, str], Undeliverable] = {}

    def __call__(self, undeliverable: Undeliverable) -> None:
        with self._lock:
            for message in undeliverable.messages:
                self.failures[(undeliverable.workspace_id, str(message.get("messageId")))] = undeliverable


def _replay_locked(
    store: DeadLetterStore,
    selection: DeadLetterFilter,
    limit: int | None,
    timeout: float,
    keyring_factory: Callable[[], KeyRing],
    open_pool: PoolFactory,
    renew: Callable[[], None],
) -> ReplayReport:
    report = ReplayReport()
    failures = _FailureLog()
    pool = open_pool(failures)
    chunk = min(REPLAY_CHUNK, pool.settings.max_queue_size)
    keyring: KeyRing | None = None
    sent: dict[tuple[str, str], int] = {}
    refused: list[tuple[int, str]] = []
    window_start = store._now() - SEGMENT_DEDUP_WINDOW
    ready: list[tuple[DeadLetter, str, str]] = []

    def send_ready() -> None:
        store.mark_in_doubt([letter.id for letter, _, _ in ready])
        for letter, write_key, endpoint in ready:
            try:
                pool.enqueue(letter.workspace_id, write_key, endpoint, letter.message)
            except DeliveryError as error:
                refused.append((letter.id, str(error)))
                report.failed += 1
                report.problems.append(_problem(letter, f"refused by the analytics library: {error}"))
                continue
            sent[(letter.workspace_id, letter.message_id)] = letter.id
            if letter.first_failed_at < window_start:
                report.beyond_dedup_window += 1
        ready.clear()
        pool.flush(timeout)
        renew()

    try:
        # Read before sending: rows change state (in doubt) as they go, and the pages are keyed by id.
        for letter in store.iter(selection, limit):
            report.attempted += 1
            if letter.credentials_token is None:
                _skip(report, letter, "no credentials token was recorded with it, so it cannot be replayed")
                continue
            if keyring is None:
                keyring = keyring_factory()  # ConfigurationError (no keys) stops the whole replay, clearly
            try:
                credentials = keyring.open(letter.credentials_token, letter.workspace_id)
            except CredentialsError as error:
                _skip(report, letter, f"its credentials do not open: {error}")
                continue
            if letter.write_key_fingerprint and credentials.write_key.fingerprint != letter.write_key_fingerprint:
                _skip(
                    report,
                    letter,
                    f"its credentials now hold write key {credentials.write_key.fingerprint}, not "
                    f"{letter.write_key_fingerprint} that it was sent with",
                )
                continue
            ready.append((letter, credentials.write_key.reveal(), endpoint_for(credentials.region)))
            if len(ready) >= chunk:
                send_ready()
        if ready:
            send_ready()
    finally:
        pool.shutdown(timeout)
    for row_id, detail in refused:
        store.record_failed_replay([row_id], REJECTED, detail)
    delivered: list[int] = []
    failed_groups: dict[tuple[str, str, int | None], list[int]] = {}
    for key, row_id in sent.items():
        failure = failures.failures.get(key)
        if failure is None:
            delivered.append(row_id)
            continue
        if failure.reason in UNKNOWN_OUTCOME:
            report.in_doubt += 1
            report.problems.append(
                f"dead letter {row_id} (messageId {key[1]}): in doubt: still queued or in flight when the "
                "replay's time ran out; Segment may have it"
            )
            continue
        failed_groups.setdefault((failure.reason, failure.detail, failure.status), []).append(row_id)
        report.failed += 1
        report.problems.append(
            f"dead letter {row_id} (messageId {key[1]}): failed again: {failure.reason}: {failure.detail}"
        )
    for (reason, detail, status), row_ids in failed_groups.items():
        store.record_failed_replay(row_ids, reason, detail, status)
    store.mark_replayed(delivered)
    report.replayed = len(delivered)
    return report


def _skip(report: ReplayReport, letter: DeadLetter, why: str) -> None:
    report.skipped += 1
    report.problems.append(_problem(letter, f"skipped: {why}"))


def _problem(letter: DeadLetter, what: str) -> str:
    return redact(f"dead letter {letter.id} (workspace {letter.workspace_id}, messageId {letter.message_id}): {what}")
