"""A message already in the library's final form goes onto the client's queue as it is.

`Client.track()` and its siblings rebuild every message before queueing it: keyword checks,
a new dict, `clean()` walking every value, ids stringified, `context.library` stamped, and a
`json.dumps` for the 32 KB check. For a message the block built, every one of those steps
has already been done (`messages.build_message` writes the library's final form), and the
rebuild cost as much as everything else in `execute` (bench_execute.py).

So the pool checks whether a message is provably in that form and, when it is, queues it on
the client's queue (the pool's own `DeliveryQueue`) without the rebuild; the consumer, the
request, the retries and Retry-After are the library's as before. "Provably" means:

- the library's own `require` rules for the call, restated (`CALL_RULES` below), with ids
  that are already non-empty strings (the library would stringify an int);
- the timestamp exactly as the library writes it (`isoformat(timespec="milliseconds")` of an
  aware datetime) and `context.library` exactly its stamp;
- `json.dumps` succeeds: it refuses precisely the values `clean()` would convert or drop
  (Decimal, datetime, date, set, Enum, bytes, other objects). Tuples dump as lists, which is
  also what `clean()` makes of them.

Anything else (a replayed message with an int id, an offset-less timestamp, a Decimal) takes
the library's call, so the library still decides every case in which it would change the
message. tests/test_delivery_final.py checks both paths queue the same event.

The block's own compiled messages skip the proof (`vouched_message`): they are built in final
form by construction, and tests/test_message_plan.py checks that `_in_final_form` holds for
every one of them. They are also serialised and copied with orjson, six times faster than
the standard library for the two steps together (bench_execute.py). What is queued is the
same: the parse of orjson's text is the parse of `json.dumps`'s (tests/test_delivery_final.py),
and the library's own `post` still writes every request body. Only the text differs (no
spaces, UTF-8 instead of `\\uXXXX`, `1e-7` for `1e-07`), so its length is not the library's
measure: `library_size_bound` turns it into a bound that is never below that measure, and a
message whose bound passes 32 KB is measured exactly before it is refused. orjson would write
NaN as null and refuses integers over 64 bits; the compiled message never holds the first
(message_plan.py), and the second falls back to the standard library.

What is queued is the parse of the measured JSON text: a copy that shares nothing with the
caller's message, so a host that edits the payload a result returned cannot change, or break
the serialisation of, an event already queued. Its size is the length of that text, which is
the figure the library's 32 KB check would compute, less the nulls the library adds for
absent fields (they are never sent: the consumer drops them).

The text is `json.dumps(message)` exactly, made by the standard library's C encoder built once
rather than once per call as `json.dumps` does, and parsed by the C scanner without
`json.loads`'s checks for text it did not make: together a third of what the two calls cost
(bench_execute.py). The circular-reference check is the one thing left out; a circular value
ends in RecursionError instead, which is treated as "not serialisable" like the ValueError
`json.dumps` raises.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Callable, Mapping
from functools import cache
from json.decoder import JSONDecoder
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, Final

import orjson

from ..core import LIBRARY_TIMESTAMP, MAX_MESSAGE_BYTES, PAYLOAD_OBJECTS, library_context
from .calls import CALL_FIELDS, LibraryCall, message_too_large, to_library_call

Message = dict[str, Any]


class FinalMessage:
    """A message to put on a client's queue as it is; the counterpart of `LibraryCall`."""

    __slots__ = ("message", "method", "size", "text")

    def __init__(self, method: str, message: Message, size: int, text: str | bytes = "") -> None:
        self.method = method
        self.message = message
        self.size = size  # the library's measure, or a bound never below it (`library_size_bound`)
        self.text = text  # the JSON text `message` was parsed from: what the spool writes

    def __repr__(self) -> str:
        return f"FinalMessage({self.method!r}, {self.size} bytes)"

    def apply(self, client: Any) -> tuple[bool, Message]:
        """Queue on the library client's queue: `(queued, message)`, as the library's calls return."""
        try:
            client.queue.put_measured(self.message, self.size)
        except queue.Full:
            return False, self.message
        return True, self.message

    def final_form(self) -> Message:
        return self.message


# Per call: (id fields of which at least one must be a non-empty string, fields that must be
# non-empty strings, fields that must be dicts: the traits/properties the library always
# sends, fields that may be absent or a string).
_SUBJECT: Final = ("userId", "anonymousId")
CALL_RULES: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]]] = {
    "track": (_SUBJECT, ("event",), PAYLOAD_OBJECTS["track"], ()),
    "identify": (_SUBJECT, (), PAYLOAD_OBJECTS["identify"], ()),
    "page": (_SUBJECT, (), PAYLOAD_OBJECTS["page"], ("name", "category")),
    "screen": (_SUBJECT, (), PAYLOAD_OBJECTS["screen"], ("name", "category")),
    "group": (_SUBJECT, ("groupId",), PAYLOAD_OBJECTS["group"], ()),
    "alias": ((), ("userId", "previousId"), PAYLOAD_OBJECTS["alias"], ()),
}


