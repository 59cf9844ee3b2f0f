"""Delivering what a dead process left in the spool, and looking at the spool from outside.

A spool file is live while its owner holds its lock (`fcntl.flock`, released by the kernel
when the process dies, however it dies). Recovery tries the lock without waiting: a file it
gets belongs to nobody, and is now this process's alone; two processes can never both get
it. It re-checks that the file it locked is still the one at that name (a recoverer that
finished deletes the file while holding the lock; a second one that opened it before the
delete gets the lock afterwards and must not deliver it again).

A claimed file's live events go through the normal delivery path (`DeliveryPool.enqueue`),
so they are written into this process's own spool first; then an ACK for them is written
into the claimed file, chunk by chunk. At every instant each event is live in at least one
file, and in two only for the chunk being moved, whose copies Segment deduplicates by
messageId (events keep their messageId). Once all are moved the claimed file is deleted.

The credentials of a recovered event are the sealed token spooled with it, opened with the
operator's keys, and sent to the endpoint of its region as configured now (like a
dead-letter replay). An event whose token is missing or no longer opens goes to the
dead-letter store (reason "recovery_failed", token kept), so it can be replayed once the
keys are fixed; without any keys at all (QUICKBOT_ENCRYPTION_KEYS unset) the file is left
alone for a process that has them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ..core import RECOVERY_FAILED, REJECTED, ConfigurationError, DeliveryError, endpoint_for, redact
from ..credentials import CredentialsError, KeyRing
from .spool import TEMP_SUFFIX, Spool
from .spool_format import FILE_SUFFIX, CredentialRef, SegmentContents, SpooledEvent, ack_record, parse

# A temporary spool file older than this was left by a process that died while naming it.
ABANDONED_TEMPORARY_SECONDS: Final = 60.0

try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from .pool import DeliveryPool

logger = logging.getLogger("quickbot_segment_plugin.delivery.recovery")

# Events moved between two ACKs in the claimed file: the most that can be in two files at once.
CHUNK: Final = 200
# Recovery waits while the pool has more than this share of a queue waiting to be sent, so a
# large spool is delivered at Segment's pace instead of overflowing the queue into dead letters.
BACKLOG_SHARE: Final = 2
BACKLOG_WAIT_SECONDS: Final = 600.0


@dataclass
class FileStatus:
    """One spool file as `quickbot-segment spool status` shows it."""

    name: str
    owner: str  # "running" (its process holds the lock), "orphan", or "unreadable"
    size: int
    events: int
    live: int
    workspaces: list[str]
    pid: int | None
    problem: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "owner": self.owner,
            "size": self.size,
            "events": self.events,
            "live": self.live,
            "workspaces": self.workspaces,
            "pid": self.pid,
            "problem": self.problem,
        }


@dataclass
class RecoveryReport:
    files_claimed: int = 0
    files_recovered: int = 0
    files_left: int = 0  # claimed, but left for another process (no keys, pool closing)
    events_requeued: int = 0
    events_duplicate: int = 0  # the same (workspace, messageId) live in two claimed files
    events_dead_lettered: int = 0
    torn_bytes: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "files_claimed": self.files_claimed,
            "files_recovered": self.files_recovered,
            "files_left": self.files_left,
            "events_requeued": self.events_requeued,
            "events_duplicate": self.events_duplicate,
            "events_dead_lettered": self.events_dead_lettered,
            "torn_bytes": self.torn_bytes,
            "problems": list(self.problems),
        }


class ClaimedFile:
    """A dead process's spool file, locked by us until `release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def read(self) -> SegmentContents:
        """Its records; a file that ends in the zeros its writer preallocated is cut to them.

        Cut, so that the acknowledgements `acknowledge` appends follow the records instead of
        landing after zeros, where no reader would look.
        """
        size = os.fstat(self.fd).st_size
        contents = parse(os.pread(self.fd, size, 0))
        if contents.readable_bytes < size and not contents.problem and contents.readable_bytes:
            os.ftruncate(self.fd, contents.readable_bytes)
        return contents

    def acknowledge(self, seqs: list[int]) -> None:
        if seqs:
            os.write(self.fd, ack_record(seqs))

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)  # the lock goes with the last descriptor


def spool_files(directory: Path) -> list[Path]:
    try:
        return sorted(path for path in directory.iterdir() if path.name.endswith(FILE_SUFFIX))
    except FileNotFoundError:
        return []


