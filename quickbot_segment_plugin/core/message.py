"""Rendered field values + host context -> one Segment message, following Segment's spec.

The message built here is the payload the block reports *and* the one handed to the
library, in the library's own final form (ISO timestamp with milliseconds, string ids,
`context.library`), so "the payload exactly as it will be sent" is true by construction
rather than by a second serialisation that could drift.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib.metadata import version
from typing import Any, Final

from .errors import PluginError
from .timestamps import library_timestamp, utc_now_text

MAX_MESSAGE_BYTES = 32 * 1024  # Segment rejects a single message above 32 KB

# Derived message ids live in their own UUID namespace so they never collide with ids
# another system derives from the same execution id.
MESSAGE_ID_NAMESPACE = uuid.UUID("6f1d2c3e-8a47-5b0e-9c1a-2f7e4d9b0a61")

_random_bits = random.getrandbits
# RFC 4122 version 4: version nibble 0100, variant bits 10 (the masks uuid.UUID applies).
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)

# The traits/properties object each call carries (segment-analytics-python's msg layout);
# the option models must agree (tests/test_schemas.py checks it).
PAYLOAD_OBJECTS: Final[dict[str, tuple[str, ...]]] = {
    "identify": ("traits",),
    "alias": (),
    "track": ("properties",),
    "page": ("properties",),
    "group": ("traits",),
    "screen": ("properties",),
}

# Host context keys -> where they go in the event's `context` (docs/host-integrators/contract.md).
HOST_CONTEXT_KEYS = {"bot_id": "botId", "session_id": "sessionId", "block_id": "blockId"}
# Context members the plugin writes itself (the library's stamp, the host's ids, granted consent).
# A bot builder's context items may not use them (validation refuses such keys), which is what
# lets cleaning and privacy pass over them: nothing an end user typed can be in them.
PLUGIN_CONTEXT: Final = frozenset({"library", "quickbot", "consent"})


class MessageError(PluginError):
    """The rendered values cannot make a valid Segment message (sizes, nested keys)."""


def message_id_for(workspace_id: str, execution_id: str | None) -> str:
    """Stable per (workspace, execution) so a host's retry is deduplicated by Segment; random otherwise."""
    if execution_id:
        return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{workspace_id}\x1f{execution_id}"))
    # A message id needs uniqueness, not secrecy. uuid4() makes a getrandom() system call,
    # which releases the GIL; with a delivery thread busy serialising a batch, getting it back
    # cost ~17 us per execute in profiles. `random` (seeded from the OS, reseeded in a forked
    # child) stays in the interpreter. The version and variant bits are set as
    # `uuid.UUID(int=..., version=4)` sets them, and the text formatted directly: the UUID
    # object cost 1.2 us of execute's ~30.
    digits = "%032x" % (_random_bits(128) & _UUID4_CLEAR | _UUID4_SET)
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


@dataclass
class MessageParts:
    """What `execute` rendered, ready to be assembled into one message."""

    action: str
    message_id: str
    fields: dict[str, Any]  # top-level Segment fields: userId, event, name, groupId ... (wire names)
    payload_objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # traits / properties
    context: dict[str, Any] = field(default_factory=dict)
    integrations: dict[str, bool] = field(default_factory=dict)
    timestamp: datetime | None = None


def build_message(parts: MessageParts, host_context: Mapping[str, Any]) -> dict[str, Any]:
    """The Segment message in wire form, ready for the quality gate and `check_size`."""
    context = dict(parts.context)
    quickbot = {wire: host_context[key] for key, wire in HOST_CONTEXT_KEYS.items() if host_context.get(key)}
    if quickbot:
        context["quickbot"] = quickbot
    context["library"] = library_context()
    message: dict[str, Any] = {"type": parts.action, "messageId": parts.message_id}
    message.update(parts.fields)  # render_parts leaves out what is empty
    # The library always sends these objects, empty or not; so does the reported payload.
    for name in PAYLOAD_OBJECTS.get(parts.action, ()):
        message[name] = parts.payload_objects.get(name, {})
    message["context"] = context
    message["integrations"] = dict(parts.integrations)
    timestamp = parts.timestamp
    message["timestamp"] = utc_now_text() if timestamp is None else library_timestamp(timestamp)
    # Size is checked by the caller once the message is final (after cleaning and privacy):
    # the library measures it again on enqueue, so the live path does not pay for it twice.
    return message


@cache
def _library_version() -> str:
    # The distribution's metadata, not `segment.analytics.version.VERSION`: importing the library
    # pulls in requests/urllib3, and only delivery may touch it. The seam's contract test checks
    # that the two agree, since the library stamps VERSION into every message it sends.
    return version("segment-analytics-python")


def library_context() -> dict[str, str]:
    """What the library writes into `context.library`; set here too so the payload is exact."""
    return {"name": "analytics-python", "version": _library_version()}


def check_size(message: dict[str, Any]) -> int:
    size = _json_size(message)
    if size > MAX_MESSAGE_BYTES:
        largest = sorted(_field_sizes(message), key=lambda item: item[1], reverse=True)[:3]
        named = ", ".join(f"{path} ({_kb(bytes_)})" for path, bytes_ in largest)
        raise MessageError(
            f"The message is {_kb(size)}, over Segment's 32 KB limit per event; the largest fields are "
            f"{named}. Send less data in those fields.",
            field=largest[0][0] if largest else None,
        )
    return size


def key_path(dotted_key: str) -> tuple[str, ...]:
    """`address.city` -> ("address", "city"): split once, when the plan is compiled."""
    return tuple(part.strip() for part in dotted_key.split("."))


def set_nested(target: dict[str, Any], parts: tuple[str, ...], value: Any, dotted_key: str) -> None:
    """("address", "city") -> {"address": {"city": ...}}, so reserved nested traits need no JSON.

    `parts` is `key_path(dotted_key)`, computed once per plan; `dotted_key` only names the
    key in an error.
    """
    node = target
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise MessageError(f"{dotted_key!r} needs {prefix!r} to be an object, but it is already set to a value.")
        node = child
    leaf = parts[-1]
    if isinstance(node.get(leaf), dict) and not isinstance(value, dict):
        raise MessageError(f"{dotted_key!r} is set to a value, but other keys already use it as an object.")
    node[leaf] = value


def _json_size(value: Any) -> int:
    # Measured exactly as segment-analytics-python measures before enqueueing (default
    # separators, ASCII escapes), so a message that passes here never raises in the library.
    return len(json.dumps(value).encode())


def _field_sizes(message: dict[str, Any]) -> list[tuple[str, int]]:
    sizes: list[tuple[str, int]] = []
    for name, value in message.items():
        if isinstance(value, dict) and value:
            sizes.extend((f"{name}.{key}", _json_size(inner)) for key, inner in value.items())
        else:
            sizes.append((name, _json_size(value)))
    return sizes


def _kb(size: int) -> str:
    return f"{size / 1024:.1f} KB"
