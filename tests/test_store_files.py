"""The stores open only files that are theirs, as an operator with a typo or a neighbour with a
planted file would find out: through the installed `quickbot-segment` command."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from quickbot_segment_plugin.collector.store import EventStore
from quickbot_segment_plugin.core.private_sqlite import COLLECTOR_STORE, DEAD_LETTER_STORE, StoreFileError
from quickbot_segment_plugin.deadletters import DeadLetterStore
from quickbot_segment_plugin.deadletters.schema import SCHEMA_V1

COMMAND = str(Path(sys.executable).with_name("quickbot-segment"))


def cli(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COMMAND, *argv], capture_output=True, text=True, timeout=timeout, check=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def fingerprint(path: Path) -> tuple[int, str]:
    return mode(path), hashlib.sha256(path.read_bytes()).hexdigest()


def dead_letter(store: DeadLetterStore, message_id: str = "m-1") -> int:
    message = {"type": "track", "event": "Signed Up", "userId": "u-1", "messageId": message_id}
    return store.add("ws", [message], "queue_full", "queue full")


def another_application(path: Path) -> None:
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE notes (body TEXT)")
        other.execute("INSERT INTO notes VALUES ('mine')")
    other.close()


@pytest.mark.parametrize("command", [["dead-letters", "list"], ["stats"], ["dead-letters", "purge", "--yes"]])
def test_a_text_file_given_as_db_is_neither_chmodded_nor_changed(tmp_path: Path, command: list[str]) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_bytes(Path("/etc/passwd").read_bytes() if Path("/etc/passwd").exists() else b"root:x:0:0::/root:\n")
    passwd.chmod(0o644)
    before = fingerprint(passwd)
    result = cli(*command, "--db", str(passwd))
    assert result.returncode == 2
    assert f"{passwd} is not an SQLite file" in result.stderr
    assert "chmod" not in result.stderr  # never advise making someone else's file ours
    assert "Traceback" not in result.stderr
    assert fingerprint(passwd) == before
    assert sorted(os.listdir(tmp_path)) == ["passwd"]


def test_a_directory_given_as_db_keeps_its_mode(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    directory.chmod(0o755)
    result = cli("stats", "--db", str(directory))
    assert result.returncode == 2
    assert f"{directory} is a directory" in result.stderr
    assert mode(directory) == 0o755
    assert os.listdir(directory) == []


def test_another_applications_database_gets_no_wal_and_no_tables(tmp_path: Path) -> None:
    other = tmp_path / "app.sqlite3"
    another_application(other)
    other.chmod(0o600)
    before = fingerprint(other)
    for command in (["stats"], ["dead-letters", "list"]):
        result = cli(*command, "--db", str(other))
        assert result.returncode == 2
        assert "another application" in result.stderr and "tables: notes" in result.stderr
    assert fingerprint(other) == before
    assert sorted(os.listdir(tmp_path)) == ["app.sqlite3"]  # no -wal, no -shm
    # Nor through the library, where a write would otherwise create the tables.
    assert dead_letter(DeadLetterStore(other)) == 0
    assert fingerprint(other) == before


def test_a_store_others_can_read_is_refused_with_the_chmod_that_fixes_it(tmp_path: Path) -> None:
    path = tmp_path / "dl.sqlite3"
    dead_letter(DeadLetterStore(path))
    path.chmod(0o644)
    result = cli("stats", "--db", str(path))
    assert result.returncode == 2
    assert f"chmod 600 {path}" in result.stderr
    assert mode(path) == 0o644
    path.chmod(0o600)
    assert cli("stats", "--db", str(path)).returncode == 0


def test_a_symlink_planted_as_the_store_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.sqlite3"
    writer = DeadLetterStore(victim)
    dead_letter(writer)  # a real store, ours even: still not through a link
    writer.close()
    before = fingerprint(victim)
    shared = tmp_path / "shared"
    shared.mkdir()
    planted = shared / "dead-letters.sqlite3"
    planted.symlink_to(victim)
    result = cli("dead-letters", "purge", "--yes", "--state", "all", "--db", str(planted))
    assert result.returncode == 2
    assert "symbolic link" in result.stderr
    assert fingerprint(victim) == before

    dangling = shared / "new.sqlite3"
    target = tmp_path / "created-through-the-link"
    dangling.symlink_to(target)
    assert dead_letter(DeadLetterStore(dangling)) == 0
    assert cli("stats", "--db", str(dangling)).returncode == 2
    assert not target.exists()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_a_store_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dl.sqlite3"
    dead_letter(DeadLetterStore(path))
    os.chown(path, 65534, 65534)
    before = fingerprint(path)
    result = cli("stats", "--db", str(path))
    assert result.returncode == 2
    assert "belongs to another user (uid 65534)" in result.stderr
    assert fingerprint(path) == before


def test_planted_side_files_are_refused_and_ours_are_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "dl.sqlite3"
    writer = DeadLetterStore(path)
    dead_letter(writer)
    writer.close()  # the last connection removes its -wal and -shm
    elsewhere = tmp_path / "elsewhere"
    Path(f"{path}-wal").symlink_to(elsewhere)
    result = cli("stats", "--db", str(path))
    assert result.returncode == 2
    assert f"{path}-wal, a side file of the dead-letter store" in result.stderr
    assert not elsewhere.exists()
    Path(f"{path}-wal").unlink()
    Path(f"{path}-shm").write_bytes(b"")
    Path(f"{path}-shm").chmod(0o644)
    store = DeadLetterStore(path)
    assert dead_letter(store, "m-2") == 1
    assert mode(Path(f"{path}-shm")) == 0o600
    assert mode(Path(f"{path}-wal")) == 0o600
    store.close()


def test_collector_db_files_side_files_and_directories_are_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "made" / "here" / "events.sqlite3"
        store = EventStore(path)
        store.add(
            [{"type": "track", "event": "E", "userId": "u"}],
            [[]],
            received_at="2024-05-01T12:00:00.000Z",
            batch_id="b",
            write_key_fingerprint="sha256:x",
        )
        assert store.count() == 1
        assert {mode(path), mode(Path(f"{path}-wal")), mode(Path(f"{path}-shm"))} == {0o600}
        assert mode(path.parent) == mode(path.parent.parent) == 0o700
        store.close()
    finally:
        os.umask(old_umask)


def test_the_collector_command_refuses_a_db_that_is_not_its_store(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0::/root:/bin/sh\n")
    passwd.chmod(0o644)
    dead_letters = tmp_path / "dl.sqlite3"
    writer = DeadLetterStore(dead_letters)
    dead_letter(writer)
    writer.close()
    wide = tmp_path / "wide.sqlite3"
    EventStore(wide).close()
    wide.chmod(0o644)
    expected = {
        passwd: "is not an SQLite file",
        dead_letters: "is the plugin's dead-letter store, not a collector event store",
        wide: f"chmod 600 {wide}",
    }
    for path, message in expected.items():
        before = fingerprint(path)
        result = cli("collector", "--port", "0", "--db", str(path), timeout=30)
        assert result.returncode == 2, result.stdout
        assert message in result.stderr
        assert fingerprint(path) == before


def test_stores_of_0_1_0_without_an_application_id_are_adopted(tmp_path: Path) -> None:
    path = tmp_path / "dl.sqlite3"
    path.touch(mode=0o600)  # what 0.1.0 created: its schema, no application_id
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_V1)
        db.execute(
            "INSERT INTO dead_letters (workspace_id, message_id, type, message, reason, detail, status, attempts, "
            "first_failed_at, last_failed_at, write_key_fingerprint, endpoint) VALUES ('ws', 'm-1', 'track', "
            '\'{"messageId":"m-1","type":"track"}\', \'queue_full\', \'\', NULL, 1, '
            "'2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z', '', '')"
        )
        db.execute("PRAGMA user_version = 1")
    db.close()
    listed = cli("dead-letters", "list", "--db", str(path))
    assert listed.returncode == 0 and "m-1" in listed.stdout
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == DEAD_LETTER_STORE.application_id
    db.close()
    # The collector's file is marked with its own id and refused as a dead-letter store.
    events = tmp_path / "events.sqlite3"
    EventStore(events).close()
    with sqlite3.connect(events) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == COLLECTOR_STORE.application_id
    db.close()
    with pytest.raises(StoreFileError, match="collector event store, not a dead-letter store"):
        DeadLetterStore(events).list()


def test_a_store_another_worker_creates_meanwhile_is_recognised_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers opening a new store at once: the second reads the file's mark before the first
    has written it, and its tables after. Read apart, that looked like another application's file,
    and the dead letters being written were lost."""
    path = tmp_path / "dead-letters.sqlite3"
    real_connect = sqlite3.connect
    other_worker: list[threading.Thread] = []
    failures: list[BaseException] = []

    def other_worker_creates_the_store() -> None:
        try:
            assert dead_letter(DeadLetterStore(path), "m-other") == 1
        except BaseException as error:
            failures.append(error)

    class Racing:
        """A connection after whose first read of the mark the other worker creates the store."""

        def __init__(self, connection: sqlite3.Connection) -> None:
            self._connection = connection

        def __getattr__(self, name: str) -> Any:
            return getattr(self._connection, name)

        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            cursor = self._connection.execute(sql, *args)
            if sql == "PRAGMA application_id" and not other_worker:
                other_worker.append(threading.Thread(target=other_worker_creates_the_store))
                other_worker[0].start()
                other_worker[0].join(2.0)  # done by now, unless the read holds it back until it ends
            return cursor

    connections = 0

    def connect(*args: Any, **kwargs: Any) -> Any:
        nonlocal connections
        connections += 1
        connection = real_connect(*args, **kwargs)
        return Racing(connection) if connections == 1 else connection

    monkeypatch.setattr(sqlite3, "connect", connect)
    assert dead_letter(DeadLetterStore(path)) == 1
    other_worker[0].join(30)
    monkeypatch.setattr(sqlite3, "connect", real_connect)
    assert not failures, failures
    assert {letter.message_id for letter in DeadLetterStore(path).list()} == {"m-1", "m-other"}