def _refuse_unserialisable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_encoder() -> Callable[[Any], str]:
    if c_make_encoder is None:  # an interpreter without the C accelerator
        return json.dumps
    # json.dumps's defaults: ASCII escapes, ", " and ": ", NaN allowed, keys unsorted, no skipping.
    encoder = c_make_encoder(
        None, _refuse_unserialisable, encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
    return lambda value: "".join(encoder(value, 0))


#: `json.dumps(value)` for the messages queued here (see the module's docstring).
encode: Final = _make_encoder()
_scan_once: Final[Callable[[str, int], tuple[Any, int]]] = JSONDecoder().scan_once  # type: ignore[attr-defined]


def decode(text: str) -> Any:
    """`json.loads(text)` for a text `encode` made (no surrounding whitespace to skip)."""
    return _scan_once(text, 0)[0]


_STRICT: Final = orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def vouched_message(message: Message) -> FinalMessage:
    """A message its builder guarantees to be in the library's final form: serialised, copied, measured.

    Raises `DeliveryError` for one over 32 KB, as `final_message` does.
    """
    method: str = message["type"]
    try:
        data = orjson.dumps(message, option=_STRICT)
    except orjson.JSONEncodeError:  # an integer over 64 bits: the standard library's way, below
        data = None
    if data is None:
        return _from_text(method, message, encode(message))
    size = library_size_bound(data)
    if size > MAX_MESSAGE_BYTES:
        size = len(encode(message))  # near the limit: the library's own measure decides
        if size > MAX_MESSAGE_BYTES:
            raise message_too_large(method, size, message)
    return FinalMessage(method, orjson.loads(data), size, data)


def library_size_bound(data: bytes) -> int:
    """At least `len(json.dumps(value))` for `data = orjson.dumps(value)`, and close to it.

    `json.dumps` adds a space after every `:` and `,` (counted here with those inside strings),
    writes DEL as `\\u007f` (5 more), a float's exponent with two digits (one more, bounded by
    counting every `e`), and each non-ASCII character as one or two `\\uXXXX`: at most 4 more
    per UTF-8 continuation byte (2-byte characters: 6 for 2; 3-byte: 6 for 3; 4-byte: 12 for 4).
    """
    bound = 2 * len(data) - len(data.translate(None, b":,e\x7f"))  # one more for each of these
    if b"\x7f" in data:
        bound += 4 * data.count(b"\x7f")
    if not data.isascii():
        bound += 4 * (len(data) - len(data.decode("utf-8")))
    return bound


def submission_for(message: Mapping[str, Any]) -> FinalMessage | LibraryCall:
    """The cheapest way to queue `message` with the library's meaning: as it is, or by its call.

    Raises `DeliveryError` for a message the library would refuse (see `to_library_call`),
    including one over 32 KB.
    """
    final = final_message(message)
    return final if final is not None else to_library_call(message)


def final_message(message: Mapping[str, Any]) -> FinalMessage | None:
    """`message` ready to queue as it is, or None when it is not provably in final form."""
    if type(message) is not dict:
        return None
    method = message.get("type")
    if not isinstance(method, str):
        return None
    rules = CALL_RULES.get(method)
    if rules is None or not _in_final_form(message, method, rules):
        return None
    try:
        text = encode(message)
    except (TypeError, ValueError, RecursionError):  # a value the library's clean() would convert or drop
        return None
    return _from_text(method, message, text)


def _from_text(method: str, message: Message, text: str) -> FinalMessage:
    """The queued copy of `message`, parsed from `text = encode(message)`; over 32 KB raises."""
    if len(text) > MAX_MESSAGE_BYTES:
        raise message_too_large(method, len(text), message)
    return FinalMessage(method, decode(text), len(text), text)


def _in_final_form(
    message: Message,
    method: str,
    rules: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]],
) -> bool:
    if not message.keys() <= _FIELDS_WITH_TYPE[method]:
        return False
    message_id = message.get("messageId")
    timestamp = message.get("timestamp")
    context = message.get("context")
    if not (
        type(message_id) is str
        and message_id
        and type(timestamp) is str
        and LIBRARY_TIMESTAMP.fullmatch(timestamp)
        and type(context) is dict
        and context.get("library") == _library_stamp()
        and type(message.get("integrations")) is dict
    ):
        return False
    subject, required, objects, optional = rules
    if subject:
        user_id, anonymous_id = message.get("userId"), message.get("anonymousId")
        if not (user_id or anonymous_id) or not (_none_or_text(user_id) and _none_or_text(anonymous_id)):
            return False
    for name in required:
        value = message.get(name)
        if type(value) is not str or not value:
            return False
    for name in objects:
        if type(message.get(name)) is not dict:
            return False
    return all(_none_or_text(message.get(name)) for name in optional)


def _none_or_text(value: object) -> bool:
    return value is None or type(value) is str


@cache
def _library_stamp() -> dict[str, str]:
    """`context.library` as the library writes it; compared against, never handed out."""
    return library_context()


_FIELDS_WITH_TYPE: Final = {method: frozenset(fields) | {"type"} for method, fields in CALL_FIELDS.items()}
