"""Opening a private SQLite file of the plugin's own, and nothing else.

The dead-letter store and the embedded collector keep end users' events (PII) in SQLite
files whose paths operators type (`--db`) or point variables at. A typo, a swapped option or
a file planted in a shared directory must never make the plugin change someone else's file:
before any mode, pragma or table is changed, the path is checked here. Only a regular file
owned by this user, private to it (no group or other permission bits), that is empty or an
SQLite database marked with this kind of store's `application_id` (or, for files written by
0.1.0 before that mark existed, holding exactly that version's tables) is opened. Anything
else is refused with a `StoreFileError` naming the file and saying how to fix it.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .errors import PluginError

#: The first 16 bytes of every SQLite 3 database file.
SQLITE_HEADER: Final = b"SQLite format 3\x00"


@dataclass(frozen=True)
class StoreKind:
    """One kind of file the plugin keeps: how it is named to an operator and how it is recognised."""

    name: str
    #: Written in the file's header on creation (`PRAGMA application_id`): the file's owner mark.
    application_id: int
    #: The sets of tables a file of this kind held before it was marked (0.1.0 wrote no application_id);
    #: an unmarked file with exactly one of these sets is adopted.
    legacy_tables: tuple[frozenset[str], ...]
    #: The option or variable an operator changes to use another file.
    setting: str


DEAD_LETTER_STORE: Final = StoreKind(
    name="dead-letter store",
    application_id=0x51425344,  # "QBSD"
    legacy_tables=(frozenset({"dead_letters", "tallies", "counters"}),),
    setting="--db or QUICKBOT_SEGMENT_DEAD_LETTER_PATH",
)
COLLECTOR_STORE: Final = StoreKind(
    name="collector event store",
    application_id=0x51425343,  # "QBSC"
    legacy_tables=(frozenset({"events", "batches", "rejections"}), frozenset({"events", "rejections"})),
    setting="--db or QUICKBOT_SEGMENT_COLLECTOR_DB",
)
_KINDS: Final = (DEAD_LETTER_STORE, COLLECTOR_STORE)


class StoreFileError(PluginError):
    """The path given for a store is not a file the plugin may open as that store."""


def open_private_database(
    path: Path, kind: StoreKind, *, create: bool, timeout: float = 5.0, setting: str | None = None
) -> sqlite3.Connection:
    """Connect to `path` as a store of `kind`, after checking that it is one (creating it when
    `create` and missing); raises `StoreFileError` for anything else.

    The returned connection has changed nothing in a file it did not create, except to write
    the application_id into an adopted 0.1.0 store or an empty file. `setting` overrides the
    option named in error messages (a command with several store options).
    """
    choose = f"choose another {setting or kind.setting}"
    if create:
        _create_private(path, choose)
    descriptor = _open_checked(path, kind, choose)
    try:
        keep_side_files_private(path, kind, setting=setting, fix=False)  # SQLite would follow a planted link
        identity = os.fstat(descriptor)
        database = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    finally:
        os.close(descriptor)
    try:
        database.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        now = os.lstat(path)
        if (now.st_dev, now.st_ino) != (identity.st_dev, identity.st_ino):
            raise StoreFileError(f"the {kind.name} {path} was replaced while it was being opened; {choose}.")
        unmarked = _check_contents(database, path, kind, choose)
        # What the file is before its mode: never advise `chmod 600` on a file that is not a store.
        if stat.S_IMODE(identity.st_mode) & 0o077:
            raise StoreFileError(
                f"the {kind.name} {path} is readable or writable by other users (mode "
                f"{stat.S_IMODE(identity.st_mode):o}) and holds end users' events; make it private with "
                f"`chmod 600 {path}` (and check who has read it), or {choose}."
            )
        keep_side_files_private(path, kind, setting=setting)
        if unmarked:
            database.execute(f"PRAGMA application_id = {kind.application_id}")
    except BaseException:
        database.close()
        raise
    return database


def keep_side_files_private(path: Path, kind: StoreKind, *, setting: str | None = None, fix: bool = True) -> None:
    """The `-wal` and `-shm` files hold the same data: made 0600 when ours (unless not `fix`),
    refused when not regular files of this user's."""
    choose = f"choose another {setting or kind.setting}"
    for side in (Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        try:
            info = os.lstat(side)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise StoreFileError(
                f"{side}, a side file of the {kind.name} {path}, is {_describe(info)}; "
                f"remove it if it is not yours, or {choose}."
            )
        if fix and stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(side, 0o600)


def make_private_directories(directory: Path) -> None:
    """Create missing directories 0700 (as XDG asks of a state directory); leave existing ones alone."""
    missing: list[Path] = []
    while not os.path.lexists(directory) and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for created in reversed(missing):
        try:
            created.mkdir(mode=0o700)
        except FileExistsError:  # another worker made it first
            continue
        os.chmod(created, 0o700)  # mkdir's mode is filtered by the umask


def _create_private(path: Path, choose: str) -> None:
    if os.path.lexists(path):
        return
    make_private_directories(path.parent)
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    except FileExistsError:  # another worker made it first, or something was planted: checked next
        return
    except NotADirectoryError:
        raise StoreFileError(f"cannot create {path}: {path.parent} is not a directory; {choose}.") from None
    os.close(descriptor)


def _open_checked(path: Path, kind: StoreKind, choose: str) -> int:
    """A descriptor on `path` once it is known to be a private regular file of ours with an
    SQLite header (or empty): what the path names is checked, never what a symlink points at.
    The mode is checked once the contents are known to be a store."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise StoreFileError(f"the {kind.name} {path} does not exist; check the path ({kind.setting}).") from None
    except OSError as error:
        if os.path.islink(path):
            raise StoreFileError(
                f"the {kind.name} {path} is a symbolic link; the plugin opens only a regular file it owns. "
                f"Remove the link if you did not make it, or {choose} (the file itself, not a link)."
            ) from None
        raise StoreFileError(f"cannot open the {kind.name} {path}: {error.strerror or error}; {choose}.") from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise StoreFileError(f"the {kind.name} {path} is {_describe(info)}, not a file; {choose}.")
        if info.st_uid != os.getuid():
            raise StoreFileError(
                f"the {kind.name} {path} belongs to another user (uid {info.st_uid}); the plugin opens only "
                f"files of the user it runs as. {choose[0].upper()}{choose[1:]}, or have its owner move it away."
            )
        header = os.read(descriptor, len(SQLITE_HEADER)) if info.st_size else b""
        if info.st_size and header != SQLITE_HEADER:
            raise StoreFileError(f"{path} is not an SQLite file, so it is not a {kind.name}; {choose}.")
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _check_contents(database: sqlite3.Connection, path: Path, kind: StoreKind, choose: str) -> bool:
    """The file is this kind's: marked with its application_id, or unmarked (returns True) and
    empty or 0.1.0's."""
    try:
        # One read transaction: another worker may be creating this very file, and its tables seen
        # without its mark (read a moment before) would make it "another application's".
        database.execute("BEGIN")
        try:
            application_id = int(database.execute("PRAGMA application_id").fetchone()[0])
            if application_id == kind.application_id:
                return False
            tables = {
                str(name)
                for (name,) in database.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
                )
            }
        finally:
            database.execute("COMMIT")
    except sqlite3.DatabaseError as error:
        raise StoreFileError(f"{path} cannot be read as an SQLite database ({error}); {choose}.") from None
    owner = next((other for other in _KINDS if other.application_id == application_id), None)
    if owner is None and application_id == 0:
        owner = next((other for other in _KINDS if tables in other.legacy_tables), None)
        if owner is kind or not tables:
            return True
    if owner is not None:
        raise StoreFileError(f"{path} is the plugin's {owner.name}, not a {kind.name}; {choose}.")
    listed = ", ".join(sorted(tables)) or "none"
    raise StoreFileError(
        f"{path} is an SQLite database of another application (application_id {application_id}, tables: "
        f"{listed}), not a {kind.name}; the plugin leaves it alone. {choose[0].upper()}{choose[1:]}."
    )


def _describe(info: os.stat_result) -> str:
    if stat.S_ISDIR(info.st_mode):
        return "a directory"
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link"
    if not stat.S_ISREG(info.st_mode):
        return "a special file (a FIFO, socket or device)"
    return f"owned by another user (uid {info.st_uid})"
