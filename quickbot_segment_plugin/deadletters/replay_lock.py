"""One replay at a time per store, across processes and replicas.

Two replays of the same rows would both send every row (and each would mark the other's rows
"failed again" when they were delivered). The lock is a lease row in the store (`leases`:
who holds it, until when), renewed while the replay runs; on PostgreSQL an advisory lock
(`pg_try_advisory_lock`, dropped by the server when the holding process dies) is taken
first and is what decides. On SQLite the lease's expiry, or the holder's process being gone
from this machine, frees a lease a killed replay left behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from ..core import PluginError, parse_stored_timestamp, stored_timestamp
from .backend import ExclusiveHold, LockHeld
from .replica import holder_is_dead, process_token

if TYPE_CHECKING:
    from .base import StoreBase

REPLAY_LOCK: Final = "replay"
#: A lease not renewed for this long is taken over (a replay renews it at least every chunk).
DEFAULT_LEASE_SECONDS: Final = 600.0


class ReplayInProgress(PluginError):
    """Another replay holds this store's replay lock."""


class ReplayLease:
    """The held lock: `renew` pushes the expiry on; the context manager releases it."""

    def __init__(self, store: StoreBase, token: str, seconds: float, now: Callable[[], datetime]) -> None:
        self._store = store
        self.token = token
        self._seconds = seconds
        self._now = now

    def renew(self) -> None:
        expires = stored_timestamp(self._now() + timedelta(seconds=self._seconds))
        with self._store._transaction() as db:
            db.execute(
                "UPDATE leases SET expires_at = ? WHERE name = ? AND token = ?", [expires, REPLAY_LOCK, self.token]
            )

    def _release(self) -> None:
        with self._store._transaction() as db:
            db.execute("DELETE FROM leases WHERE name = ? AND token = ?", [REPLAY_LOCK, self.token])


@contextmanager
def replay_lock(store: StoreBase, holder: str, seconds: float = DEFAULT_LEASE_SECONDS) -> Iterator[ReplayLease]:
    """Hold the store's replay lock for the `with` block, or raise `ReplayInProgress` at once."""
    backend = store.backend
    hold: ExclusiveHold | None
    try:
        hold = backend.try_exclusive(REPLAY_LOCK)
    except LockHeld:
        raise ReplayInProgress(_refusal(store, _current_holder(store))) from None
    token = process_token()
    try:
        now = store._now()
        with store._transaction() as db:
            row = db.execute("SELECT holder, token, expires_at FROM leases WHERE name = ?", [REPLAY_LOCK]).fetchone()
            if row is not None and hold is None:
                expires = parse_stored_timestamp(row[2])
                if expires is not None and expires > now and not holder_is_dead(row[1]):
                    raise ReplayInProgress(_refusal(store, (row[0], expires)))
            db.execute(
                "INSERT INTO leases (name, holder, token, acquired_at, expires_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = excluded.token, "
                "acquired_at = excluded.acquired_at, expires_at = excluded.expires_at",
                [REPLAY_LOCK, holder, token, stored_timestamp(now), stored_timestamp(now + timedelta(seconds=seconds))],
            )
    except BaseException:
        if hold is not None:
            hold.release()
        raise
    lease = ReplayLease(store, token, seconds, store._now)
    try:
        yield lease
    finally:
        try:
            lease._release()
        finally:
            if hold is not None:
                hold.release()


def _current_holder(store: StoreBase) -> tuple[str, datetime | None] | None:
    rows = store._read("SELECT holder, expires_at FROM leases WHERE name = ?", [REPLAY_LOCK])
    return (rows[0][0], parse_stored_timestamp(rows[0][1])) if rows else None


def _refusal(store: StoreBase, holder: tuple[str, datetime | None] | None) -> str:
    who = f" by {holder[0]}" if holder else ""
    until = (
        f" (its lease runs until {holder[1].strftime('%Y-%m-%d %H:%M:%S')} UTC unless renewed)"
        if holder and holder[1]
        else ""
    )
    return (
        f"another replay of {store.location} is running{who}{until}; two replays at once would send every row "
        "twice. Wait for it to finish, then run the replay again."
    )
