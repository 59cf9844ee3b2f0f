"""The spool: what `execute` queued is on disk until Segment has it, and comes back after a crash.

Real files, real locks, real processes, the real block against the embedded collector; the
only thing made up is a "dead process", which is a spool closed without its events delivered
(exactly what a killed process leaves: its files, unlocked). The SIGKILL test is
test_spool_kill.py.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import WORKSPACE, WRITE_KEY

from quickbot_segment_plugin.cli import main as cli_main
from quickbot_segment_plugin.core.errors import ConfigurationError
from quickbot_segment_plugin.credentials.keyring import KeyRing
from quickbot_segment_plugin.deadletters import DeadLetterRecorder, DeadLetterStore, beside_store
from quickbot_segment_plugin.delivery import spool as spool_module
from quickbot_segment_plugin.delivery.pool import DeliveryPool, DeliverySettings
from quickbot_segment_plugin.delivery.recovery import claim_orphans, status
from quickbot_segment_plugin.delivery.spool import TEMP_SUFFIX, Spool, _maps_safely
from quickbot_segment_plugin.delivery.spool_format import (
    FILE_SUFFIX,
    MAGIC,
    credential_record,
    event_record,
    owner_record,
    parse,
)
from quickbot_segment_plugin.delivery.spool_settings import Durability, SpoolSettings

OPTIONS = {"action": "track", "event": "Spooled", "userId": "{{user}}"}


def _context(token: str, n: int) -> dict[str, Any]:
    return {"workspace_id": WORKSPACE, "variables": {"user": f"u{n}"}, "credentials": token, "execution_id": f"e{n}"}


@pytest.fixture
def mappable(tmp_path: Path) -> None:
    """Tests of the mapped files need a filesystem the spool maps (ext4, XFS, tmpfs)."""
    if not _maps_safely(tmp_path):
        pytest.skip("the spool does not map files on this filesystem: it writes them (file_mode 'written')")


@pytest.fixture(params=["mapped", "written"])
def file_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Both ways the spool writes: through a mapping, and with write(2) where it does not map files."""
    if request.param == "mapped":
        request.getfixturevalue("mappable")
    else:
        from quickbot_segment_plugin.delivery import spool as spool_module

        monkeypatch.setattr(spool_module, "_maps_safely", lambda directory: False)
    return str(request.param)


def _spool_files(directory: Path) -> list[Path]:
    return sorted(path for path in directory.iterdir() if path.name.endswith(FILE_SUFFIX))


def _wait(condition: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def _leave_orphan(directory: Path, token: str, count: int, prefix: str = "o") -> list[str]:
    """What a killed process leaves: a spool file with `count` undelivered events, unlocked."""
    spool = Spool(SpoolSettings(directory))
    ids = [f"{prefix}-{n}" for n in range(count)]
    for message_id in ids:
        message = {
            "type": "track",
            "event": "Recovered",
            "userId": "u",
            "messageId": message_id,
            "timestamp": "2024-05-01T12:00:00.000+00:00",
            "context": {},
            "integrations": {},
            "properties": {},
        }
        assert spool.append(WORKSPACE, WRITE_KEY, "https://api.segment.io", token, message_id, json.dumps(message))
    spool.close()
    return ids


# --- the file format -------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    messages=st.lists(st.text(min_size=0, max_size=60), min_size=1, max_size=12),
    cut=st.integers(min_value=0, max_value=10_000),
)
def test_a_torn_tail_loses_only_the_record_it_cut(messages: list[str], cut: int) -> None:
    head = MAGIC + owner_record({"pid": 1}) + credential_record(1, "ws", "sha256:x", "e", "tok")
    records = [event_record(n + 1, 1, json.dumps({"messageId": text})) for n, text in enumerate(messages)]
    data = head + b"".join(records)
    cut = min(cut, len(data))
    contents = parse(data[:cut])
    whole = 0
    end = len(head)
    for record in records:
        end += len(record)
        if end <= cut:
            whole += 1
    expected = [json.dumps({"messageId": text}) for text in messages[:whole]] if cut >= len(head) else []
    assert [event.message_json for event in contents.events] == expected
    assert contents.readable_bytes <= cut


@settings(max_examples=60, deadline=None)
@given(position=st.integers(min_value=len(MAGIC), max_value=400), flip=st.integers(min_value=1, max_value=255))
def test_a_damaged_byte_is_never_read_as_an_event(position: int, flip: int) -> None:
    records = [event_record(n, 1, json.dumps({"messageId": f"m{n}", "pad": "x" * 20})) for n in range(1, 8)]
    data = bytearray(MAGIC + credential_record(1, "ws", "sha256:x", "e", "tok") + b"".join(records))
    position = min(position, len(data) - 1)
    data[position] ^= flip
    contents = parse(bytes(data))
    for event in contents.events:
        assert json.loads(event.message_json)["messageId"] == f"m{event.seq}"
    assert contents.problem  # the damage is reported, never skipped silently


