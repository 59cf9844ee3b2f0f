"""The embedded default: the store in one SQLite file on this machine.

Opening the file safely is `database.open_database`'s job; this module adapts it to the
`StoreBackend` seam (erasure that zeroes freed pages and empties the write-ahead log).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Final

from ..core import truncate_write_ahead_log
from .backend import BackendKind, Connection, ExclusiveHold
from .config import DEFAULT_BUSY_TIMEOUT
from .database import open_database

#: Read a JSON field as SQLite stores it; a number comes back as its digits.
_JSON_TEXT: Final = "CAST(json_extract(message, '$.{key}') AS TEXT)"


class SqliteBackend:
    kind: Final = BackendKind.SQLITE
    begin: Final = "BEGIN IMMEDIATE"
    errors: Final[tuple[type[Exception], ...]] = (sqlite3.Error,)

    def __init__(self, path: Path, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = path
        self.location = str(path)
        self.busy_timeout = busy_timeout

    def __repr__(self) -> str:
        return f"SqliteBackend({self.location!r})"

    def exists(self) -> bool:
        return os.path.lexists(self.path)  # a dangling symlink is refused when opened, not taken as "empty"

    def connect(self) -> Connection:
        return open_database(self.path, self.busy_timeout)

    def json_text(self, key: str) -> str:
        return _JSON_TEXT.format(key=key)

    def contains(self, column: str) -> str:
        return f"instr({column}, ?) > 0"

    def before_erasure(self, db: Connection) -> None:
        # Erased means gone from the file too: freed pages are zeroed, not left for a reader of the bytes.
        db.execute("PRAGMA secure_delete = ON")

    def after_erasure(self, db: Connection) -> None:
        if isinstance(db, sqlite3.Connection):
            truncate_write_ahead_log(db, self.path)

    def try_exclusive(self, name: str) -> ExclusiveHold | None:
        return None

    def scrub(self, text: str) -> str:
        return text
