"""What Segment does to a message once it is accepted: timestamps, and the debugger's warnings.

Segment answers 200 to almost everything and reports problems only in its debugger, after
the fact; a bot builder testing against the embedded collector should see the same
problems, recorded next to the stored message, instead of finding out in production.
The rules follow the Segment Spec (common fields, identify, track, page, screen, group,
alias) and the HTTP Tracking API's "Errors" section.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..core import parse_segment_timestamp, segment_timestamp, shorten

MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias")
MAX_MESSAGE_ID_LENGTH = 100


def apply_timestamps(message: dict[str, Any], received_at: datetime, batch_sent_at: object) -> list[str]:
    """Adds `receivedAt`, `sentAt` and `originalTimestamp`, and corrects `timestamp` for clock skew.

    Segment keeps the sender's `timestamp` as `originalTimestamp` and computes
    `timestamp = receivedAt - (sentAt - originalTimestamp)`, on the assumption that
    sending and receiving happen at the same moment, so a device clock that is off by an
    hour does not move its events by an hour. Without `sentAt` there is nothing to
    correct with; without `timestamp` the event happened when it was received.
    Returns warnings for dates that cannot be read.
    """
    warnings: list[str] = []
    message["receivedAt"] = segment_timestamp(received_at)
    sent_at_value = message.get("sentAt", batch_sent_at)
    sent_at = None
    if sent_at_value is not None:
        sent_at = parse_segment_timestamp(sent_at_value)
        if sent_at is None:
            warnings.append(f"sentAt is not an ISO-8601 date ({_short(sent_at_value)}); no clock-skew correction.")
        else:
            message["sentAt"] = sent_at_value
    original_value = message.get("timestamp")
    if original_value is None:
        message["timestamp"] = message["receivedAt"]
        return warnings
    message["originalTimestamp"] = original_value
    original = parse_segment_timestamp(original_value)
    if original is None:
        warnings.append(f"timestamp is not an ISO-8601 date ({_short(original_value)}); Segment ignores it.")
        message["timestamp"] = message["receivedAt"]
        return warnings
    try:
        corrected = original if sent_at is None else received_at - (sent_at - original)
        message["timestamp"] = segment_timestamp(corrected)
    except (OverflowError, ValueError):  # a skew that pushes the date out of range
        message["timestamp"] = message["receivedAt"]
    return warnings


# Reserved traits and the JSON types the Spec gives them (snake_case spellings are accepted
# by Segment too). `id` and a group's `employees` are documented as strings but numbers are
# common and harmless, so both are accepted.
_STRING = "a string"
_NUMBER = "a number"
_OBJECT = "an object"
_DATE = "an ISO-8601 date string"
_STRING_OR_NUMBER = "a string or a number"

_IDENTIFY_TRAITS: dict[str, str] = {
    "address": _OBJECT,
    "age": _NUMBER,
    "avatar": _STRING,
    "birthday": _DATE,
    "company": _OBJECT,
    "createdAt": _DATE,
    "description": _STRING,
    "email": _STRING,
    "firstName": _STRING,
    "gender": _STRING,
    "id": _STRING_OR_NUMBER,
    "lastName": _STRING,
    "name": _STRING,
    "phone": _STRING,
    "title": _STRING,
    "username": _STRING,
    "website": _STRING,
}
_GROUP_TRAITS: dict[str, str] = {
    "address": _OBJECT,
    "avatar": _STRING,
    "createdAt": _DATE,
    "description": _STRING,
    "email": _STRING,
    "employees": _STRING_OR_NUMBER,
    "id": _STRING_OR_NUMBER,
    "industry": _STRING,
    "name": _STRING,
    "phone": _STRING,
    "plan": _STRING,
    "website": _STRING,
}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_TYPE_CHECKS: dict[str, Callable[[object], bool]] = {
    _STRING: lambda value: isinstance(value, str),
    _NUMBER: _is_number,
    _OBJECT: lambda value: isinstance(value, dict),
    _DATE: lambda value: parse_segment_timestamp(value) is not None,
    _STRING_OR_NUMBER: lambda value: isinstance(value, str) or _is_number(value),
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _short(value: object) -> str:
    return shorten(repr(value), 60, "...")


def _present_id(value: object) -> bool:
    return (isinstance(value, str) and value != "") or _is_number(value)


def check_message(message: dict[str, Any]) -> list[str]:
    """The problems Segment's debugger would show for this message (empty when clean)."""
    warnings: list[str] = []
    kind = message.get("type")
    if kind not in MESSAGE_TYPES:
        warnings.append(f"type must be one of {', '.join(MESSAGE_TYPES)}; got {_short(kind)}. Segment drops it.")
    _check_message_id(message.get("messageId"), warnings)
    for field in ("userId", "anonymousId", "previousId", "groupId"):
        value = message.get(field)
        if value is not None and not isinstance(value, str) and not _is_number(value):
            warnings.append(f"{field} must be a string, got {type(value).__name__}.")
    if kind == "alias":
        for field in ("userId", "previousId"):
            if not _present_id(message.get(field)):
                warnings.append(f"alias requires {field}.")
    elif not (_present_id(message.get("userId")) or _present_id(message.get("anonymousId"))):
        warnings.append("no_user_anon_id: userId or anonymousId is required; Segment drops the event.")
    if kind == "track":
        event = message.get("event")
        if not isinstance(event, str) or not event.strip():
            warnings.append("track requires event, a non-empty string naming the action.")
    if kind == "group" and not _present_id(message.get("groupId")):
        warnings.append("group requires groupId.")
    if kind in ("page", "screen"):
        for field in ("name", "category"):
            if field in message and message[field] is not None and not isinstance(message[field], str):
                warnings.append(f"{kind} {field} must be a string, got {type(message[field]).__name__}.")
    for field in ("context", "integrations", "properties", "traits"):
        if field in message and message[field] is not None and not isinstance(message[field], dict):
            warnings.append(f"{field} must be an object, got {type(message[field]).__name__}.")
    traits = message.get("traits")
    if isinstance(traits, dict) and kind in ("identify", "group"):
        _check_traits(traits, _IDENTIFY_TRAITS if kind == "identify" else _GROUP_TRAITS, warnings)
    return warnings


def _check_message_id(message_id: object, warnings: list[str]) -> None:
    # Segment's HTTP API makes messageId optional (it assigns one): a missing one is no problem.
    if message_id is None or message_id == "":
        return
    if not isinstance(message_id, str):
        warnings.append(f"messageId must be a string, got {type(message_id).__name__}.")
    elif len(message_id) > MAX_MESSAGE_ID_LENGTH:
        warnings.append(f"messageId is {len(message_id)} characters; Segment allows at most {MAX_MESSAGE_ID_LENGTH}.")


def _check_traits(traits: dict[str, Any], reserved: dict[str, str], warnings: list[str]) -> None:
    for name, expected in reserved.items():
        for spelling in {name, _snake(name)}:
            if spelling in traits and traits[spelling] is not None:
                value = traits[spelling]
                if not _TYPE_CHECKS[expected](value):
                    warnings.append(
                        f"traits.{spelling} is a reserved trait and must be {expected}, got {_short(value)}."
                    )
