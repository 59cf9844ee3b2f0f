"""The shared backend: the store in a PostgreSQL database that every replica writes to.

Chosen by `QUICKBOT_SEGMENT_DATABASE_URL=postgresql://...` (or `--db postgresql://...`), with
psycopg 3 (the `postgres` extra). The store's SQL is the same as on SQLite; this module turns
its `?` placeholders into psycopg's, applies the numbered migrations under an advisory lock,
and wraps every driver error in `DatabaseError` with any password taken out (libpq's messages
can quote the connection string).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from ..core import ConfigurationError
from .backend import BackendKind, Connection, Cursor, ExclusiveHold, LockHeld
from .database_url import DATABASE_URL_ENV, DatabaseUrl
from .errors import DatabaseError
from .migrations import POSTGRES_MIGRATIONS, latest

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("quickbot_segment_plugin.deadletters")

CONNECT_TIMEOUT: Final = 10  # seconds to reach the server before a clear error
APPLICATION_NAME: Final = "quickbot-segment"
# Advisory lock keys: 64-bit numbers derived from a name, so they do not collide with the host's own.
_MIGRATION_LOCK: Final = "quickbot-segment:migrations"


def advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class _Cursor:
    def __init__(self, cursor: psycopg.Cursor[Any], url: DatabaseUrl) -> None:
        self._cursor = cursor
        self._url = url

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def fetchall(self) -> list[Any]:
        try:
            return self._cursor.fetchall()
        except Exception as error:
            raise DatabaseError(self._url.scrub(str(error))) from None

    def fetchone(self) -> Any:
        try:
            return self._cursor.fetchone()
        except Exception as error:
            raise DatabaseError(self._url.scrub(str(error))) from None


_TRANSLATED: dict[str, str] = {}


def _psycopg_sql(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (the store's SQL holds no `?` or `%` inside literals)."""
    translated = _TRANSLATED.get(sql)
    if translated is None:
        translated = sql.replace("%", "%%").replace("?", "%s")
        if len(_TRANSLATED) < 1000:
            _TRANSLATED[sql] = translated
    return translated


def _clean(parameters: Sequence[Any]) -> list[Any]:
    """PostgreSQL text cannot hold NUL; SQLite can. U+FFFD stands in, so the row is kept, not lost."""
    return [value.replace("\x00", "\ufffd") if isinstance(value, str) else value for value in parameters]


class _Connection:
    """A psycopg connection with the `Connection` shape the store uses (autocommit, explicit BEGIN)."""

    def __init__(self, raw: psycopg.Connection[Any], url: DatabaseUrl) -> None:
        self.raw = raw
        self._url = url

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        try:
            return _Cursor(self.raw.execute(_psycopg_sql(sql), _clean(parameters)), self._url)
        except Exception as error:
            raise DatabaseError(self._url.scrub(str(error))) from None

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor:
        try:
            cursor = self.raw.cursor()
            cursor.executemany(_psycopg_sql(sql), [_clean(row) for row in parameters])
            return _Cursor(cursor, self._url)
        except Exception as error:
            raise DatabaseError(self._url.scrub(str(error))) from None

    def close(self) -> None:
        try:
            self.raw.close()
        except Exception as error:
            raise DatabaseError(self._url.scrub(str(error))) from None


class _AdvisoryHold:
    """A session-level advisory lock on its own connection: PostgreSQL drops it when the process dies."""

    def __init__(self, connection: _Connection, key: int) -> None:
        self._connection = connection
        self._key = key

    def release(self) -> None:
        try:
            self._connection.execute("SELECT pg_advisory_unlock(?)", [self._key])
        finally:
            self._connection.close()


