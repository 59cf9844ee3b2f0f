"""A Segment message in wire form -> the analytics library's public call that sends it.

The pool receives messages exactly as they will appear on the wire (camelCase, ISO-8601
timestamp) because that is what the block reports and what the dead-letter store replays.
The library only takes them through `client.track(user_id=..., ...)` and friends, so each
wire field is mapped to its keyword here, once, with the library's quirks handled:
`timestamp` must be a datetime (an offset-less one would be guessed as local time), and
`context` is mutated by the library, so it gets a copy.

Fields a call cannot carry are refused rather than dropped, so a message is never sent
with less than the block reported.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from ..core import MAX_MESSAGE_BYTES, DeliveryError, parse_iso8601
from .library import OVERSIZE_ERRORS, REFUSAL_ERRORS, library_validator, refused_field

# wire field -> library keyword, per call type (the library's own signatures).
_COMMON: Final = {
    "messageId": "message_id",
    "timestamp": "timestamp",
    "context": "context",
    "integrations": "integrations",
}
_SUBJECT: Final = {"userId": "user_id", "anonymousId": "anonymous_id"}
CALL_FIELDS: Final[dict[str, dict[str, str]]] = {
    "track": {**_COMMON, **_SUBJECT, "event": "event", "properties": "properties"},
    "identify": {**_COMMON, **_SUBJECT, "traits": "traits"},
    "page": {**_COMMON, **_SUBJECT, "name": "name", "category": "category", "properties": "properties"},
    "screen": {**_COMMON, **_SUBJECT, "name": "name", "category": "category", "properties": "properties"},
    "group": {**_COMMON, **_SUBJECT, "groupId": "group_id", "traits": "traits"},
    "alias": {**_COMMON, "userId": "user_id", "previousId": "previous_id"},
}
# Keyword in the library's AssertionError text ("user_id or anonymous_id must have ...") -> wire field.
_LIBRARY_FIELD_NAMES: Final = {
    "user_id or anonymous_id": "userId",
    "user_id": "userId",
    "previous_id": "previousId",
    "group_id": "groupId",
    "event": "event",
    "traits": "traits",
    "properties": "properties",
    "name": "name",
    "category": "category",
    "integrations": "integrations",
    "context": "context",
    "timestamp": "timestamp",
    "type": "type",
}
# date T time [.fraction] [Z | ±hh:mm]: the fraction is padded/cut to 6 digits and Z made an
# offset so that `datetime.fromisoformat` reads it on every Python >= 3.10.
_ISO_FRACTION = re.compile(r"(T\d{2}:\d{2}:\d{2})(?:[.,](\d+))?")


class LibraryCall:
    """One public call on a `segment.analytics.Client`: `client.<method>(**kwargs)`.

    A plain slotted class rather than a frozen dataclass: one is built per enqueue, and a
    frozen dataclass's __init__ costs more than the rest of the mapping.
    """

    __slots__ = ("kwargs", "method")

    def __init__(self, method: str, kwargs: dict[str, Any]) -> None:
        self.method = method
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"LibraryCall({self.method!r}, fields={sorted(self.kwargs)})"

    def pinned(self) -> LibraryCall:
        """The same call with its time and id fixed now, for a message that is sent later.

        Left empty, the library fills both in when the call is made: a message held in the
        waiting room would get the time it left the room and a different id than the one
        its validation produced.
        """
        kwargs = dict(self.kwargs)
        if kwargs.get("timestamp") is None:
            kwargs["timestamp"] = datetime.now(UTC)
        if kwargs.get("message_id") is None:
            kwargs["message_id"] = str(uuid.uuid4())
        return LibraryCall(self.method, kwargs)

    def apply(self, client: Any) -> tuple[bool, dict[str, Any]]:
        """Make the call; translate the library's own refusals into a `DeliveryError`.

        Returns the library's `(queued, message)`: `queued` is False only when the client's
        queue is full, and `message` is the final wire form the library built.
        """
        bound: Callable[..., tuple[bool, dict[str, Any]]] = getattr(client, self.method)
        # The library writes context["library"] into the dict it is given: a fresh copy per
        # call keeps the caller's dict (and a replayed dead letter's) untouched.
        kwargs = dict(self.kwargs)
        kwargs["context"] = dict(kwargs["context"])
        try:
            return bound(**kwargs)
        except REFUSAL_ERRORS as error:
            raise _refused(self.method, str(error)) from None
        except OVERSIZE_ERRORS:
            # Its text quotes the whole message: never shown.
            raise message_too_large(self.method, _json_size(kwargs), kwargs) from None

    def final_form(self) -> dict[str, Any]:
        """The library's own validation and wire form, with time and id pinned; nothing queued."""
        _, message = self.pinned().apply(library_validator())
        return message