def test_zeros_end_the_records_and_data_after_them_is_damage() -> None:
    """A killed writer's preallocated file ends in zeros: the end of its records, not a problem."""
    records = [event_record(n, 1, json.dumps({"messageId": f"m{n}"})) for n in range(1, 6)]
    data = MAGIC + credential_record(1, "ws", "sha256:x", "e", "tok") + b"".join(records)
    whole = parse(data)
    padded = parse(data + bytes(8192))
    assert padded.events == whole.events and not padded.problem and padded.readable_bytes == len(data)
    torn = parse(data + records[0][:-3] + bytes(100))  # a record cut short, then the zeros
    assert torn.events == whole.events and "checksum" in torn.problem
    damaged = parse(data + bytes(64) + records[0] + bytes(64))  # zeros where a record should have been
    assert damaged.events == whole.events and "zero frame" in damaged.problem


def test_bytes_and_text_are_spooled_as_the_same_records(file_mode: str, tmp_path: Path) -> None:
    texts = [
        json.dumps({"messageId": "m1", "name": "Zoë 🎉"}, ensure_ascii=False),
        json.dumps({"messageId": "m2", "raw": "\ud800"}, ensure_ascii=False),  # a lone surrogate: text only
        json.dumps({"messageId": "m3"}),
    ]
    as_bytes, as_text = Spool(SpoolSettings(tmp_path / "b")), Spool(SpoolSettings(tmp_path / "t"))
    for n, text in enumerate(texts, start=1):
        assert as_text.append(WORKSPACE, WRITE_KEY, "e", "tok", f"m{n}", text)
        assert as_bytes.append(WORKSPACE, WRITE_KEY, "e", "tok", f"m{n}", text.encode("utf-8", "surrogatepass"))
    (text_file,), (bytes_file,) = _spool_files(tmp_path / "t"), _spool_files(tmp_path / "b")
    text_data, bytes_data = text_file.read_bytes(), bytes_file.read_bytes()
    # the current file is preallocated: its records, then zeros
    text_data, bytes_data = text_data[: parse(text_data).readable_bytes], bytes_data[: parse(bytes_data).readable_bytes]
    # after the owner record (start times differ): the credentials, then each event as `event_record`
    # frames it (the spool frames it inline, for speed)
    fingerprint = parse(text_data).credentials[1].fingerprint
    expected = credential_record(1, WORKSPACE, fingerprint, "e", "tok") + b"".join(
        event_record(n, 1, text) for n, text in enumerate(texts, start=1)
    )
    assert text_data.endswith(expected) and bytes_data.endswith(expected)
    assert [event.message_json for event in parse(bytes_data).events] == texts
    as_text.close()
    as_bytes.close()


