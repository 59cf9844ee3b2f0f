"""The error a shared (PostgreSQL) store raises: what the CLI turns into one clear line, like `sqlite3.Error`."""

from __future__ import annotations


class DatabaseError(Exception):
    """A PostgreSQL error, its text free of the database password."""
