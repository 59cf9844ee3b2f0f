"""The message of a block, with everything that does not depend on the conversation done once.

A block runs for every conversation that reaches it, and most of its message never changes
between them: the event name, static properties and traits, their conversions, where each
item goes in the message, the integrations. `MessagePlan` holds all of that in its final form
when the plan is compiled; building a message is then a look-up per variable, a conversion
per typed dynamic item, and the dicts of the message (benchmarks/bench_execute.py).

It is the fast path of `render_parts` + `build_message`, never a second meaning: a message is
built here only when the general path would build the same message with nothing to log. The
moment anything would be worth telling the bot builder (a variable not set, an item that is
empty or does not convert, a value that needs the sandbox's budget, a required field that is
empty), `build` returns None and the executor takes the general path, which renders again and
says why. tests/test_message_plan.py checks, over generated options and variables, that both
paths give the same message whenever this one gives one.

A plan it does not cover gets no `MessagePlan` at all (`compile_message` returns None): a
timestamp option, Jinja expressions, items whose keys overlap (`a` and `a.b`), or a static
item that would itself log or fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import isfinite
from typing import TYPE_CHECKING, Any, Final

from ..core import HOST_CONTEXT_KEYS, PAYLOAD_OBJECTS, library_context, utc_now_text
from ..options import IDENTITY_FIELDS, REQUIRED_FIELDS, ValueType, convert, to_text
from ..templating import NOT_PLAIN, CompiledTemplate

if TYPE_CHECKING:
    from .plan import BlockPlan

# Static item values are shared by every message built from the plan, so only immutable ones.
_SHAREABLE: Final = (str, int, float, bool)
# What `_wire_fields` (plan.py) copies from the rendered fields into the message, per action,
# after the identity fields; a field in the second tuple is sent only when it is not empty.
_WIRE_FIELDS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "identify": ((), ()),
    "alias": (("userId", "previousId"), ()),
    "track": (("event",), ()),
    "page": (("name",), ("category",)),
    "screen": (("name",), ("category",)),
    "group": (("groupId",), ()),
}


class MessagePlan:
    """Builds the wire-form message of one block for one conversation, or says "not here"."""

    __slots__ = ("_action", "_fields", "_identity", "_integrations", "_items", "_objects", "_required", "_wire")

    def __init__(
        self,
        action: str,
        fields: tuple[tuple[str, CompiledTemplate | None, str], ...],
        items: tuple[tuple[str, tuple[str, ...], CompiledTemplate | None, Any, ValueType | None], ...],
        integrations: dict[str, bool],
    ) -> None:
        self._action = action
        self._fields = fields  # (name, template or None when static, the static text)
        self._items = items  # (list name, key parts, template or None when static, static value, type)
        self._integrations = integrations
        self._required = REQUIRED_FIELDS[action]
        self._identity = action != "alias"
        self._wire = _WIRE_FIELDS[action]
        self._objects = PAYLOAD_OBJECTS[action]

    def __repr__(self) -> str:
        dynamic = sum(template is not None for _, template, _ in self._fields) + sum(
            template is not None for _, _, template, _, _ in self._items
        )
        return f"<MessagePlan {self._action} {len(self._fields) + len(self._items)} parts, {dynamic} dynamic>"

    def build(
        self, variables: Mapping[str, Any], message_id: str, host_context: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The message, exactly as `render_parts` + `build_message` would build it; None when the
        general path must run instead (it has something to say, or work this path does not do)."""
        fields: dict[str, str] = {}
        for name, template, text in self._fields:
            if template is not None:
                value = template.render_plain(variables)
                if value is NOT_PLAIN:
                    return None
                try:
                    text = to_text(value).strip()
                except Exception:  # the general path reports it, naming the field
                    return None
            fields[name] = text
        for name in self._required:
            if fields.get(name, "") == "":
                return None
        if self._identity and fields.get("userId", "") == "" and fields.get("anonymousId", "") == "":
            return None
        objects: dict[str, dict[str, Any]] = {}
        context: dict[str, Any] = {}
        for list_name, parts, template, value, value_type in self._items:
            if template is not None:
                value = template.render_plain(variables)
                if value is NOT_PLAIN or (type(value) is str and not value.strip()):
                    return None
                if value_type is not None:
                    try:  # a boolean item's "none" (no value) is refused here too: not a yes/no word
                        value = convert(value, value_type)
                    except Exception:  # the general path reports it, naming the item
                        return None
                if type(value) not in _SHAREABLE or (type(value) is float and not isfinite(value)):
                    # orjson writes NaN as null where the standard library writes NaN (final.py), in
                    # a `json` item's list or object too: those take the general path.
                    return None
            target = context if list_name == "context" else objects.setdefault(list_name, {})
            for part in parts[:-1]:  # no key path is a prefix of another: every step is a dict made here
                target = target.setdefault(part, {})
            target[parts[-1]] = value
        return self._message(fields, objects, context, message_id, host_context)

    def _message(
        self,
        fields: dict[str, str],
        objects: dict[str, dict[str, Any]],
        context: dict[str, Any],
        message_id: str,
        host_context: Mapping[str, Any],
    ) -> dict[str, Any]:
        """`build_message`'s layout, key for key (the JSON text is compared byte for byte)."""
        action = self._action
        message: dict[str, Any] = {"type": action, "messageId": message_id}
        if self._identity:
            for name in IDENTITY_FIELDS:
                value = fields.get(name, "")
                if value != "":
                    message[name] = value
        always, when_set = self._wire
        for name in always:
            message[name] = fields[name]
        for name in when_set:
            if fields.get(name, "") != "":
                message[name] = fields[name]
        if action == "identify":
            objects.setdefault("traits", {})["email"] = fields["email"]
        elif action == "page" and fields.get("category"):
            objects.setdefault("properties", {}).setdefault("category", fields["category"])
        for name in self._objects:
            message[name] = objects.get(name, {})
        quickbot = {wire: host_context[key] for key, wire in HOST_CONTEXT_KEYS.items() if host_context.get(key)}
        if quickbot:
            context["quickbot"] = quickbot
        context["library"] = library_context()
        message["context"] = context
        message["integrations"] = dict(self._integrations)
        message["timestamp"] = utc_now_text()
        return message