def test_a_short_write_is_completed_and_a_failed_one_cut_back(file_mode: str, monkeypatch: Any, tmp_path: Path) -> None:
    """What goes by write(2) survives a full disk: acknowledgements in a file no longer current, and
    every record where files are not mapped."""
    from quickbot_segment_plugin.delivery import spool as spool_module

    spool = Spool(SpoolSettings(tmp_path, max_bytes=1 << 20, segment_bytes=2048))
    for n in range(30):
        assert spool.append(
            WORKSPACE, WRITE_KEY, "e", "tok", f"m{n}", json.dumps({"messageId": f"m{n}", "pad": "x" * 60})
        )
    path = _spool_files(tmp_path)[0]  # full, so no longer current
    real_write, real_os_write = spool_module._write_holding_gil, os.write

    def half(fd: int, data: bytes, size: int) -> int:  # what write(2) may do when the disk fills up
        return int(real_write(fd, data[: size // 2], size // 2))

    monkeypatch.setattr(spool_module, "_write_holding_gil", half)
    spool.ack(WORKSPACE, ["m1"])
    contents = parse(path.read_bytes())
    assert contents.acked == {2} and not contents.problem

    def failing(fd: int, data: bytes, size: int) -> int:
        os.write(fd, data[:7])  # a torn start, then the disk refuses the rest
        monkeypatch.setattr(spool_module.os, "write", broken_write)
        return 7

    def broken_write(fd: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module, "_write_holding_gil", failing)
    spool.ack(WORKSPACE, ["m2"])  # logged, not raised: the acknowledgement is lost, the file stays whole
    monkeypatch.setattr(spool_module.os, "write", real_os_write)
    monkeypatch.setattr(spool_module, "_write_holding_gil", real_write)
    assert spool.write_failures == 1
    contents = parse(path.read_bytes())
    assert contents.acked == {2} and not contents.problem and contents.readable_bytes == contents.size
    spool.ack(WORKSPACE, ["m3"])
    assert parse(path.read_bytes()).acked == {2, 4}
    spool.close()
    if file_mode == "written":  # events are written too: a failed one is refused and cut off
        events = Spool(SpoolSettings(tmp_path / "events"))
        assert events.append(WORKSPACE, WRITE_KEY, "e", "tok", "e1", b'{"messageId": "e1"}')
        monkeypatch.setattr(spool_module, "_write_holding_gil", failing)
        with pytest.raises(OSError, match="No space"):
            events.append(WORKSPACE, WRITE_KEY, "e", "tok", "e2", b'{"messageId": "e2"}')
        monkeypatch.setattr(spool_module.os, "write", real_os_write)
        monkeypatch.setattr(spool_module, "_write_holding_gil", real_write)
        assert events.write_failures == 1
        assert events.append(WORKSPACE, WRITE_KEY, "e", "tok", "e3", b'{"messageId": "e3"}')
        (events_file,) = _spool_files(tmp_path / "events")
        contents = parse(events_file.read_bytes())
        assert not contents.problem
        assert [json.loads(event.message_json)["messageId"] for event in contents.events] == ["e1", "e3"]
        events.close()


def test_a_message_id_spooled_twice_is_acknowledged_once_per_copy(file_mode: str, tmp_path: Path) -> None:
    spool = Spool(SpoolSettings(tmp_path))
    for message_id in ("a", "b", "a"):  # "a" again, before its first copy was delivered
        assert spool.append(WORKSPACE, WRITE_KEY, "e", "tok", message_id, json.dumps({"messageId": message_id}))
    assert spool.append("other-workspace", WRITE_KEY, "e", "tok", "a", b'{"messageId": "a"}')
    spool.ack(WORKSPACE, ["a", "b"])
    (path,) = _spool_files(tmp_path)
    acked = parse(path.read_bytes()).acked
    assert 2 in acked and len(acked & {1, 3}) == 1 and spool.pending == 2  # "b", and one copy of "a"
    spool.ack(WORKSPACE, ["a"])
    assert sorted(parse(path.read_bytes()).acked) == [1, 2, 3] and spool.pending == 1
    spool.ack(WORKSPACE, ["a"])  # nothing of this workspace left under that id
    assert spool.pending == 1
    spool.ack("other-workspace", ["a"])
    assert spool.pending == 0
    spool.close()


# --- settings --------------------------------------------------------------------------------


def test_settings_errors_name_the_variable(tmp_path: Path) -> None:
    beside = tmp_path / "beside"
    with pytest.raises(ConfigurationError, match="QUICKBOT_SEGMENT_SPOOL_DURABILITY='disk': input should be"):
        SpoolSettings.from_env({"QUICKBOT_SEGMENT_SPOOL_DURABILITY": "disk"}, default_directory=beside)
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ConfigurationError, match="QUICKBOT_SEGMENT_SPOOL_DIR must name a directory"):
        SpoolSettings.from_env({"QUICKBOT_SEGMENT_SPOOL_DIR": str(a_file)}, default_directory=beside)
    environ = {"QUICKBOT_SEGMENT_DEAD_LETTER_PATH": str(tmp_path / "dl" / "x.sqlite3")}
    default = SpoolSettings.from_env(environ, default_directory=beside_store("spool", environ))
    assert default.directory == tmp_path / "dl" / "spool"
    assert default.durability is Durability.PROCESS


# --- through the block -----------------------------------------------------------------------


def test_queued_events_are_spooled_privately_without_the_write_key_and_leave_once_delivered(
    block: Any, token: str, local_segment: Any, tmp_path: Path
) -> None:
    local_segment.latency = 1.0  # the batch is in flight long enough to look at the spool
    for n in range(5):
        assert block.execute(OPTIONS, _context(token, n))["status"] == "queued"
    directory = tmp_path / "spool"
    files = _spool_files(directory)
    assert files, "nothing was spooled before execute answered queued"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    data = b""
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        data += path.read_bytes()
    contents = parse(data)
    assert len(contents.events) == 5
    assert [credential.token for credential in contents.credentials.values()] == [token]
    for encoded in (WRITE_KEY.encode(), base64.b64encode(WRITE_KEY.encode()), WRITE_KEY.encode().hex().encode()):
        assert encoded not in data
    assert block.pool().flush(20)
    assert local_segment.wait_for(5, 10)
    assert _wait(lambda: block.pool().spool.pending == 0)


def test_a_dead_process_spool_is_delivered_by_the_next_first_execute(
    block: Any, token: str, local_segment: Any, tmp_path: Path
) -> None:
    directory = tmp_path / "spool"
    ids = _leave_orphan(directory, token, 30)
    assert [entry.owner for entry in status(directory)] == ["orphan"]
    assert block.execute(OPTIONS, _context(token, 0))["status"] == "queued"
    assert local_segment.wait_for(31, 20)
    received = {row["message_id"] for row in local_segment.events(limit=100)}
    assert set(ids) <= received
    assert _wait(lambda: not [entry for entry in status(directory) if entry.owner == "orphan"])


def test_recovery_needs_the_operators_keys_and_leaves_the_file_without_them(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    keyring = KeyRing.from_env({"QUICKBOT_ENCRYPTION_KEYS": _key()})
    _leave_orphan(directory, keyring.seal({"writeKey": WRITE_KEY}, WORKSPACE), 3)
    pool = DeliveryPool(DeliverySettings(), spool=Spool(SpoolSettings(directory)))
    from quickbot_segment_plugin.delivery.recovery import Recovery

    def no_keys() -> KeyRing:
        raise ConfigurationError("QUICKBOT_ENCRYPTION_KEYS is not set.", field="QUICKBOT_ENCRYPTION_KEYS")

    report = Recovery(pool, no_keys).run()
    pool.shutdown(5)
    assert report.files_left == 1 and report.events_requeued == 0
    assert [entry.live for entry in status(directory)] == [3]  # still there for a process with keys


def _key() -> str:
    from quickbot_segment_plugin.credentials.keyring import generate_key

    return generate_key()


def test_a_full_spool_dead_letters_like_a_full_queue(file_mode: str, collector: Any, tmp_path: Path) -> None:
    collector.latency = 2.0  # nothing is acknowledged while the test fills the spool
    store = DeadLetterStore(tmp_path / "dl.sqlite3")
    spool = Spool(SpoolSettings(tmp_path / "spool", max_bytes=8192, segment_bytes=4096))
    pool = DeliveryPool(DeliverySettings(flush_interval=0.05), DeadLetterRecorder(store), spool=spool)
    outcomes = [
        pool.enqueue(
            WORKSPACE, WRITE_KEY, collector.url, {"type": "track", "event": "E", "userId": "u", "messageId": f"m{n}"}
        )
        for n in range(60)
    ]
    refused = [outcome for outcome in outcomes if not outcome.accepted]
    assert refused and {outcome.reason for outcome in refused} == {"queue_full"}
    assert sum(spool_file.stat().st_size for spool_file in _spool_files(tmp_path / "spool")) <= 8192
    rows = store.list(limit=100)
    assert len(rows) == len(refused)
    assert {row.reason for row in rows} == {"queue_full"}
    assert all("spool full" in row.detail for row in rows)
    assert pool.stats()["spool"]["full_refusals"] == len(refused)
    assert pool.flush(30)
    assert _wait(lambda: spool.pending == 0)
    assert pool.enqueue(WORKSPACE, WRITE_KEY, collector.url, {"type": "track", "event": "E", "userId": "u"}).accepted
    pool.shutdown(10)
    assert not _spool_files(tmp_path / "spool")


def test_a_closed_segment_whose_last_events_arrive_soon_after_is_not_compacted(file_mode: str, tmp_path: Path) -> None:
    """The events still live when a file is closed are, nearly always, batches on their way: they are
    acknowledged within moments, and compacting the file (reading and parsing all of it) would
    be work thrown away, which cost a tenth of the process's CPU per event."""
    spool = Spool(SpoolSettings(tmp_path, max_bytes=1 << 20, segment_bytes=2048))
    for n in range(60):
        payload = json.dumps({"type": "track", "messageId": f"m{n}", "pad": "x" * 100})
        assert spool.append(WORKSPACE, WRITE_KEY, "e", "tok", f"m{n}", payload)
    first = _spool_files(tmp_path)[0]
    spool.ack(WORKSPACE, [f"m{n}" for n in range(1, 60)])  # the first file is left with one live event
    time.sleep(0.5)  # the worker's turn, had it been woken for a compaction
    assert spool.compactions == 0 and first.exists()
    spool.ack(WORKSPACE, ["m0"])  # the last batch arrives
    assert not first.exists() and spool.compactions == 0 and spool.pending == 0
    spool.close()


def test_a_segment_kept_alive_by_a_straggler_is_compacted(
    file_mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "COMPACT_AFTER", 0.2)  # a straggler: still there after this long
    spool = Spool(SpoolSettings(tmp_path, max_bytes=1 << 20, segment_bytes=2048))
    for n in range(60):
        payload = json.dumps({"type": "track", "messageId": f"m{n}", "pad": "x" * 100})
        assert spool.append(WORKSPACE, WRITE_KEY, "e", "tok", f"m{n}", payload)
    first = _spool_files(tmp_path)[0]
    assert len(_spool_files(tmp_path)) > 2
    spool.ack(WORKSPACE, [f"m{n}" for n in range(1, 60)])  # all but m0, the straggler in the first file
    assert _wait(lambda: not first.exists(), 10), "the first segment was not compacted"
    assert spool.compactions >= 1
    # m0 survives, exactly once, in the files a recovering process would read
    live = [event for path in _spool_files(tmp_path) for event in parse(path.read_bytes()).live()]
    assert len(live) == 1 and spool.pending == 1
    spool.ack(WORKSPACE, ["m0"])  # its new place is what the acknowledgement reaches
    assert spool.pending == 0
    spool.close()
    assert not _spool_files(tmp_path)


def test_machine_durability_delivers_and_cleans_up(file_mode: str, collector: Any, tmp_path: Path) -> None:
    spool = Spool(SpoolSettings(tmp_path / "spool", Durability.MACHINE, sync_interval=0.002))
    pool = DeliveryPool(DeliverySettings(flush_interval=0.05), spool=spool)
    for n in range(20):
        message = {"type": "track", "event": "E", "userId": "u", "messageId": f"m{n}"}
        assert pool.enqueue(WORKSPACE, WRITE_KEY, collector.url, message).accepted
    assert collector.wait_for(20, 10)
    assert _wait(lambda: spool.pending == 0)
    pool.shutdown(5)
    assert not _spool_files(tmp_path / "spool")


# --- two processes -----------------------------------------------------------------------------

CLAIMER = r"""
import sys, time
from pathlib import Path
from quickbot_segment_plugin.delivery.recovery import claim_orphans
directory, go = Path(sys.argv[1]), Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
held = []
for claimed in claim_orphans(directory):
    held.append(claimed)  # held (locked) until this process ends
    time.sleep(0.002)
print("\n".join(c.path.name for c in held), flush=True)
time.sleep(0.5)
"""


def test_two_processes_never_claim_the_same_file(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    for n in range(40):
        _leave_orphan(directory, "token", 1, prefix=f"f{n}")
    names = {path.name for path in _spool_files(directory)}
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    claimers = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(directory), str(go)], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    time.sleep(0.5)
    go.write_text("")
    claimed = [set(filter(None, child.communicate(timeout=60)[0].splitlines())) for child in claimers]
    assert not claimed[0] & claimed[1], "a file was claimed by both processes"
    assert claimed[0] | claimed[1] == names
    assert list(claim_orphans(directory)) != []  # released again when the claimers ended


def test_a_live_process_files_are_not_claimed(tmp_path: Path) -> None:
    spool = Spool(SpoolSettings(tmp_path))
    assert spool.append(WORKSPACE, WRITE_KEY, "e", "tok", "m1", "{}")
    assert list(claim_orphans(tmp_path)) == []  # another open of the file: the lock says "taken"
    assert [entry.owner for entry in status(tmp_path)] == ["running"]
    spool.ack(WORKSPACE, ["m1"])
    spool.close()


KILLED_WRITER = r"""
import os, signal, sys
from pathlib import Path
from quickbot_segment_plugin.delivery.spool import Spool
from quickbot_segment_plugin.delivery.spool_settings import SpoolSettings
directory, token, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
spool = Spool(SpoolSettings(directory))
for n in range(count):
    message = '{"type": "track", "event": "Killed", "userId": "u", "messageId": "k-%d", "properties": {}}' % n
    assert spool.append(sys.argv[4], sys.argv[5], "https://api.segment.io", token, f"k-{n}", message)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writers_preallocated_file_is_read_to_its_zeros_and_drained(
    mappable: None, local_segment: Any, token: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "spool"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(directory), token, "30", WORKSPACE, WRITE_KEY],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert run.returncode == -9, run.stderr
    (path,) = _spool_files(directory)
    data = path.read_bytes()
    assert data.endswith(bytes(4096)), "the file was not preallocated"
    contents = parse(data)
    assert len(contents.live()) == 30 and not contents.problem
    assert [(entry.owner, entry.live, entry.problem) for entry in status(directory)] == [("orphan", 30, "")]
    (claimed,) = claim_orphans(directory)
    try:
        seqs = [event.seq for event in claimed.read().live()]
        claimed.acknowledge(seqs[:10])  # after the records, not after the zeros
    finally:
        claimed.release()
    assert [entry.live for entry in status(directory)] == [20]
    assert cli_main(["spool", "drain", "--dir", str(directory), "--timeout", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["events_requeued"] == 20
    received = {row["message_id"] for row in local_segment.events(limit=100)}
    assert received >= {f"k-{n}" for n in range(10, 30)}
    assert not _spool_files(directory)


def test_a_file_is_preallocated_while_current_and_cut_to_its_records_after(mappable: None, tmp_path: Path) -> None:
    spool = Spool(SpoolSettings(tmp_path, max_bytes=1 << 20, segment_bytes=4096))
    for n in range(60):
        assert spool.append(
            WORKSPACE, WRITE_KEY, "e", "tok", f"m{n}", json.dumps({"messageId": f"m{n}", "pad": "x" * 80})
        )
    *closed, current = _spool_files(tmp_path)
    assert closed and current.stat().st_size == 4096
    for path in closed:  # rotated: cut to its records, no zeros left on the disk
        data = path.read_bytes()
        assert parse(data).readable_bytes == len(data) and not parse(data).problem
    # the bound counts the disk the files hold: the current one preallocated, the spare (a temporary
    # until it is used) as soon as it is planned
    assert _wait(lambda: spool.stats()["bytes"] == sum(path.stat().st_size for path in tmp_path.iterdir()))
    spool.close()  # events left for recovery: the current file is cut too
    files = _spool_files(tmp_path)
    assert all(parse(path.read_bytes()).readable_bytes == path.stat().st_size for path in files)
    assert sum(len(parse(path.read_bytes()).live()) for path in files) == 60


def test_the_next_file_is_prepared_ahead_and_named_only_when_it_is_used(mappable: None, tmp_path: Path) -> None:
    spool = Spool(SpoolSettings(tmp_path, max_bytes=1 << 20, segment_bytes=4096))

    def append(n: int) -> None:
        assert spool.append(
            WORKSPACE, WRITE_KEY, "e", "tok", f"m{n}", json.dumps({"messageId": f"m{n}", "pad": "x" * 80})
        )

    append(0)
    assert _wait(lambda: len(list(tmp_path.glob("*" + TEMP_SUFFIX))) == 1), "no spare file was prepared"
    (spare,) = tmp_path.glob("*" + TEMP_SUFFIX)
    spare_inode = spare.stat().st_ino
    assert [entry.owner for entry in status(tmp_path)] == ["running"]  # a spare is no spool file yet
    n = 1
    while len(_spool_files(tmp_path)) < 2:
        append(n)
        n += 1
    current = _spool_files(tmp_path)[-1]
    assert current.stat().st_ino == spare_inode, "the rotation did not use the spare"
    assert [json.loads(event.message_json)["messageId"] for event in parse(current.read_bytes()).events] == [
        f"m{n - 1}"
    ]
    assert _wait(lambda: len(list(tmp_path.glob("*" + TEMP_SUFFIX))) == 1), "no spare after the first was used"
    spool.close()
    assert not list(tmp_path.glob("*" + TEMP_SUFFIX)), "close left the spare behind"


def test_files_are_mapped_only_where_preallocated_space_is_kept(tmp_path: Path) -> None:
    assert not _maps_safely(Path("/proc"))  # not a filesystem the spool knows to keep the space
    assert not _maps_safely(tmp_path / "missing")  # unsure: written


def test_where_files_are_not_mapped_they_are_written_without_preallocation(monkeypatch: Any, tmp_path: Path) -> None:
    from quickbot_segment_plugin.delivery import spool as spool_module

    monkeypatch.setattr(spool_module, "_maps_safely", lambda directory: False)
    spool = Spool(SpoolSettings(tmp_path, max_bytes=1 << 20, segment_bytes=4096))
    for n in range(60):
        assert spool.append(
            WORKSPACE, WRITE_KEY, "e", "tok", f"m{n}", json.dumps({"messageId": f"m{n}", "pad": "x" * 80})
        )
    files = _spool_files(tmp_path)
    assert len(files) > 1 and spool.stats()["mapped"] is False
    for path in files:  # no zeros anywhere, the current file included
        data = path.read_bytes()
        assert parse(data).readable_bytes == len(data) and not parse(data).problem
    assert spool.stats()["bytes"] == sum(path.stat().st_size for path in files)
    assert not list(tmp_path.glob("*" + TEMP_SUFFIX))  # no spare either
    spool.close()


def _open_descriptors_of(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(str(path))
    return count


def test_a_drained_file_is_gone_at_once_and_released_by_the_worker(mappable: None, tmp_path: Path) -> None:
    spool = Spool(SpoolSettings(tmp_path, max_bytes=1 << 20, segment_bytes=4096))
    ids = [f"m{n}" for n in range(10)]
    for message_id in ids:  # past an eighth of the file: drained, it is retired
        assert spool.append(
            WORKSPACE, WRITE_KEY, "e", "tok", message_id, json.dumps({"messageId": message_id, "pad": "x" * 80})
        )
    (path,) = _spool_files(tmp_path)
    spool.ack(WORKSPACE, ids)
    assert not path.exists(), "a drained file outlived its last acknowledgement"
    assert _wait(lambda: _open_descriptors_of(path) == 0), "the worker did not unmap and close it"
    spool.close()


def test_a_new_file_the_disk_cannot_hold_refuses_the_event(monkeypatch: Any, collector: Any, tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path / "dl.sqlite3")
    spool = Spool(SpoolSettings(tmp_path / "spool"))
    pool = DeliveryPool(DeliverySettings(flush_interval=0.05), DeadLetterRecorder(store), spool=spool)

    def no_room(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_room)
    message = {"type": "track", "event": "E", "userId": "u", "messageId": "m0"}
    outcome = pool.enqueue(WORKSPACE, WRITE_KEY, collector.url, message)
    assert not outcome.accepted and outcome.reason == "spool_failed"
    assert not list((tmp_path / "spool").iterdir()), "a file (or its temporary) was left behind"
    (row,) = store.list(limit=10)
    assert row.reason == "spool_failed" and "No space left" in row.detail
    monkeypatch.undo()
    assert pool.enqueue(WORKSPACE, WRITE_KEY, collector.url, {**message, "messageId": "m1"}).accepted
    pool.shutdown(10)


FORK_WRITES = r"""
import json, os, sys
from pathlib import Path
from quickbot_segment_plugin.delivery.spool import Spool
from quickbot_segment_plugin.delivery.spool_settings import SpoolSettings
spool = Spool(SpoolSettings(Path(sys.argv[1])))
def append(message_id):
    assert spool.append("ws", "forkTestWriteKey0123", "e", "sealed", message_id, json.dumps({"messageId": message_id}))
append("parent-1")
child = os.fork()
if child == 0:
    append("child-1")
    os._exit(0)  # as if killed: nothing closed
os.waitpid(child, 0)
append("parent-2")
print(os.getpid(), child, flush=True)
os._exit(0)
"""


def test_a_forked_child_writes_its_own_file_never_the_parents_mapping(mappable: None, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run(
        [sys.executable, "-c", FORK_WRITES, str(tmp_path)], capture_output=True, text=True, env=env, timeout=30
    )
    parent, child = map(int, run.stdout.split())
    by_pid: dict[int, list[tuple[int, str]]] = {}
    for path in _spool_files(tmp_path):
        contents = parse(path.read_bytes())
        assert not contents.problem
        events = [(event.seq, json.loads(event.message_json)["messageId"]) for event in contents.events]
        by_pid.setdefault(contents.owner["pid"], []).extend(events)
    assert by_pid == {parent: [(1, "parent-1"), (2, "parent-2")], child: [(1, "child-1")]}


# --- the command line ----------------------------------------------------------------------------


def test_spool_status_and_drain(
    local_segment: Any, token: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "spool"
    ids = _leave_orphan(directory, token, 12)
    assert cli_main(["spool", "status", "--dir", str(directory)]) == 0
    shown = capsys.readouterr().out
    assert "orphan" in shown and "12 left by stopped processes" in shown
    assert token not in shown and WRITE_KEY not in shown
    assert cli_main(["spool", "drain", "--dir", str(directory), "--timeout", "20", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files_claimed"] == 1 and report["events_requeued"] == 12
    assert {row["message_id"] for row in local_segment.events(limit=100)} >= set(ids)
    assert cli_main(["spool", "status", "--dir", str(directory), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["orphan_events"] == 0


# --- a disk that refuses writes ------------------------------------------------------------------

DISK_FULL = r"""
import json, resource, signal, sys
from pathlib import Path
from quickbot_segment_plugin.delivery import DeliveryPool, DeliverySettings
from quickbot_segment_plugin.delivery.spool import Spool
from quickbot_segment_plugin.delivery.spool_format import parse
from quickbot_segment_plugin.delivery.spool_settings import SpoolSettings
directory, url = Path(sys.argv[1]), sys.argv[2]
lost = []
spool = Spool(SpoolSettings(directory, segment_bytes=65536))
pool = DeliveryPool(DeliverySettings(), lost.append, spool=spool)
def send(n):
    message = {"type": "track", "event": "E", "userId": "u", "messageId": f"m{n}", "properties": {"pad": "x" * 6000}}
    return pool.enqueue("ws", "diskTestWriteKey0123", url, message, token="sealed")
assert send(0).accepted
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file past the limit fails with EFBIG instead of killing us
# a file (64 KB, preallocated) holds about ten events: the first, and the spare if it was made in
# time; then the "disk" has no room for another
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
outcomes = [send(n) for n in range(1, 40)]
paths = sorted(directory.glob("*.qbspool"))
contents = [parse(path.read_bytes()) for path in paths]  # before exit: shutdown dead-letters the rest and deletes them
print(json.dumps({
    "spooled": sum(len(c.events) for c in contents),
    "problem": "; ".join(filter(None, (c.problem for c in contents))),
    "accepted": 1 + sum(o.accepted for o in outcomes),
    "reasons": sorted({o.reason for o in outcomes if not o.accepted}),
    "lost": [(u.reason, u.count, u.detail) for u in lost],
}), flush=True)
"""


def test_a_failing_disk_refuses_the_event_and_leaves_a_readable_spool(collector: Any, tmp_path: Path) -> None:
    collector.latency = 5.0  # nothing is delivered (and acknowledged) while the child writes
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(tmp_path / "spool"), collector.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert run.returncode in (0, -9, 137) or run.stdout, run.stderr
    report = json.loads(run.stdout.splitlines()[0])
    assert 1 < report["accepted"] < 40
    assert report["reasons"] == ["spool_failed"]
    assert {reason for reason, _, _ in report["lost"]} == {"spool_failed"}
    assert all("could not be written" in detail for _, _, detail in report["lost"])
    assert report["problem"] == "", "a failed write left a torn record behind"
    assert report["spooled"] == report["accepted"]


# --- fork ----------------------------------------------------------------------------------------

FORKING_PARENT = r"""
import os, sys, time
from pathlib import Path
from quickbot_segment_plugin.delivery.spool import Spool
from quickbot_segment_plugin.delivery.spool_settings import SpoolSettings
spool = Spool(SpoolSettings(Path(sys.argv[1])))
assert spool.append("ws", "forkTestWriteKey0123", "e", "sealed", "m1", '{"messageId": "m1"}')
if os.fork() == 0:  # a preforking server's worker: lives on after its parent
    quiet = os.open(os.devnull, os.O_RDWR)
    os.dup2(quiet, 1)  # so the test does not wait for the child's end of the pipes
    os.dup2(quiet, 2)
    time.sleep(3)
    os._exit(0)
print("forked", flush=True)
os._exit(0)  # the parent dies without closing anything, as under kill -9
"""


def test_a_forked_child_does_not_keep_its_dead_parents_files_locked(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run(
        [sys.executable, "-c", FORKING_PARENT, str(tmp_path)], capture_output=True, text=True, env=env, timeout=30
    )
    assert run.stdout.strip() == "forked", run.stderr
    claimed = list(claim_orphans(tmp_path))  # while the child still runs
    try:
        assert len(claimed) == 1, "the parent's spool file is still locked by its forked child"
        assert [event.seq for event in claimed[0].read().live()] == [1]
    finally:
        for orphan in claimed:
            orphan.release()


def test_a_file_that_is_not_a_spool_file_is_left_alone(block: Any, token: str, tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    directory.mkdir(mode=0o700)
    stranger = directory / f"9-stranger-000001{FILE_SUFFIX}"
    stranger.write_bytes(b"QBSPOOL9 a later format, or somebody else's file")
    stranger.chmod(0o600)
    assert block.execute(OPTIONS, _context(token, 0))["status"] == "queued"
    assert block.pool().flush(10)
    time.sleep(0.5)  # recovery has looked at it by now
    assert stranger.read_bytes().startswith(b"QBSPOOL9")
    shown = {entry.name: entry.problem for entry in status(directory)}
    assert shown[stranger.name] == "not a spool segment file (wrong header)"


def test_a_planted_symlink_is_never_followed(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    directory.mkdir(mode=0o700)
    target = tmp_path / "precious.txt"
    target.write_text("not a spool file")
    (directory / f"1-planted-000001{FILE_SUFFIX}").symlink_to(target)
    assert list(claim_orphans(directory)) == []
    assert [entry.owner for entry in status(directory)] == ["unreadable"]
    assert target.read_text() == "not a spool file"


def test_an_event_the_dead_letter_store_could_not_keep_stays_spooled(collector: Any, tmp_path: Path) -> None:
    from quickbot_segment_plugin.collector.faults import Fault

    collector.inject_faults([Fault(status=400)])  # Segment rejects the batch: it goes to the dead letters
    kept: list[int] = []

    def store_that_fails(undeliverable: Any) -> int:
        kept.append(undeliverable.count)
        return 0  # what DeadLetterRecorder returns when its write failed

    spool = Spool(SpoolSettings(tmp_path / "spool"))
    pool = DeliveryPool(DeliverySettings(flush_interval=0.05), store_that_fails, spool=spool)
    message = {"type": "track", "event": "E", "userId": "u", "messageId": "m1"}
    assert pool.enqueue(WORKSPACE, WRITE_KEY, collector.url, message, token="sealed").accepted
    assert _wait(lambda: kept == [1])
    pool.shutdown(5)
    # Not delivered, not kept: still in the spool for the next process, not lost.
    assert [entry.live for entry in status(tmp_path / "spool")] == [1]


def test_recovery_removes_only_abandoned_temporaries(tmp_path: Path) -> None:
    """A live process creates its next file under a temporary name, then locks it: a recovery that
    ran between the two steps deleted it, and the process's spool write failed. Only temporaries
    too old to be anyone's work in progress go."""
    from quickbot_segment_plugin.delivery.recovery import ABANDONED_TEMPORARY_SECONDS, _remove_abandoned_temporaries

    fresh = tmp_path / "123-abc-000001.qbspool.tmp"
    stale = tmp_path / "456-def-000001.qbspool.tmp"
    fresh.write_bytes(b"")
    stale.write_bytes(b"")
    long_ago = time.time() - ABANDONED_TEMPORARY_SECONDS - 5
    os.utime(stale, (long_ago, long_ago))
    _remove_abandoned_temporaries(tmp_path)
    assert fresh.exists()
    assert not stale.exists()
