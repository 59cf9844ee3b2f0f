"""The seam between the store's operations and the database that keeps them.

`DeadLetterStore` speaks one SQL (with `?` placeholders) to a `StoreBackend`; a backend says
how to open a connection, how a write transaction starts, how to read a JSON field, what to
do around an erasure, and how to hold the replay lock. Two exist: an SQLite file on this
machine (`sqlite_backend`, the default) and a PostgreSQL database shared by every replica
(`postgres_backend`, chosen by `QUICKBOT_SEGMENT_DATABASE_URL`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .database_url import database_url_from_env, is_database_url, parse_database_url


class BackendKind(enum.Enum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchall(self) -> list[Any]: ...

    def fetchone(self) -> Any: ...


class Connection(Protocol):
    """What the store needs of a connection: `sqlite3.Connection` has this shape already."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...

    def close(self) -> None: ...


class ExclusiveHold(Protocol):
    """A lock the database holds for this process until `release` (or until the process dies)."""

    def release(self) -> None: ...


class StoreBackend(Protocol):
    @property
    def kind(self) -> BackendKind: ...

    @property
    def location(self) -> str:
        """Where the store is, safe to print (a file path, or a URL without its password)."""
        ...

    @property
    def begin(self) -> str:
        """The statement that opens a write transaction."""
        ...

    @property
    def errors(self) -> tuple[type[Exception], ...]:
        """The exceptions a connection raises for a database problem (never with a password in them)."""
        ...

    def exists(self) -> bool:
        """Whether there is a store to read (reads of a missing SQLite file create nothing)."""
        ...

    def connect(self) -> Connection:
        """A new connection with the current schema in place (migrating it when older)."""
        ...

    def json_text(self, key: str) -> str:
        """An SQL expression for the message's top-level `key` as text (numbers as their digits)."""
        ...

    def contains(self, column: str) -> str:
        """An SQL condition: `column` contains the text of one `?` parameter."""
        ...

    def before_erasure(self, db: Connection) -> None:
        """Make the deletes of an erasure leave no readable copy in the database's pages."""
        ...

    def after_erasure(self, db: Connection) -> None:
        """Push erased rows out of logs and free space where the database allows it."""
        ...

    def try_exclusive(self, name: str) -> ExclusiveHold | None:
        """A cross-process lock that the database drops when this process dies, when it has one.

        Returns None when the backend has no such lock (SQLite: the lease row's expiry is the
        only guard) or raises `LockHeld` when another process holds it.
        """
        ...

    def scrub(self, text: str) -> str:
        """`text` without any secret of the connection (a password in a driver's message)."""
        ...


class LockHeld(Exception):
    """Another process holds the lock (internal: `replay_lock` turns it into `ReplayInProgress`)."""


def backend_for(
    location: str | Path | None, environ: Mapping[str, str] | None = None, *, busy_timeout: float | None = None
) -> StoreBackend:
    """The backend for `--db`/`path` (a file path, or a postgresql:// URL), else the environment.

    An explicit location wins; without one, `QUICKBOT_SEGMENT_DATABASE_URL` selects PostgreSQL,
    and its absence the SQLite file at `QUICKBOT_SEGMENT_DEAD_LETTER_PATH` (or the default).
    """
    from .config import DEFAULT_BUSY_TIMEOUT, default_path
    from .sqlite_backend import SqliteBackend

    timeout = DEFAULT_BUSY_TIMEOUT if busy_timeout is None else busy_timeout

    if isinstance(location, str) and is_database_url(location):
        from .postgres_backend import PostgresBackend

        return PostgresBackend(parse_database_url(location, source="--db"))
    if location is not None:
        return SqliteBackend(Path(location).expanduser(), timeout)
    url = database_url_from_env(environ)
    if url is not None:
        from .postgres_backend import PostgresBackend

        return PostgresBackend(url)
    return SqliteBackend(default_path(environ), timeout)