def message_too_large(method: str, size: int, fields: Mapping[str, Any]) -> DeliveryError:
    """The error for a message over the library's 32 KB limit, naming the object that carries the data."""
    return DeliveryError(
        f"The {method} message is larger than Segment's {MAX_MESSAGE_BYTES // 1024} KB limit per event "
        f"({size} bytes before encoding); send fewer or shorter traits/properties.",
        field="properties" if "properties" in fields else "traits",
    )


def to_library_call(message: Mapping[str, Any]) -> LibraryCall:
    """Map a wire-form message onto the call that sends it; DeliveryError for what cannot be sent."""
    if not isinstance(message, (dict, Mapping)):  # dict first: the ABC check costs a microsecond
        raise DeliveryError("A Segment message must be a JSON object.", field="message")
    call_type = message.get("type")
    fields = CALL_FIELDS.get(call_type) if isinstance(call_type, str) else None
    if fields is None or not isinstance(call_type, str):
        raise DeliveryError(f"type must be one of {', '.join(sorted(CALL_FIELDS))}, got {call_type!r}.", field="type")
    try:
        # None is "absent": the library's own messages carry `"anonymousId": null` and the like.
        kwargs = {fields[name]: value for name, value in message.items() if name != "type" and value is not None}
    except KeyError as unknown:
        raise DeliveryError(
            f"A {call_type} message cannot carry the field {unknown.args[0]!r}; "
            f"it accepts {', '.join(sorted(fields))}.",
            field=str(unknown.args[0]),
        ) from None
    kwargs["timestamp"] = parse_timestamp(kwargs.get("timestamp"))
    context = kwargs.get("context")
    if context is None:
        kwargs["context"] = {}
    elif not isinstance(context, (dict, Mapping)):
        raise DeliveryError("context must be a JSON object.", field="context")
    return LibraryCall(method=call_type, kwargs=kwargs)


def parse_timestamp(value: Any) -> datetime | None:
    """ISO-8601 text (or a datetime) -> an aware datetime; None lets the library use "now".

    A timestamp without an offset is taken as UTC: the library would otherwise guess local
    time when it is within 5 s of now and UTC when it is not, so the same text could mean
    two instants.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = _parse_iso(value)
        except (ValueError, OverflowError):
            raise DeliveryError(
                f"timestamp must be an ISO-8601 date and time such as 2024-05-01T12:00:00.000+00:00, got {value!r}.",
                field="timestamp",
            ) from None
    else:
        raise DeliveryError("timestamp must be an ISO-8601 string.", field="timestamp")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _parse_iso(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)  # the common case: the library's own form
    except ValueError:
        # Respelled first, not stripped: the fraction rewrite decides how odd text such as
        # " 12:00:00:5z " reads, and replayed messages must keep reading as they did.
        return parse_iso8601(python310_iso(text))


def python310_iso(text: str) -> str:
    """`text` in the one spelling Python 3.10's `fromisoformat` reads: +00:00 for Z, six fraction digits."""
    text = text.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    return _ISO_FRACTION.sub(lambda m: m.group(1) + "." + (m.group(2) or "").ljust(6, "0")[:6], text, count=1)


def without_nulls(message: dict[str, Any]) -> dict[str, Any]:
    """The message as the block reported it: the library adds `"anonymousId": null`,
    `"category": null` ... for fields not given; Segment reads null as absent, so they are
    dropped to send (and dead-letter) exactly the payload `execute` returned."""
    if None not in message.values():
        return message
    return {name: value for name, value in message.items() if value is not None}


def _refused(method: str, text: str) -> DeliveryError:
    library_name = refused_field(text)
    wire_field = _LIBRARY_FIELD_NAMES.get(library_name)
    if wire_field == "userId" and library_name == "user_id or anonymous_id":
        return DeliveryError(
            f"A {method} message needs a non-empty userId or anonymousId (a string or a number).",
            field="userId",
        )
    if wire_field is not None:
        return DeliveryError(f"The {method} message's {wire_field} has the wrong type or is missing.", field=wire_field)
    return DeliveryError(f"The analytics library refused the {method} message.", field="message")


def _json_size(kwargs: Mapping[str, Any]) -> int:
    return len(json.dumps(kwargs, default=str).encode("utf-8"))
