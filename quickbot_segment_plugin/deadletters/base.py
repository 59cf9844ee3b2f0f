"""What every part of `DeadLetterStore` stands on: its settings, the connection, transactions, reads.

One connection per process behind one lock (SQLite has one writer anyway); a forked child
never touches its parent's connection and opens its own.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..core import COUNTERS, ConfigurationError, Counters
from .backend import Connection, StoreBackend, backend_for
from .config import DEFAULT_BUSY_TIMEOUT, DEFAULT_PRUNE_EVERY, DEFAULT_PRUNE_INTERVAL, DeadLetterSettings
from .sqlite_backend import SqliteBackend


class StoreBase:
    """The store's settings and its one connection; the operations live in the classes built on this.

    Opening is lazy: constructing a store reads only settings (raising `ConfigurationError`
    for a malformed variable); the first write creates the file or the tables.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        retention_days: float | None = None,
        max_rows: int | None = None,
        *,
        counters: Counters = COUNTERS,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        prune_every: int = DEFAULT_PRUNE_EVERY,
        prune_interval: float = DEFAULT_PRUNE_INTERVAL,
        clock: Callable[[], datetime] | None = None,
        environ: Mapping[str, str] | None = None,
        backend: StoreBackend | None = None,
    ) -> None:
        self.backend = backend or backend_for(path, environ, busy_timeout=busy_timeout)
        #: The SQLite file, or None when the store is a PostgreSQL database.
        self.path: Path | None = self.backend.path if isinstance(self.backend, SqliteBackend) else None
        #: Where the store is, safe to print: a file path, or the database URL without its password.
        self.location = self.backend.location
        self.retention_days = (
            retention_days
            if retention_days is not None
            else DeadLetterSettings.from_env(environ).dead_letter_retention_days
        )
        self.max_rows = max_rows if max_rows is not None else DeadLetterSettings.from_env(environ).dead_letter_max_rows
        if self.retention_days <= 0:
            raise ConfigurationError("retention_days must be more than 0.", field="retention_days")
        if self.max_rows < 1:
            raise ConfigurationError("max_rows must be at least 1.", field="max_rows")
        self._environ = environ
        self._counters = counters
        self._prune_every = max(1, prune_every)
        self._prune_interval = prune_interval
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._db: Connection | None = None
        self._pid = os.getpid()
        self._added_since_prune = 0
        self._last_prune: float | None = None  # time.monotonic() of the last prune
        # Write-failure episode: log the first failure, then a summary at most once a minute.
        self._failing = False
        self._lost_unlogged = 0
        self._lost_in_episode = 0
        self._last_failure_log = 0.0
        self._warned_raw_token = False
        _STORES.add(self)

    def __repr__(self) -> str:
        return f"DeadLetterStore({self.location!r})"

    # --- connection -------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether there is a store to read (False only for an SQLite file not created yet)."""
        return self.backend.exists()

    def _connection(self, create: bool) -> Connection | None:
        """The open connection (opening it when needed); None when reading a store that does not exist."""
        if self._pid != os.getpid():
            self._forget_after_fork()
        if self._db is not None:
            return self._db
        if not create and not self.backend.exists():
            return None
        self._db = self.backend.connect()
        return self._db

    def _forget_after_fork(self) -> None:
        """In a forked child: never touch (or close) the parent's connection; open a new one."""
        if self._db is not None:
            _INHERITED_CONNECTIONS.append(self._db)  # closing it here could disturb the parent's WAL
        self._db = None
        self._lock = threading.RLock()
        self._pid = os.getpid()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One write transaction (on SQLite taking the write lock up front, waiting out other processes)."""
        with self._lock:
            db = self._connection(create=True)
            if db is None:
                raise RuntimeError(f"the dead-letter store {self.location} could not be opened for writing")
            try:
                db.execute(self.backend.begin)
            except self.backend.errors:
                self._drop_connection()
                raise
            try:
                yield db
            except BaseException as error:
                with suppress(*self.backend.errors):
                    db.execute("ROLLBACK")
                if isinstance(error, self.backend.errors):
                    self._drop_connection()
                raise
            db.execute("COMMIT")

    def _read(self, query: str, values: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            db = self._connection(create=False)
            if db is None:
                return []
            try:
                return db.execute(query, values).fetchall()
            except self.backend.errors:
                self._drop_connection()  # a broken server connection: the next call opens a new one
                raise

    def close(self) -> None:
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None

    def _now(self) -> datetime:
        return self._clock()

    def _drop_connection(self) -> None:
        """After an SQLite error the connection may be unusable; the next write opens a new one."""
        db, self._db = self._db, None
        if db is not None and self._pid == os.getpid():
            with suppress(*self.backend.errors):
                db.close()


# Every store in this process, so a fork can reset their locks (weak: a dropped store just goes).
_STORES: weakref.WeakSet[StoreBase] = weakref.WeakSet()
# Connections a forked child inherited: kept referenced so they are never closed from the child.
_INHERITED_CONNECTIONS: list[Connection] = []


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
