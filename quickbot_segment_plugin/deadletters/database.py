"""Opening the store's file: only its own (see `private_sqlite`), WAL, the schema, and busy-waiting.

Separate from the store's operations because it is where the file meets the machine: other
users (the file holds PII), other processes (one writer at a time), and older or newer
versions of the plugin (the schema version).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from ..core import DEAD_LETTER_STORE, ConfigurationError, keep_side_files_private, open_private_database
from .config import PATH_ENV
from .migrations import SQLITE_MIGRATIONS
from .schema import SCHEMA_VERSION

#: One logger for the whole store, whichever module logs: operators filter on this name.
logger = logging.getLogger("quickbot_segment_plugin.deadletters")


def open_database(path: Path, busy_timeout: float, *, create: bool = True) -> sqlite3.Connection:
    """Open (creating it private when missing) the store's file in WAL mode, with the schema in place.

    `private_sqlite` checks first that the path is a private dead-letter store of this user's
    (or nothing yet): nothing here changes a file that is not.
    """
    db = open_private_database(path, DEAD_LETTER_STORE, create=create, timeout=busy_timeout)
    try:
        _retry_busy(lambda: db.execute("PRAGMA journal_mode = WAL"), busy_timeout)
        db.execute("PRAGMA synchronous = NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            _migrate(db)
        elif version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"{path} was written by a newer quickbot-segment-plugin (schema {version}); upgrade the plugin "
                f"or point {PATH_ENV} at another file.",
                field=PATH_ENV,
            )
        keep_side_files_private(path, DEAD_LETTER_STORE)
    except BaseException:
        db.close()
        raise
    return db


def _migrate(db: sqlite3.Connection) -> None:
    """Apply the migrations the file lacks, in one write transaction (another process migrating
    at the same moment waits for it, then finds the file current)."""
    # Statement by statement: executescript() would commit the transaction first.
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:  # another process migrated it while this one waited
            db.execute("COMMIT")
            return
        for migration in SQLITE_MIGRATIONS:
            if migration.version > version:
                for statement in migration.statements:
                    db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _retry_busy(action: Callable[[], object], timeout: float) -> None:
    """Switching to WAL needs a moment of exclusive access; another process opening the file
    at the same time can make it fail with "locked" despite the busy timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            action()
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