def compile_message(plan: BlockPlan) -> MessagePlan | None:
    """The plan's `MessagePlan`, or None when its options need the general path every time."""
    if plan.timestamp is not None:
        return None
    fields: list[tuple[str, CompiledTemplate | None, str]] = []
    for field_plan in plan.fields:
        template = field_plan.template
        if template.is_literal:
            fields.append((field_plan.name, None, to_text(template.render_plain({})).strip()))
        elif template.renders_plainly:
            fields.append((field_plan.name, template, ""))
        else:
            return None
    items: list[tuple[str, tuple[str, ...], CompiledTemplate | None, Any, ValueType | None]] = []
    paths: dict[str, list[tuple[str, ...]]] = {}
    for item in plan.items:
        paths.setdefault("context" if item.list_name == "context" else item.list_name, []).append(item.key_parts)
        template = item.template
        if template.is_literal:
            value = _static_item_value(template.render_plain({}), item.value_type)
            if value is NOT_PLAIN:
                return None
            items.append((item.list_name, item.key_parts, None, value, None))
        elif template.renders_plainly:
            items.append((item.list_name, item.key_parts, template, None, item.value_type))
        else:
            return None
    if any(_overlapping(keys) for keys in paths.values()):
        return None
    return MessagePlan(plan.action, tuple(fields), tuple(items), dict(plan.options.integrations))


def _static_item_value(value: object, value_type: ValueType | None) -> object:
    """What `_render_item` makes of a static item, when it has nothing to log; else NOT_PLAIN."""
    if not isinstance(value, str) or not value.strip():
        return NOT_PLAIN  # an empty static item is dropped with a warning each time: the general path's
    if value_type is not None:
        try:
            value = convert(value, value_type)
        except Exception:  # the general path reports it on every conversation
            return NOT_PLAIN
    return value if type(value) in _SHAREABLE else NOT_PLAIN  # `convert` refuses NaN and infinities


def _overlapping(keys: list[tuple[str, ...]]) -> bool:
    """Two items at one place, or one inside another (`a` and `a.b`): `set_nested` must arbitrate."""
    seen = set(keys)
    if len(seen) != len(keys):
        return True
    return any(key[:depth] in seen for key in keys for depth in range(1, len(key)))