def claim(path: Path) -> ClaimedFile | None:
    """Lock `path` if nobody holds it (its owner died); None if it is someone's or gone."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW)  # a planted symlink is not followed
    except FileNotFoundError:
        return None
    except OSError as error:
        logger.warning("spool file %s cannot be opened (%s); it was not recovered", path, error.strerror or error)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        mine = os.fstat(fd)
        named = os.stat(path)
    except FileNotFoundError:
        os.close(fd)
        return None
    if mine.st_nlink == 0 or (mine.st_ino, mine.st_dev) != (named.st_ino, named.st_dev):
        os.close(fd)  # recovered and deleted by another process after we opened it
        return None
    if mine.st_uid != os.getuid() or mine.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        logger.warning(
            "spool file %s is not a private file of this user (owner uid %d, mode %o); it was not recovered",
            path,
            mine.st_uid,
            stat.S_IMODE(mine.st_mode),
        )
        return None
    return ClaimedFile(path, fd)


def claim_orphans(directory: Path, own: Spool | None = None) -> Iterator[ClaimedFile]:
    """Every spool file in `directory` whose owner has died, each locked by this process."""
    _remove_abandoned_temporaries(directory)
    for path in spool_files(directory):
        if own is not None and own.owns(path):
            continue
        claimed = claim(path)
        if claimed is not None:
            yield claimed


def _remove_abandoned_temporaries(directory: Path) -> None:
    """A process killed between creating and naming a file leaves `*.qbspool.tmp`: no events yet.

    Only old ones go: a live process creates its temporary file, then locks it, then renames it,
    and a temporary caught between the first two steps is unlocked but not abandoned.
    """
    try:
        temporaries = [path for path in directory.iterdir() if path.name.endswith(FILE_SUFFIX + TEMP_SUFFIX)]
    except FileNotFoundError:
        return
    old = time.time() - ABANDONED_TEMPORARY_SECONDS
    for path in temporaries:
        try:
            if path.lstat().st_mtime > old:
                continue
        except FileNotFoundError:
            continue
        claimed = claim(path)
        if claimed is not None:
            claimed.delete()
            claimed.release()


def status(directory: Path) -> list[FileStatus]:
    """What each spool file holds, and whether a running process owns it; never claims one."""
    found: list[FileStatus] = []
    for path in spool_files(directory):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue
        except OSError as error:
            problem = f"cannot be opened: {error.strerror or error}"
            found.append(FileStatus(path.name, "unreadable", 0, 0, 0, [], None, problem))
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                owner = "orphan"
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                owner = "running"
            contents = parse(os.pread(fd, os.fstat(fd).st_size, 0))
        finally:
            os.close(fd)
        workspaces = sorted({credential.workspace_id for credential in contents.credentials.values()})
        pid = contents.owner.get("pid")
        problem = contents.problem if owner == "orphan" else ""  # a running writer's tail may be mid-write
        found.append(
            FileStatus(
                name=path.name,
                owner=owner,
                size=contents.size,
                events=len(contents.events),
                live=len(contents.live()),
                workspaces=workspaces,
                pid=pid if isinstance(pid, int) else None,
                problem=problem,
            )
        )
    return found


class Recovery:
    """Claims the spool files of dead processes and delivers their events through `pool`."""

    def __init__(
        self,
        pool: DeliveryPool,
        keyring: Callable[[], KeyRing],
        remember_token: Callable[[str, str, str], None] | None = None,
        directory: Path | None = None,
    ) -> None:
        spool_directory = directory if directory is not None else (pool.spool.directory if pool.spool else None)
        if spool_directory is None:
            raise ValueError("Recovery needs a pool with a spool, or the spool directory to read.")
        self.pool = pool
        self.directory = spool_directory
        self._keyring_factory = keyring
        self._keyring: KeyRing | None = None
        self._remember_token = remember_token
        self._seen: set[tuple[str, str]] = set()

    def run(self) -> RecoveryReport:
        report = RecoveryReport()
        claimed = list(claim_orphans(self.directory, self.pool.spool))
        report.files_claimed = len(claimed)
        if claimed:
            logger.info(
                "recovering %d Segment spool file(s) left by stopped processes in %s", len(claimed), self.directory
            )
        for position, orphan in enumerate(claimed):
            try:
                done = self._recover(orphan, report)
            except Exception as error:  # this file stays for the next process; the others go on
                done = False
                report.problems.append(redact(f"{orphan.path.name}: {type(error).__name__}: {error}"))
                logger.exception("could not recover the Segment spool file %s", orphan.path)
            finally:
                orphan.release()
            if done:
                report.files_recovered += 1
            else:
                report.files_left += 1
                if not self.pool.accepting:
                    report.files_left += len(claimed) - position - 1
                    for rest in claimed[position + 1 :]:
                        rest.release()
                    break
        if report.events_requeued or report.events_dead_lettered:
            logger.info(
                "recovered %d Segment event(s) from the spool (%d dead-lettered, %d duplicate(s) skipped)",
                report.events_requeued,
                report.events_dead_lettered,
                report.events_duplicate,
                extra={"count": report.events_requeued, "reason": None, "workspace": None, "status": None},
            )
        return report

    def _recover(self, orphan: ClaimedFile, report: RecoveryReport) -> bool:
        contents = orphan.read()
        if contents.size and not contents.readable_bytes:  # another format version, or not ours at all
            report.problems.append(f"{orphan.path.name}: {contents.problem}; left as it is")
            logger.warning("spool file %s: %s; it was left as it is", orphan.path, contents.problem)
            return False
        if contents.problem and contents.problem != "empty file":
            report.torn_bytes += contents.unread_bytes
            if contents.unread_bytes:
                logger.warning(
                    "spool file %s: %s; %d byte(s) at its end were not readable (a write cut short by the crash)",
                    orphan.path.name,
                    contents.problem,
                    contents.unread_bytes,
                )
        live = contents.live()
        chunk: list[int] = []
        for event in live:
            if not self.pool.accepting:
                orphan.acknowledge(chunk)
                return False
            credential = contents.credentials.get(event.ref)
            if not self._deliver(event, credential, report):
                orphan.acknowledge(chunk)
                return False
            chunk.append(event.seq)
            if len(chunk) >= CHUNK:
                orphan.acknowledge(chunk)
                chunk = []
                self._wait_for_room()
        orphan.acknowledge(chunk)
        orphan.delete()
        return True

    def _deliver(self, event: SpooledEvent, credential: CredentialRef | None, report: RecoveryReport) -> bool:
        """Queue one recovered event (or dead-letter it); False to leave the file for another process."""
        message: dict[str, Any] = json.loads(event.message_json)
        message_id = str(message.get("messageId"))
        workspace_id = credential.workspace_id if credential is not None else str(message.get("workspace_id", "?"))
        seen_key = (workspace_id, message_id)
        if seen_key in self._seen:
            report.events_duplicate += 1
            return True
        if credential is None or credential.token is None:
            self._dead_letter(credential, workspace_id, message, "no credentials token was spooled with it", report)
            self._seen.add(seen_key)
            return True
        try:
            keyring = self._keyring_factory() if self._keyring is None else self._keyring
            self._keyring = keyring
        except ConfigurationError as error:
            report.problems.append(f"spool not recovered: {error}")
            logger.error("Segment spool files in %s cannot be recovered: %s", self.directory, error)
            return False
        try:
            credentials = keyring.open(credential.token, credential.workspace_id)
        except CredentialsError as error:
            self._dead_letter(credential, workspace_id, message, f"its credentials do not open: {error}", report)
            self._seen.add(seen_key)
            return True
        write_key = credentials.write_key
        if credential.fingerprint and write_key.fingerprint != credential.fingerprint:
            self._dead_letter(
                credential,
                workspace_id,
                message,
                f"its credentials now hold write key {write_key.fingerprint}, not {credential.fingerprint}",
                report,
            )
            self._seen.add(seen_key)
            return True
        if self._remember_token is not None:
            self._remember_token(workspace_id, write_key.fingerprint, credential.token)
        try:
            outcome = self.pool.enqueue(
                workspace_id, write_key.reveal(), endpoint_for(credentials.region), message, token=credential.token
            )
        except DeliveryError as error:
            self.pool.report_undeliverable(
                workspace_id, write_key.fingerprint, credential.endpoint, [message], REJECTED, str(error)
            )
            report.events_dead_lettered += 1
        else:
            if outcome.accepted:
                report.events_requeued += 1
            else:  # the pool dead-lettered it (a full queue or spool), with its token
                report.events_dead_lettered += 1
        self._seen.add(seen_key)
        return True

    def _dead_letter(
        self,
        credential: CredentialRef | None,
        workspace_id: str,
        message: dict[str, Any],
        why: str,
        report: RecoveryReport,
    ) -> None:
        fingerprint = credential.fingerprint if credential is not None else ""
        if credential is not None and credential.token is not None and self._remember_token is not None:
            self._remember_token(workspace_id, fingerprint, credential.token)
        self.pool.report_undeliverable(
            workspace_id,
            fingerprint,
            credential.endpoint if credential is not None else "",
            [message],
            RECOVERY_FAILED,
            f"recovered from the spool of a stopped process, but {why}",
        )
        report.events_dead_lettered += 1

    def _wait_for_room(self) -> None:
        limit = max(1, self.pool.settings.max_queue_size // BACKLOG_SHARE)
        deadline = time.monotonic() + BACKLOG_WAIT_SECONDS
        while self.pool.accepting and time.monotonic() < deadline:
            if self.pool.stats()["waiting_to_send_now"] <= limit:
                return
            time.sleep(0.01)


def start_recovery(recovery: Recovery) -> threading.Thread | None:
    """Run `recovery` on a background thread: the first `execute` must not wait for it."""
    thread = threading.Thread(target=_run_logged, args=(recovery,), name="quickbot-segment-recovery", daemon=True)
    try:
        thread.start()
    except RuntimeError as error:  # interpreter exit: the next process recovers
        logger.error("Could not start Segment spool recovery: %s", error)
        return None
    return thread


def _run_logged(recovery: Recovery) -> None:
    try:
        recovery.run()
    except Exception:
        logger.exception("Segment spool recovery failed; the files stay for the next process")