class PostgresBackend:
    kind: Final = BackendKind.POSTGRESQL
    begin: Final = "BEGIN"
    errors: Final[tuple[type[Exception], ...]] = (DatabaseError,)

    def __init__(self, url: DatabaseUrl) -> None:
        self.url = url
        self.location = url.display

    def __repr__(self) -> str:
        return f"PostgresBackend({self.location!r})"

    def exists(self) -> bool:
        return True

    def connect(self) -> Connection:
        connection = self._open()
        try:
            self._migrate(connection)
        except BaseException:
            connection.raw.close()
            raise
        return connection

    def _open(self) -> _Connection:
        try:
            import psycopg
        except ImportError:
            raise ConfigurationError(
                f"{DATABASE_URL_ENV} points at PostgreSQL, but psycopg is not installed: "
                "pip install 'quickbot-segment-plugin[postgres]'.",
                field=DATABASE_URL_ENV,
            ) from None
        try:
            raw = psycopg.connect(
                self.url.conninfo,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
                application_name=APPLICATION_NAME,
            )
        except Exception as error:
            raise DatabaseError(
                f"cannot connect to the dead-letter database {self.location}: {self.url.scrub(str(error)).strip()} "
                f"(check the host, port, user, password and database in {DATABASE_URL_ENV})"
            ) from None
        return _Connection(raw, self.url)

    def _migrate(self, db: _Connection) -> None:
        """Bring the database to the latest migration, one replica at a time (advisory lock)."""
        target = latest(POSTGRES_MIGRATIONS)
        db.execute("BEGIN")
        try:
            db.execute("SELECT pg_advisory_xact_lock(?)", [advisory_key(_MIGRATION_LOCK)])
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                "description TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            current = db.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
            if current > target:
                raise ConfigurationError(
                    f"the dead-letter database {self.location} was migrated by a newer quickbot-segment-plugin "
                    f"(schema {current}, this version knows up to {target}); upgrade this replica, or point "
                    f"{DATABASE_URL_ENV} at another database.",
                    field=DATABASE_URL_ENV,
                )
            for migration in POSTGRES_MIGRATIONS:
                if migration.version <= current:
                    continue
                for statement in migration.statements:
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                    [migration.version, migration.description, datetime.now(UTC).isoformat()],
                )
                logger.info(
                    "migrated the dead-letter database %s to schema %d (%s)",
                    self.location,
                    migration.version,
                    migration.description,
                )
            db.execute("COMMIT")
        except BaseException:
            try:
                db.execute("ROLLBACK")
            except DatabaseError as error:
                logger.warning("could not roll back a failed migration of %s: %s", self.location, error)
            raise

    def schema_versions(self) -> list[int]:
        """The migrations applied to the database (for `stats` and tests)."""
        db = self._open()
        try:
            return [int(row[0]) for row in db.execute("SELECT version FROM schema_version ORDER BY version").fetchall()]
        finally:
            db.close()

    def json_text(self, key: str) -> str:
        return f"(message::jsonb ->> '{key}')"

    def contains(self, column: str) -> str:
        return f"strpos({column}, ?) > 0"

    def before_erasure(self, db: Connection) -> None:
        """Nothing to switch on: PostgreSQL marks deleted rows dead; `after_erasure` vacuums them."""

    def after_erasure(self, db: Connection) -> None:
        """VACUUM makes the erased rows' space reusable now instead of at the next autovacuum."""
        try:
            db.execute("VACUUM dead_letters")
        except DatabaseError as error:
            logger.warning(
                "erased rows of %s are deleted, but VACUUM failed (%s); their space is reclaimed by the next "
                "autovacuum",
                self.location,
                error,
            )

    def try_exclusive(self, name: str) -> ExclusiveHold | None:
        connection = self._open()
        key = advisory_key(f"quickbot-segment:{name}")
        try:
            taken = connection.execute("SELECT pg_try_advisory_lock(?)", [key]).fetchone()[0]
        except BaseException:
            connection.close()
            raise
        if not taken:
            connection.close()
            raise LockHeld(name)
        return _AdvisoryHold(connection, key)

    def scrub(self, text: str) -> str:
        return self.url.scrub(text)
