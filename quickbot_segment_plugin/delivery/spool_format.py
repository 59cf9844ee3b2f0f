"""The bytes of a spool segment file: framed records that survive a torn last write.

A segment file is `MAGIC` followed by records. Each record is framed as

    length (u32, little-endian) | crc32 (u32) | kind (u8) | payload

where `length` counts the kind byte and the payload, and the CRC covers the same bytes. A
process killed in the middle of writing a record leaves at most one incomplete record at the
end of its file; the reader stops at the first record whose frame is incomplete or whose
checksum does not match, and says how many bytes it could not read, so a torn tail is never
mistaken for an event and never hides the records before it.

The writer preallocates each file and writes it through a shared mapping (delivery_spool), so
a file whose writer died ends in zeros: an all-zero frame (length 0, CRC 0; no record has
length 0) is where the records end, and is not a problem when only zeros follow it.

Record kinds:

- OWNER: JSON about the process that wrote the file (pid, host, start time): for `spool status`.
- CREDENTIAL: JSON `{ref, workspace_id, fingerprint, endpoint, token}`, written once per file
  before the first event that uses it. `token` is the sealed credentials token the host gave
  `execute` (encrypted with the operator's keys, useless without them); never the write key.
- EVENT: `seq` (u64) and `ref` (u32), then the message as UTF-8 JSON, messageId included.
- ACK: `seq`s (u64 each) of events that left the spool: delivered, or kept in the dead-letter store.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final

MAGIC: Final = b"QBSPOOL1"
FILE_SUFFIX: Final = ".qbspool"
FRAME: Final = struct.Struct("<II")
_EVENT_HEAD: Final = struct.Struct("<QI")
EVENT_BODY_HEAD: Final = struct.Struct("<BQI")  # kind, seq, ref: the start of an EVENT body
# An EVENT record up to its message: frame, kind, seq, ref (what the spool writes in one call).
EVENT_HEAD: Final = struct.Struct("<IIBQI")
# The bytes an EVENT record adds to its message: what the spool counts against its bound.
EVENT_OVERHEAD: Final = FRAME.size + EVENT_BODY_HEAD.size
_SEQ: Final = struct.Struct("<Q")
# Far above the largest record (a 32 KB event, or an ACK of a few thousand seqs): a length
# beyond this is a damaged frame, not a record to allocate memory for.
MAX_RECORD_BYTES: Final = 4 * 1024 * 1024


class RecordKind(IntEnum):
    OWNER = 1
    CREDENTIAL = 2
    EVENT = 3
    ACK = 4


EVENT_KIND: Final = int(RecordKind.EVENT)


def frame(kind: RecordKind, payload: bytes) -> bytes:
    body = bytes((kind,)) + payload
    return FRAME.pack(len(body), zlib.crc32(body)) + body


def owner_record(details: dict[str, Any]) -> bytes:
    return frame(RecordKind.OWNER, json.dumps(details, sort_keys=True).encode())


def credential_record(ref: int, workspace_id: str, fingerprint: str, endpoint: str, token: str | None) -> bytes:
    document = {
        "ref": ref,
        "workspace_id": workspace_id,
        "fingerprint": fingerprint,
        "endpoint": endpoint,
        "token": token,
    }
    return frame(RecordKind.CREDENTIAL, json.dumps(document).encode())


def event_record(seq: int, ref: int, message_json: bytes | str) -> bytes:
    """`frame(EVENT, ...)`: the message as UTF-8 JSON, bytes written as they are, text encoded."""
    body = EVENT_BODY_HEAD.pack(EVENT_KIND, seq, ref) + (
        message_json if isinstance(message_json, bytes) else encode_message(message_json)
    )
    return FRAME.pack(len(body), zlib.crc32(body)) + body


def encode_message(message_json: str) -> bytes:
    """A message's JSON text as spooled: UTF-8, lone surrogates kept (the reader decodes them back)."""
    return message_json.encode("utf-8", "surrogatepass")


def ack_record(seqs: Collection[int]) -> bytes:
    return frame(RecordKind.ACK, struct.pack(f"<{len(seqs)}Q", *seqs))


@dataclass(frozen=True)
class CredentialRef:
    """Which workspace and sealed credentials the events with this `ref` belong to."""

    ref: int
    workspace_id: str
    fingerprint: str
    endpoint: str
    token: str | None


@dataclass(frozen=True)
class SpooledEvent:
    seq: int
    ref: int
    message_json: str


@dataclass
class SegmentContents:
    """What a segment file holds, read up to its first unreadable byte."""

    owner: dict[str, Any] = field(default_factory=dict)
    credentials: dict[int, CredentialRef] = field(default_factory=dict)
    events: list[SpooledEvent] = field(default_factory=list)
    acked: set[int] = field(default_factory=set)
    size: int = 0
    readable_bytes: int = 0
    problem: str = ""  # why reading stopped before the end of the file ("" when it did not)

    @property
    def unread_bytes(self) -> int:
        return self.size - self.readable_bytes

    def live(self) -> list[SpooledEvent]:
        """Events not acknowledged, in the order they were spooled."""
        return [event for event in self.events if event.seq not in self.acked]


def parse(data: bytes) -> SegmentContents:
    """Every readable record of a segment file's bytes; stops at a torn or damaged record."""
    contents = SegmentContents(size=len(data))
    if not data.startswith(MAGIC):
        contents.problem = "not a spool segment file (wrong header)" if data else "empty file"
        return contents
    offset = len(MAGIC)
    for kind, payload, end in _records(data, offset, contents):
        _apply(contents, kind, payload)
        offset = end
    contents.readable_bytes = offset
    return contents


def _records(data: bytes, offset: int, contents: SegmentContents) -> Iterator[tuple[int, bytes, int]]:
    size = len(data)
    while offset < size:
        if size - offset < FRAME.size:
            contents.problem = f"torn record at byte {offset} (incomplete frame)"
            return
        length, checksum = FRAME.unpack_from(data, offset)
        if not length and not checksum:  # the preallocated tail the writer had not reached yet
            if data.count(0, offset) != size - offset:
                contents.problem = f"damaged record at byte {offset} (zero frame before data)"
            return
        start = offset + FRAME.size
        if length < 1 or length > MAX_RECORD_BYTES or start + length > size:
            contents.problem = f"torn or damaged record at byte {offset} (length {length})"
            return
        body = data[start : start + length]
        if zlib.crc32(body) != checksum:
            contents.problem = f"damaged record at byte {offset} (checksum mismatch)"
            return
        yield body[0], body[1:], start + length
        offset = start + length


def _apply(contents: SegmentContents, kind: int, payload: bytes) -> None:
    if kind == RecordKind.EVENT:
        seq, ref = _EVENT_HEAD.unpack_from(payload)
        contents.events.append(SpooledEvent(seq, ref, payload[_EVENT_HEAD.size :].decode("utf-8", "surrogatepass")))
    elif kind == RecordKind.ACK:
        contents.acked.update(seq for (seq,) in _SEQ.iter_unpack(payload))
    elif kind == RecordKind.CREDENTIAL:
        document = json.loads(payload)
        token = document.get("token")
        contents.credentials[int(document["ref"])] = CredentialRef(
            ref=int(document["ref"]),
            workspace_id=str(document["workspace_id"]),
            fingerprint=str(document.get("fingerprint", "")),
            endpoint=str(document.get("endpoint", "")),
            token=token if isinstance(token, str) else None,
        )
    elif kind == RecordKind.OWNER:
        document = json.loads(payload)
        if isinstance(document, dict):
            contents.owner = document
