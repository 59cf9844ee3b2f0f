"""Opening the store's file: private permissions, WAL, the schema, and busy-waiting.

Separate from the store's operations because it is where the file meets the machine: other
users (the file holds PII), other processes (one writer at a time), and older or newer
versions of the plugin (the schema version).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path

from ..core import ConfigurationError
from .config import PATH_ENV
from .schema import _SCHEMA, SCHEMA_VERSION

#: One logger for the whole store, whichever module logs: operators filter on this name.
logger = logging.getLogger("quickbot_segment_plugin.deadletters")


def open_database(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """Open (creating it private when missing) the store's file in WAL mode, with the schema in place."""
    directory = path.parent
    _make_directories(directory)
    if not path.exists():
        descriptor = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(descriptor)
    _make_private(path, warn=True)
    db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    try:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        _retry_busy(lambda: db.execute("PRAGMA journal_mode = WAL"), busy_timeout)
        db.execute("PRAGMA synchronous = NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            # Statement by statement: executescript() would commit the transaction first.
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        elif version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"{path} was written by a newer quickbot-segment-plugin (schema {version}); upgrade the plugin "
                f"or point {PATH_ENV} at another file.",
                field=PATH_ENV,
            )
    except BaseException:
        db.close()
        raise
    for side in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        _make_private(side, warn=False)
    return db


def _make_directories(directory: Path) -> None:
    """Create missing directories 0700 (as XDG asks of a state directory); leave existing ones alone."""
    missing: list[Path] = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for created in reversed(missing):
        try:
            created.mkdir(mode=0o700)
        except FileExistsError:  # another worker made it first
            continue
        os.chmod(created, 0o700)  # mkdir's mode is filtered by the umask


def _make_private(path: Path, *, warn: bool) -> None:
    """0600 for a file this user owns that others could read (SQLite copies the db's mode, but
    a file made by an older version or by hand may be wider)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if info.st_uid != os.getuid() or not info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return
    os.chmod(path, 0o600)
    if warn:
        logger.warning(
            "the dead-letter store %s was readable by other users (mode %o); it is now 0600",
            path,
            stat.S_IMODE(info.st_mode),
        )


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
