"""From the bytes of one `POST /v1/...` request to the messages Segment would keep.

This is where the collector decides, as Segment's Tracking API does, between `400 Bad
Request` (malformed JSON, an event over 32 KB, a batch over 500 KB, no write key) and
`200` (everything else, problems included: those become warnings). No I/O happens here,
so every rule can be tested with plain bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..core import fingerprint
from .spec import MESSAGE_TYPES, apply_timestamps, check_message

# Segment's documented limits ("Max request size"): 32 KB a call or a batched event, 500 KB
# a batch request, 2,500 events a batch. KB is read as 1,024 bytes, the generous reading,
# so anything segment-analytics-python builds (its own limits are 32 * 1024 and 475,000)
# is accepted.
MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
ENDPOINTS = frozenset({"batch", *MESSAGE_TYPES})


class Rejected(Exception):
    """The request is answered with an error status and nothing is stored."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Accepted:
    """A request Segment answers with 200.

    `dropped` explains a request that is answered 200 but whose events are not kept
    (a batch of more than 2,500 events: Segment's documented behaviour).
    """

    write_key_fingerprint: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[list[str]] = field(default_factory=list)
    dropped: str | None = None
    # The request body as sent, minus every writeKey: the debugger's "raw batch".
    body: dict[str, Any] = field(default_factory=dict)


def ingest(
    endpoint: str,
    raw_body: bytes,
    *,
    content_encoding: str | None,
    authorization: str | None,
    received_at: datetime,
) -> Accepted:
    """Decodes, checks and normalizes one request; raises `Rejected` for a 4xx answer."""
    limit = MAX_BATCH_BYTES if endpoint == "batch" else MAX_EVENT_BYTES
    data = decode_body(raw_body, content_encoding, limit)
    if len(data) > limit:
        what = "a batch request" if endpoint == "batch" else "a single call"
        raise Rejected(
            400,
            "payload_too_large",
            f"the body is {len(data)} bytes (or more); Segment accepts at most {limit} bytes for {what}.",
        )
    payload = parse_json_object(data)
    write_key = write_key_from(payload, authorization)
    accepted = Accepted(write_key_fingerprint=fingerprint(write_key), body=without_write_keys(payload))
    if endpoint == "batch":
        # No item can exceed 32 KB when the whole body does not: skip measuring each one.
        items = _batch_items(payload, measure=len(data) > MAX_EVENT_BYTES)
        if len(items) > MAX_BATCH_EVENTS:
            accepted.dropped = (
                f"the batch has {len(items)} events; Segment accepts at most {MAX_BATCH_EVENTS} a batch, "
                "answers 200 and drops them all."
            )
            return accepted
        shared_context = payload.get("context")
        shared_integrations = payload.get("integrations")
        for item in items:
            message = dict(item)
            _merge_shared(message, "context", shared_context)
            _merge_shared(message, "integrations", shared_integrations)
            _add(accepted, message, payload.get("sentAt"), received_at, implied_type=None)
    else:
        _add(accepted, dict(payload), None, received_at, implied_type=endpoint)
    return accepted


def without_write_keys(payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of a request body with the write key removed, at the top level and in each item.

    Only the key's fingerprint is ever kept, so the raw batch the debugger shows cannot
    hand a write key to whoever can read the collector.
    """
    body = {name: value for name, value in payload.items() if name != "writeKey"}
    items = body.get("batch")
    if isinstance(items, list):
        body["batch"] = [
            {name: value for name, value in item.items() if name != "writeKey"}
            if isinstance(item, dict) and "writeKey" in item
            else item
            for item in items
        ]
    return body


def decode_body(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body without its transfer compression, never inflated much beyond `limit`.

    Inflation stops one byte past the limit, so a gzip bomb costs at most `limit` bytes of
    memory and the caller still sees that the body is too large.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip"):
        raise Rejected(
            400,
            "unsupported_encoding",
            f"Content-Encoding {encoding[:40]!r} is not supported; send gzip or none.",
        )
    return _gunzip(raw, limit + 1)


def _gunzip(raw: bytes, cap: int) -> bytes:
    output = bytearray()
    pending = raw
    inflater = zlib.decompressobj(wbits=31)
    try:
        while True:
            output += inflater.decompress(pending, cap - len(output))
            if len(output) >= cap:
                return bytes(output)
            if inflater.unconsumed_tail:
                pending = inflater.unconsumed_tail
                continue
            if not inflater.eof:
                raise Rejected(400, "invalid_gzip", "the gzip body is truncated.")
            rest = inflater.unused_data
            if not rest.strip(b"\x00"):
                return bytes(output)
            pending, inflater = rest, zlib.decompressobj(wbits=31)  # another gzip member
    except zlib.error:
        raise Rejected(400, "invalid_gzip", "the body is not valid gzip.") from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(data: bytes) -> dict[str, Any]:
    """The body as a JSON object; anything else is the 400 Segment gives to invalid JSON."""
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise Rejected(400, "invalid_json", "the body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise Rejected(400, "invalid_json", f"the body must be a JSON object, got {type(value).__name__}.")
    return value


def write_key_from(payload: dict[str, Any], authorization: str | None) -> str:
    """The write key from the body's `writeKey`, else from HTTP Basic credentials (`key:`).

    Segment's edge answers 400 to a request with no (or an empty) write key, and 200 to any
    other key, valid or not: the collector does the same and never checks a key.
    """
    in_body = payload.get("writeKey")
    if in_body is not None and not isinstance(in_body, str):
        raise Rejected(400, "invalid_write_key", "writeKey must be a string.")
    if in_body:
        return in_body
    from_header = _basic_user(authorization)
    if from_header:
        return from_header
    raise Rejected(
        400,
        "missing_write_key",
        "no write key: send it as the HTTP Basic user ('writeKey:') or as writeKey in the body.",
    )


def _basic_user(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user = decoded.split(":", 1)[0]
    return user or None


def _batch_items(payload: dict[str, Any], *, measure: bool) -> list[dict[str, Any]]:
    items = payload.get("batch")
    if not isinstance(items, list):
        raise Rejected(400, "invalid_json", "batch must be an array of messages.")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise Rejected(400, "invalid_json", f"batch[{index}] must be an object, got {type(item).__name__}.")
        if not measure:
            continue
        size = len(json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        if size > MAX_EVENT_BYTES:
            raise Rejected(
                400,
                "payload_too_large",
                f"batch[{index}] is {size} bytes; Segment accepts at most {MAX_EVENT_BYTES} bytes an event.",
            )
    return items


def _merge_shared(message: dict[str, Any], name: str, shared: object) -> None:
    """Batch-level `context`/`integrations` apply to every item; the item's own keys win."""
    if isinstance(shared, dict) and shared:
        own = message.get(name)
        message[name] = {**shared, **own} if isinstance(own, dict) else dict(shared)


def _add(
    accepted: Accepted,
    message: dict[str, Any],
    batch_sent_at: object,
    received_at: datetime,
    *,
    implied_type: str | None,
) -> None:
    message.pop("writeKey", None)  # the key is never stored, only its fingerprint
    warnings: list[str] = []
    if implied_type is not None:
        sent_type = message.get("type")
        if sent_type is None:
            message["type"] = implied_type
        elif sent_type != implied_type:
            warnings.append(f"type {sent_type!r} was sent to /v1/{implied_type}; stored as sent.")
    warnings.extend(check_message(message))
    if message.get("messageId") in (None, ""):
        message["messageId"] = f"api-{uuid.uuid4()}"
    warnings.extend(apply_timestamps(message, received_at, batch_sent_at))
    accepted.messages.append(message)
    accepted.warnings.append(warnings)
