"""This process's spool: every event `execute` queued, on disk until Segment has it.

The delivery pool appends each event here before it answers `queued` and acknowledges it
once Segment accepted its batch or the dead-letter store kept it; a process that dies with
events still queued leaves them in its files, and the next process recovers them
(`delivery_recovery`). What it promises and costs, per durability mode, is in
docs/operators/spool.md; how it is built, and why:

- One writer per file: each process appends to its own segment files (`<pid>-<random>-<n>.qbspool`),
  so no write is ever interleaved with another process's. A file is created under a temporary
  name, locked (`fcntl.flock`, held by the open file for the life of the process) and only then
  renamed, so a recovering process never sees an unlocked live file. A lock, not a PID: PIDs
  are reused, and a dead process's lock is released by the kernel.
- `process` durability is a copy into a shared mapping (`mmap`, MAP_SHARED) of the current
  file, under one lock, with no system call: a store into a shared file mapping lands in the
  page cache itself, so once it completes the bytes are the kernel's, and a SIGKILL a
  nanosecond later loses nothing. A write(2) per event cost `execute` three to four times
  what it costs in a loop (bench_spool.py: the system call leaves the caches cold), and
  taking the GIL back after `os.write` cost more again; the copy halved what the spool adds
  to `execute` (docs/internals/benchmarks.md). Each file is preallocated
  (`os.posix_fallocate`, `segment_bytes`) before it is mapped, so a store never meets a full
  disk (which would be SIGBUS, not an OSError): a disk that cannot hold a new file refuses the
  event at `_rotate` with an OSError, which the pool dead-letters as spool_failed. A file stops being mapped when it
  stops being the current one (rotated, deleted, closed): it is cut to the bytes written, and
  what it is written afterwards (acknowledgements) goes by pwrite(2). A file whose process died
  while it was current ends in zeros, where readers stop (delivery_spool_format).
- The next file is prepared ahead by the worker thread (`_prepare_spare`: created, preallocated,
  its first pages faulted in), under its temporary name until a rotation takes it, so that
  neither the file's creation nor most of its page faults fall on `execute`.
  Only where preallocated blocks are written in place (`_maps_safely`: ext4, XFS, tmpfs); on
  other filesystems a store into a full disk would be SIGBUS, so each event is one write(2)
  there, made without releasing the GIL (`_append_written`).
  `machine` adds an fsync of every written file every `sync_interval` on a background thread
  (the window a power loss can take), never on the caller's thread; on Linux fsync writes back
  the pages dirtied through a mapping too, so no msync is needed.
- Acknowledgements are ACK records in the same file (one per delivered batch, copied into the
  mapping like events while the file is current, under the same lock; not synced: a lost ACK
  only means a copy on recovery, deduplicated by messageId). A segment whose events are all
  acknowledged is deleted; a closed segment kept alive by a few stragglers (a batch stuck in
  retries) is compacted: its live events are copied into the current segment and it is deleted.
- Bounded: `max_bytes` of files per process, counting the current file and the spare at their
  preallocated size (the disk they hold). A new file takes at most what is left of the bound;
  an event that fits neither in the current file nor in a new one is refused and the pool
  dead-letters it as "queue_full", as a full queue does.
- Private: files 0600, directory 0700; the write key is never written, only the fingerprint
  and the sealed credentials token that came with the event (see delivery_spool_format).
- Fork: a child closes the parent's files and unmaps them (it must not keep the parent's locks
  alive after the parent dies, nor write into the parent's file) and starts its own. A spare
  the parent's worker was preparing at the fork stays open in the child (the thread that held
  it is gone): an empty temporary file that recovery removes once the child has ended too.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import json
import logging
import mmap
import os
import secrets
import socket
import stat
import sys
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterable
from itertools import repeat
from pathlib import Path
from typing import Any, Final, cast

from ..core import ConfigurationError, fingerprint
from .spool_format import (
    EVENT_BODY_HEAD,
    EVENT_HEAD,
    EVENT_KIND,
    EVENT_OVERHEAD,
    FILE_SUFFIX,
    FRAME,
    MAGIC,
    ack_record,
    credential_record,
    encode_message,
    event_record,
    owner_record,
    parse,
)
from .spool_settings import DIR_ENV, Durability, SpoolSettings

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; the spool needs it
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("quickbot_segment_plugin.delivery.spool")

TEMP_SUFFIX: Final = ".tmp"
# A current segment whose events were all acknowledged is replaced once it is this share of a
# full segment: often enough to keep the disk clean, rarely enough not to create a file per batch.
RETIRE_SHARE: Final = 8
# A closed segment whose live events are at most 1/COMPACT_SHARE of what it held is compacted, once
# it has been closed for COMPACT_AFTER seconds: until then its last events are most likely batches
# on their way, acknowledged within moments, and compacting (reading and parsing the whole file)
# would be work thrown away. Compacting every closed file as its acknowledgements came in cost a
# tenth of the process's CPU per event (bench_execute.py, the heavy block).
COMPACT_SHARE: Final = 4
COMPACT_AFTER = 5.0
ERROR_LOG_INTERVAL: Final = 60.0

CredentialKey = tuple[str, str, str, "str | None"]


class _Segment:
    """One of this process's files: its descriptor (holding the lock), its mapping, what is live in it.

    `size` is the bytes written; `capacity` the bytes preallocated and mapped (`map`) while the
    file is the current one, 0 once it is cut to `size` and unmapped.
    """

    __slots__ = (
        "capacity",
        "closed_at",
        "end_seq",
        "fd",
        "first_seq",
        "live",
        "map",
        "path",
        "record_refs",
        "refs",
        "size",
    )

    def __init__(self, path: Path, fd: int, first_seq: int, size: int, capacity: int, mapping: mmap.mmap) -> None:
        self.path = path
        self.fd = fd
        self.first_seq = first_seq
        self.size = size
        self.capacity = capacity
        self.end_seq = 0  # past its last event's seq, once it is no longer current
        self.closed_at = 0.0  # when it stopped being current (time.monotonic)
        self.map = mapping  # closed, not None, once unmapped: `append` reads it without a check
        self.live = 0
        # (workspace, write key, endpoint, token) -> ref, and the workspace's pending events: one
        # look-up gives `append` both.
        self.refs: dict[CredentialKey, tuple[int, dict[str, int]]] = {}
        self.record_refs: dict[tuple[str, str, str, str | None], int] = {}  # by fingerprint, for compaction


class Spool:
    """Append-before-queued, acknowledge-after-delivered; thread-safe."""

    def __init__(self, settings: SpoolSettings) -> None:
        if fcntl is None:  # pragma: no cover
            raise ConfigurationError(
                "The Segment spool needs file locks (fcntl), which this platform lacks; "
                "set QUICKBOT_SEGMENT_SPOOL_DURABILITY=off.",
                field="QUICKBOT_SEGMENT_SPOOL_DURABILITY",
            )
        self.settings = settings
        self.directory = settings.directory
        # Read on every append: plain attributes, not enum and dataclass lookups.
        self._machine = settings.durability is Durability.MACHINE
        self._segment_bytes = settings.segment_bytes
        self._max_bytes = settings.max_bytes
        prepare_directory(self.directory)
        self._mapped = _maps_safely(self.directory)
        if not self._mapped:
            logger.info(
                "the Segment spool in %s writes each event with write(2): its filesystem is not one where "
                "preallocated space is kept for writes through a mapping (ext4, XFS, tmpfs)",
                self.directory,
            )
        self._new_state()
        _SPOOLS.add(self)

    def _new_state(self) -> None:
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []  # ordered by first_seq
        self._starts: list[int] = []
        self._current: _Segment | None = None
        self._spare: _Segment | None = None  # the next current file, prepared by the worker
        self._want_spare = False
        # workspace -> messageId -> seq: per workspace, so `ack` takes a batch's seqs by its ids as given
        self._pending: dict[str, dict[str, int]] = {}
        self._extra: dict[tuple[str, str], list[int]] = {}  # the same messageId spooled again meanwhile
        self._next_seq = 1
        self._bytes = 0
        self._file_number = 0
        self._name = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._dirty: set[_Segment] = set()
        self._to_compact: list[_Segment] = []
        self._unmapped_later: list[_Segment] = []  # deleted, still to unmap and close (`_delete`)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._last_error_log = 0.0
        self.full_refusals = 0
        self.write_failures = 0
        self.compactions = 0

    def __repr__(self) -> str:
        return f"<Spool {self.directory} {self.settings.durability.value} files={len(self._segments)}>"

    # --- the caller's side ------------------------------------------------------------

    def append(
        self,
        workspace_id: str,
        write_key: str,
        endpoint: str,
        token: str | None,
        message_id: str,
        message_json: bytes | str,
    ) -> bool:
        """Copy one event into the current file's mapping, where the OS has it; False when the spool is full.

        `message_json` is the message as JSON: UTF-8 bytes (what orjson returns, written as they
        are) or text. Raises OSError when a new file cannot be created or preallocated (a full
        disk): the event is then in no file.

        This runs inside every `execute` and is written for speed (bench_spool.py, the "append"
        and execute rows): the EVENT record is framed inline rather than through `event_record`
        (the same bytes; a test holds them equal), its head packed straight into the mapping and
        its CRC taken over the head and then the message, so the record is never joined in memory.
        """
        payload = message_json if isinstance(message_json, bytes) else _encode(message_json)
        size = len(payload) + EVENT_OVERHEAD
        lock = self._lock
        lock.acquire()  # not `with`: 0.17 us more per append (bench_spool.py, the append row)
        try:
            segment = self._current
            if segment is None or segment.size + size > segment.capacity:
                if not self._mapped:
                    return self._append_written(workspace_id, write_key, endpoint, token, message_id, payload)
                rotated = self._rotate(size)
                if rotated is None:
                    self.full_refusals += 1
                    return False
                segment = rotated
            entry = segment.refs.get((workspace_id, write_key, endpoint, token))
            if entry is None:
                return self._append_with_credentials(workspace_id, write_key, endpoint, token, message_id, payload)
            ref, pending = entry
            seq = self._next_seq
            start = segment.size
            mapping = segment.map
            crc = _crc32(payload, _crc32(_EVENT_BODY_HEAD.pack(EVENT_KIND, seq, ref)))
            _EVENT_HEAD.pack_into(mapping, start, size - _FRAME_SIZE, crc, EVENT_KIND, seq, ref)
            end = start + size
            mapping[start + _EVENT_HEAD_SIZE : end] = payload
            segment.size = end
            if self._machine and segment not in self._dirty:
                self._mark_dirty(segment)
            self._next_seq = seq + 1
            segment.live += 1
            if pending.setdefault(message_id, seq) is not seq:  # spooled again before it was delivered
                self._extra.setdefault((workspace_id, message_id), []).append(seq)
        finally:
            lock.release()
        return True

    def _append_written(
        self,
        workspace_id: str,
        write_key: str,
        endpoint: str,
        token: str | None,
        message_id: str,
        payload: bytes,
    ) -> bool:
        """`append` on a filesystem the spool does not map (`_maps_safely`): one write(2) per event.

        The write holds the GIL (`_write_holding_gil`): taking it back from a delivery thread
        after `os.write` released it cost `execute` more than the write (bench_spool.py).
        """
        size = len(payload) + EVENT_OVERHEAD
        segment = self._current
        if segment is None or not self._has_room(segment, size):
            rotated = self._rotate(size)
            if rotated is None:
                self.full_refusals += 1
                return False
            segment = rotated
        entry = segment.refs.get((workspace_id, write_key, endpoint, token))
        if entry is None:
            return self._append_with_credentials(workspace_id, write_key, endpoint, token, message_id, payload)
        if self._bytes + size > self._max_bytes:
            self.full_refusals += 1
            return False
        seq = self._next_seq
        self._write(segment, event_record(seq, entry[0], payload))
        self._next_seq = seq + 1
        segment.live += 1
        self._remember(workspace_id, message_id, seq)
        return True

    def _has_room(self, segment: _Segment, size: int) -> bool:
        """Whether `size` more bytes of records go into this (current) file rather than a new one.

        A mapped file holds what fits in its preallocated size; another is written to until it
        is `segment_bytes` long (the bound is checked apart: no new file would help).
        """
        if self._mapped:
            return segment.size + size <= segment.capacity
        return segment.size < self._segment_bytes

    def _append_with_credentials(
        self,
        workspace_id: str,
        write_key: str,
        endpoint: str,
        token: str | None,
        message_id: str,
        payload: bytes,
    ) -> bool:
        """`append` of the first event of these credentials in the current file: their record goes first.

        The ref is registered only once the record is written, so no event in the file ever
        points at credentials the file does not hold.
        """
        record_key = (workspace_id, fingerprint(write_key), endpoint, token)
        placed = self._place(record_key, payload, bounded=True)
        if placed is None:
            self.full_refusals += 1
            return False
        segment, ref, data = placed
        seq = self._next_seq
        self._write(segment, data)
        segment.record_refs[record_key] = ref
        segment.refs[(workspace_id, write_key, endpoint, token)] = (ref, self._pending_of(workspace_id))
        self._next_seq = seq + 1
        segment.live += 1
        self._remember(workspace_id, message_id, seq)
        return True

    def _place(
        self, record_key: tuple[str, str, str, str | None], payload: bytes | str, *, bounded: bool
    ) -> tuple[_Segment, int, bytes] | None:
        """Where the next event goes (the current file, or a new one if it has no room) and its bytes.

        The bytes are its EVENT record, after its credentials' record if that file lacks it;
        None when `bounded` and the spool's bound leaves no room for a new file.
        """
        seq = self._next_seq
        segment = self._current
        if segment is not None:
            ref = segment.record_refs.get(record_key)
            if ref is None:
                ref = len(segment.record_refs) + 1
                data = credential_record(ref, *record_key) + event_record(seq, ref, payload)
            else:
                data = event_record(seq, ref, payload)
            if self._has_room(segment, len(data)):
                if bounded and not self._mapped and self._bytes + len(data) > self._max_bytes:
                    return None
                return segment, ref, data
        data = credential_record(1, *record_key) + event_record(seq, 1, payload)
        rotated = self._rotate(len(data), bounded=bounded)
        return None if rotated is None else (rotated, 1, data)

    def ack(self, workspace_id: str, message_ids: Iterable[str]) -> None:
        """These events left the spool (delivered, or kept by the dead-letter store).

        This runs on the delivery threads, once per batch, while the conversation threads want
        the GIL and this lock (bench_spool.py, the "ack" row): the batch's pending entries are
        taken from its workspace's dict in one call, without a Python step per event, and a batch
        whose events are all in the current segment (the usual case) is settled without looking
        its segments up one by one.
        """
        with self._lock:
            pending = self._pending.get(workspace_id)
            if pending is None:
                return
            if self._extra:
                taken = [self._forget(workspace_id, message_id) for message_id in message_ids]
            else:
                taken = list(map(pending.pop, message_ids, repeat(None)))
            seqs: list[int] = list(filter(None, taken))  # seqs start at 1: only the unknown ids go
            if not seqs:
                return
            current = self._current
            if current is not None and min(seqs) >= current.first_seq:  # all in the segment written last
                current.live -= len(seqs)
                self._settle(current, seqs)
                return
            touched: dict[_Segment, list[int]] = {}
            for seq in seqs:
                segment = self._segment_of(seq)
                if segment is None:
                    continue
                segment.live -= 1
                touched.setdefault(segment, []).append(seq)
            for segment, segment_seqs in touched.items():
                self._settle(segment, segment_seqs)

    @property
    def pending(self) -> int:
        """Events spooled and not acknowledged yet."""
        with self._lock:
            return sum(segment.live for segment in self._segments)

    def owns(self, path: Path) -> bool:
        with self._lock:
            return any(segment.path == path for segment in self._segments)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "durability": self.settings.durability.value,
                "mapped": self._mapped,
                "directory": str(self.directory),
                "files": len(self._segments),
                "bytes": self._bytes,
                "max_bytes": self.settings.max_bytes,
                "pending": sum(segment.live for segment in self._segments),
                "full_refusals": self.full_refusals,
                "write_failures": self.write_failures,
                "compactions": self.compactions,
            }

    def close(self) -> None:
        """Release this process's files: delete the fully acknowledged ones, leave the rest to recovery."""
        self._stop.set()
        self._wake.set()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(5.0)
        with self._lock:
            if self.settings.durability is Durability.MACHINE:
                self._sync(list(self._segments))
            for segment in list(self._segments):
                if segment.live == 0:
                    segment.map.close()
                    _unlink(segment.path)
                else:
                    self._unmap(segment)
                _close(segment.fd)
            self._drop_spare()
            self._want_spare = False
            self._release_deleted()
            left = sum(segment.live for segment in self._segments)
            self._segments, self._starts, self._current = [], [], None
            self._pending.clear()
            self._extra.clear()
            self._bytes = 0
            self._dirty.clear()
            self._to_compact.clear()
            self._worker = None
            self._stop = threading.Event()
        if left:
            logger.warning(
                "Segment spool closed with %d event(s) not delivered; the next QuickBot process (or "
                "`quickbot-segment spool drain`) delivers them from %s",
                left,
                self.directory,
            )

    # --- files --------------------------------------------------------------------------

    def _rotate(self, needed: int, *, bounded: bool = True) -> _Segment | None:
        """A new current file with room for `needed` bytes of records (under the lock); None if the bound forbids it.

        The old current file is cut to its records first, so its unused tail is back within the
        bound; it stays until its events are acknowledged. The new file is the spare the worker
        prepared if there is one, else one created here (OSError if the disk cannot hold it).
        """
        previous = self._current
        if previous is not None:
            self._unmap(previous)
            self._closed_segment(previous)
        spare = self._spare
        if spare is not None and spare.size + needed <= spare.capacity and self._name_spare(spare):
            self._spare = None
            spare.first_seq = self._next_seq
            segment = spare
        else:
            head = self._head()
            capacity = max(self._segment_bytes, len(head) + needed) if self._mapped else 0
            if bounded:
                room = self._max_bytes - self._bytes
                capacity = min(capacity, room)
                if room < len(head) + needed:
                    return None
            self._file_number += 1
            path, fd, mapping = self._create_file(self._file_number, head, capacity)
            segment = _Segment(path, fd, self._next_seq, len(head), capacity, mapping)
            self._bytes += capacity or len(head)
        self._segments.append(segment)
        self._starts.append(segment.first_seq)
        self._current = segment
        if self.settings.durability is Durability.MACHINE:
            self._dirty.add(segment)
            self._sync_directory_later()
        if self._mapped and self._spare is None:
            self._want_spare = True
            self._ensure_worker()
            self._wake.set()
        return segment

    def _name_spare(self, spare: _Segment) -> bool:
        """Give the spare its final name as it becomes current; False (and it is dropped) if it cannot be."""
        final = spare.path.with_name(spare.path.name.removesuffix(TEMP_SUFFIX))
        try:
            os.rename(spare.path, final)
        except OSError as error:
            self._log_error("could not name the next Segment spool file", error)
            self._drop_spare()
            return False
        spare.path = final
        return True

    def _drop_spare(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            self._bytes -= spare.capacity
            spare.map.close()
            _unlink(spare.path)
            _close(spare.fd)

    def _head(self) -> bytes:
        return MAGIC + owner_record(
            {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "version": 1}
        )

    def _create_file(
        self, number: int, head: bytes, capacity: int, *, name: bool = True
    ) -> tuple[Path, int, mmap.mmap]:
        """A locked file that starts with `head`, and its name; preallocated and mapped if `capacity`.

        Created under a temporary name and renamed once locked (see the module docstring); a
        spare keeps the temporary name (`name=False`) until it is used, so that it holds no
        events under a spool file's name, and a process killed meanwhile leaves only a temporary.
        O_APPEND: what is written rather than copied goes to the end of the file, which is the end
        of its records once it is unmapped and cut.
        """
        final = self.directory / f"{self._name}-{number:06d}{FILE_SUFFIX}"
        temporary = final.with_name(final.name + TEMP_SUFFIX)
        fd = os.open(temporary, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        mapping: mmap.mmap | None = None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if capacity:
                os.posix_fallocate(fd, 0, capacity)
                mapping = mmap.mmap(fd, capacity)
                mapping[: len(head)] = head
            else:
                _write_all(fd, head)
            if name:
                os.rename(temporary, final)
        except BaseException:
            if mapping is not None:
                mapping.close()
            _unlink(temporary)
            _close(fd)
            raise
        return (final if name else temporary), fd, mapping or _UNMAPPED

    def _unmap(self, segment: _Segment) -> None:
        """A file stops being the current one (under the lock): unmap it and cut it to its records.

        Its unused preallocated tail leaves the bound, and what it is written from now on
        (acknowledgements) goes by pwrite(2) at `size`. A file that cannot be cut keeps its
        zeros, which readers stop at.
        """
        if segment is self._current:
            self._current = None
            # every seq taken while it was current is one of its events: `append` need not count them
            segment.end_seq = self._next_seq
            segment.closed_at = time.monotonic()
        if segment.map.closed:
            return
        segment.map.close()
        self._bytes -= segment.capacity - segment.size
        segment.capacity = 0
        try:
            os.ftruncate(segment.fd, segment.size)
        except OSError as error:
            self._log_error("could not cut a Segment spool file to its records", error)

    def _write(self, segment: _Segment, data: bytes) -> None:
        """Append records to a segment's file (under the lock); `append` inlines this for events.

        Into the mapping while the file is current and has room; otherwise (a file no longer
        current, an acknowledgement the current one has no room for, which then stops being
        current, or a file the spool does not map) by write(2) holding the GIL (see
        `_append_written`), the file cut back to its last whole record if that fails.
        """
        size = len(data)
        start = segment.size
        end = start + size
        if end <= segment.capacity:
            segment.map[start:end] = data
        else:
            if not segment.map.closed:
                self._unmap(segment)
            written = _write_holding_gil(segment.fd, data, size)
            if written != size:
                self._finish_write(segment, data, written)
            self._bytes += size
        segment.size = end
        if self._machine and segment not in self._dirty:
            self._mark_dirty(segment)

    def _finish_write(self, segment: _Segment, data: bytes, written: int) -> None:
        """After a short (`written` bytes) or failed (-1) write: write the rest, or cut the file back.

        On failure the file is cut back to its last whole record; `os.write` raises the OSError
        with its errno (the libc call does not report its own, see `_libc_write`).
        """
        try:
            _write_all(segment.fd, data, start=max(0, written))
        except OSError:
            self.write_failures += 1
            try:
                os.ftruncate(segment.fd, segment.size)
            except OSError:  # the file cannot be repaired: stop appending to it
                if segment is self._current:
                    self._current = None
                    segment.end_seq = self._next_seq
                    segment.closed_at = time.monotonic()
            raise

    def _mark_dirty(self, segment: _Segment) -> None:
        """`machine` durability: this segment has writes the next group fsync must cover."""
        self._dirty.add(segment)
        self._ensure_worker()
        self._wake.set()

    def _settle(self, segment: _Segment, seqs: list[int]) -> None:
        """After acknowledgements: delete a drained segment, else record them in it."""
        retire = segment is not self._current or segment.size * RETIRE_SHARE >= self.settings.segment_bytes
        if segment.live == 0 and retire:
            self._delete(segment)
            return
        try:
            self._write(segment, ack_record(seqs))
        except OSError as error:
            self._log_error(
                "could not record delivered events in the Segment spool (they may be sent again "
                "after a restart; Segment deduplicates them)",
                error,
            )
        if segment is not self._current:
            self._closed_segment(segment)

    def _closed_segment(self, segment: _Segment) -> None:
        if segment.live == 0:
            self._delete(segment)
        elif segment.live * COMPACT_SHARE <= segment.end_seq - segment.first_seq and segment not in self._to_compact:
            self._to_compact.append(segment)
            self._ensure_worker()
            self._wake.set()

    def _delete(self, segment: _Segment) -> None:
        index = self._segments.index(segment)
        del self._segments[index]
        del self._starts[index]
        if segment is self._current:
            self._current = None
        self._bytes -= max(segment.size, segment.capacity)
        self._dirty.discard(segment)
        _unlink(segment.path)  # now: a killed process must not leave it to be delivered again
        if segment.map.closed:
            _close(segment.fd)
            return
        # Unmapping a file and closing its last descriptor (the kernel then frees its preallocated
        # blocks and pages) took 2-4 ms where a written file's close took 1 (bench_spool.py, the
        # "ack" row): the worker does it, outside the lock the conversations wait for.
        self._unmapped_later.append(segment)
        self._ensure_worker()
        self._wake.set()

    def _release_deleted(self) -> None:
        """Unmap and close the files `_delete` removed (on the worker, or at `close`)."""
        while self._unmapped_later:
            try:
                segment = self._unmapped_later.pop()
            except IndexError:  # taken by the other caller meanwhile
                return
            segment.map.close()
            _close(segment.fd)

    def _segment_of(self, seq: int) -> _Segment | None:
        index = bisect.bisect_right(self._starts, seq) - 1
        return self._segments[index] if index >= 0 else None

    def _pending_of(self, workspace_id: str) -> dict[str, int]:
        pending = self._pending.get(workspace_id)
        if pending is None:
            pending = self._pending[workspace_id] = {}
        return pending

    def _remember(self, workspace_id: str, message_id: str, seq: int) -> None:
        if self._pending_of(workspace_id).setdefault(message_id, seq) is not seq:
            self._extra.setdefault((workspace_id, message_id), []).append(seq)

    def _forget(self, workspace_id: str, message_id: str) -> int | None:
        key = (workspace_id, message_id)
        extra = self._extra.get(key)
        if extra:
            seq = extra.pop(0)
            if not extra:
                del self._extra[key]
            return seq
        return self._pending_of(workspace_id).pop(message_id, None)

    # --- the background worker: group fsync (machine) and compaction ---------------------

    def _ensure_worker(self) -> None:
        if self._worker is not None and self._worker.is_alive():
            return
        worker = threading.Thread(target=self._work, name="quickbot-segment-spool", daemon=True)
        self._worker = worker
        try:
            worker.start()
        except RuntimeError:  # interpreter exit: close() syncs what is left
            self._worker = None

    def _work(self) -> None:
        stop = self._stop
        while not stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            self._release_deleted()
            if self.settings.durability is Durability.MACHINE:
                stop.wait(self.settings.sync_interval)  # gather a group of writes
                with self._lock:
                    dirty, self._dirty = list(self._dirty), set()
                    fds = [os.dup(segment.fd) for segment in dirty]
                self._sync_fds(fds)
            try:
                self._prepare_spare(stop)
            except Exception as error:  # the next rotation creates its file itself
                self._log_error("could not prepare the next Segment spool file", error)
            try:
                self._compact_next()
            except Exception as error:  # the segment stays as it is; retried at its next acknowledgement
                self._log_error("could not compact a Segment spool file", error)

    def _prepare_spare(self, stop: threading.Event) -> None:
        """Create the next file before it is needed, on the worker (bench_spool.py, the execute rows).

        The first store into each page of a preallocated file takes a page fault (about 4 us on
        ext4: the block is converted from preallocated to written), once per eight or so events
        on the callers' threads; populating the spare's pages writable here (MADV_POPULATE_WRITE,
        with the GIL released) takes that cost off them. Only its first 1/RETIRE_SHARE: a current
        file whose events are all delivered is replaced from that size on, which with traffic in
        bursts is most files, and populating pages a file never reaches cost more CPU in all than
        the faults it saved (bench measurements in docs/internals/benchmarks.md). Not in
        `machine` mode: its fsyncs would write the populated zeros to the disk, and each fsync
        leaves the pages to fault again anyway. The spare counts against the bound from the
        moment it is planned; none is made when the bound has no room for it beside the current file.
        """
        with self._lock:
            if not self._want_spare or self._spare is not None or stop.is_set():
                return
            self._want_spare = False
            capacity = self._segment_bytes
            if self._bytes + capacity > self._max_bytes:
                return
            self._file_number += 1
            number = self._file_number
            self._bytes += capacity
        head = self._head()
        try:
            path, fd, mapping = self._create_file(number, head, capacity, name=False)
        except OSError as error:
            with self._lock:
                if self._stop is stop:
                    self._bytes -= capacity
            self._log_error("could not prepare the next Segment spool file", error)
            return
        if not self._machine:
            _populate(mapping, min(capacity, self._segment_bytes // RETIRE_SHARE))
        with self._lock:
            if not stop.is_set():
                self._spare = _Segment(path, fd, 0, len(head), capacity, mapping)
                return
            if self._stop is stop:  # closing: the reservation goes with the file
                self._bytes -= capacity
        mapping.close()
        _unlink(path)
        _close(fd)

    def _sync_directory_later(self) -> None:
        self._ensure_worker()
        self._wake.set()

    def _sync(self, segments: list[_Segment]) -> None:
        self._sync_fds([os.dup(segment.fd) for segment in segments])

    def _sync_fds(self, fds: list[int]) -> None:
        if not fds:
            return
        try:
            for fd in fds:
                os.fsync(fd)
            directory = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory)  # new files' names
            finally:
                os.close(directory)
        except OSError as error:
            self._log_error("could not fsync the Segment spool", error)
        finally:
            for fd in fds:
                _close(fd)

    def _compact_next(self) -> None:
        with self._lock:
            if not self._to_compact:
                return
            segment = self._to_compact[0]
            if segment in self._segments and time.monotonic() - segment.closed_at < COMPACT_AFTER:
                return  # the worker looks again at its next turn (at least once a second)
            del self._to_compact[0]
            if segment not in self._segments:
                return
            path = segment.path
        contents = parse(path.read_bytes())
        candidates: list[tuple[tuple[str, str], int, tuple[str, str, str, str | None], str]] = []
        for event in contents.events:
            credential = contents.credentials.get(event.ref)
            if credential is None:
                continue
            message_id = str(json.loads(event.message_json).get("messageId"))
            record_key = (credential.workspace_id, credential.fingerprint, credential.endpoint, credential.token)
            candidates.append(((credential.workspace_id, message_id), event.seq, record_key, event.message_json))
        with self._lock:
            if segment not in self._segments:
                return
            moved = 0
            for key, seq, record_key, message_json in candidates:
                pending = self._pending_of(key[0])
                if pending.get(key[1]) != seq:
                    continue  # acknowledged meanwhile (or spooled again later: that copy is live)
                placed = self._place(record_key, message_json, bounded=False)
                if placed is None:  # pragma: no cover - an unbounded placement always finds room
                    break
                current, ref, data = placed
                new_seq = self._next_seq
                self._write(current, data)
                current.record_refs[record_key] = ref
                self._next_seq = new_seq + 1
                pending[key[1]] = new_seq
                current.live += 1
                segment.live -= 1
                moved += 1
            self.compactions += 1
            if segment.live == 0 and segment in self._segments:
                self._delete(segment)
        logger.debug("compacted %s: %d live event(s) moved", path.name, moved)

    def _log_error(self, what: str, error: Exception) -> None:
        now = time.monotonic()
        if now - self._last_error_log < ERROR_LOG_INTERVAL:
            return
        self._last_error_log = now
        logger.error("%s in %s: %s: %s", what, self.directory, type(error).__name__, error)

    # --- fork -------------------------------------------------------------------------

    def _forget_after_fork(self) -> None:
        """In a forked child: close the parent's files (so its locks die with it) and start afresh."""
        for segment in [*self._segments, *filter(None, [self._spare]), *self._unmapped_later]:
            segment.map.close()  # the child's copy of the mapping; the parent's stays
            _close(segment.fd)
        self._new_state()


def prepare_directory(directory: Path) -> None:
    """Create the spool directory 0700; refuse one another user owns (they could plant files)."""
    try:
        missing: list[Path] = []
        walk = directory
        while not walk.exists() and walk != walk.parent:
            missing.append(walk)
            walk = walk.parent
        for created in reversed(missing):
            try:
                created.mkdir(mode=0o700)
            except FileExistsError:
                continue
            os.chmod(created, 0o700)
        info = directory.stat()
    except OSError as error:
        raise ConfigurationError(
            f"The Segment spool directory {directory} cannot be used ({error.strerror or error}); set "
            f"{DIR_ENV} to a writable directory, or QUICKBOT_SEGMENT_SPOOL_DURABILITY=off.",
            field=DIR_ENV,
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigurationError(f"{DIR_ENV} must name a directory, but {directory} is not one.", field=DIR_ENV)
    if info.st_uid != os.getuid():
        raise ConfigurationError(
            f"The Segment spool directory {directory} belongs to another user (uid {info.st_uid}); its files hold "
            f"events and sealed credentials, so use a directory of your own ({DIR_ENV}).",
            field=DIR_ENV,
        )
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        os.chmod(directory, 0o700)
        logger.warning(
            "the Segment spool directory %s was open to other users (mode %o); it is now 0700",
            directory,
            stat.S_IMODE(info.st_mode),
        )


_encode: Final = encode_message
_crc32: Final = zlib.crc32
_FRAME_SIZE: Final = FRAME.size
_EVENT_BODY_HEAD: Final = EVENT_BODY_HEAD
_EVENT_HEAD: Final = EVENT_HEAD
_EVENT_HEAD_SIZE: Final = EVENT_HEAD.size


def _libc_madvise() -> Any:
    """madvise(2) through ctypes (CDLL: the GIL is released during the call); None off Linux."""
    if not sys.platform.startswith("linux"):  # pragma: no cover
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):  # pragma: no cover
        return None
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    return madvise


_madvise: Final = _libc_madvise()
MADV_POPULATE_WRITE: Final = 23  # linux/mman.h, Linux 5.14+; older kernels answer EINVAL


def _populate(mapping: mmap.mmap, length: int) -> None:
    """Fault a mapping's pages in writable now; a kernel without MADV_POPULATE_WRITE leaves them to fault later."""
    if _madvise is None:  # pragma: no cover
        return
    anchor = ctypes.c_char.from_buffer(mapping)  # its address; while it lives the mapping cannot be closed
    try:
        _madvise(ctypes.addressof(anchor), length, MADV_POPULATE_WRITE)
    finally:
        del anchor


def _write_all(fd: int, data: bytes, start: int = 0) -> None:
    view = memoryview(data)[start:]
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _libc_write() -> Callable[[int, bytes, int], int]:
    """write(2) called without releasing the GIL (see `_append_written`); `os.write` if there is no libc.

    Called as `write(fd, data, len(data))`; it returns -1 on failure, and the caller finishes
    the write with `os.write`, which retries an interrupted call and raises the errno. No
    `argtypes`: converting the arguments through them cost 0.4 us per event (bench_spool.py,
    the "append" row). Without them ctypes passes the two ints as C ints, widened to the
    register by libffi, and the bytes as a pointer to their buffer; a record is far below
    2 GiB (`MAX_RECORD_BYTES`), so its length fits.
    """
    try:
        libc_write = ctypes.PyDLL(None).write  # PyDLL: the GIL stays held during the call
    except (OSError, AttributeError):  # pragma: no cover - a platform without a C library to load
        return _os_write
    libc_write.restype = ctypes.c_ssize_t
    return cast(Callable[[int, bytes, int], int], libc_write)


def _os_write(fd: int, data: bytes, size: int) -> int:  # pragma: no cover - see _libc_write
    try:
        return os.write(fd, data)
    except OSError:
        return -1  # the caller's os.write raises it again, with its errno


_write_holding_gil: Final = _libc_write()

# Filesystems whose preallocated blocks are written in place, so that a store through a mapping
# never needs space the disk may no longer have (statfs f_type: ext2/3/4, XFS, tmpfs). On a
# copy-on-write filesystem (btrfs, ZFS, bcachefs) every write needs new blocks, and a store that
# cannot get them is killed with SIGBUS instead of refused with ENOSPC.
_MAPPABLE_FILESYSTEMS: Final = frozenset({0xEF53, 0x58465342, 0x01021994})


def _maps_safely(directory: Path) -> bool:
    """Whether the spool writes through mappings in `directory`; False (write(2)) when unsure."""
    if not sys.platform.startswith("linux"):  # pragma: no cover
        return False
    try:
        statfs = ctypes.CDLL(None, use_errno=True).statfs
    except (OSError, AttributeError):  # pragma: no cover
        return False
    buffer = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    if statfs(os.fsencode(directory), buffer) != 0:
        return False
    return ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF in _MAPPABLE_FILESYSTEMS  # f_type comes first


_UNMAPPED: Final = mmap.mmap(-1, 1)  # the `map` of a file written with write(2) only: closed, like an unmapped file's
_UNMAPPED.close()


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


# Every spool of this process, so a fork can reset them all (weak: a dropped spool just goes).
_SPOOLS: weakref.WeakSet[Spool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for spool in list(_SPOOLS):
        spool._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
