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
from .slot_checks import MESSAGE_ID_PATH, TIMESTAMP_PATH, LearnedChecks, SlotPath

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
    """Builds the wire-form message of one block for one conversation, or says "not here".

    It also names its slots: the values that change between conversations (dynamic fields and
    items, the host's ids, the message id and the time), in a fixed order, with the places in
    the message where each one lands (`slot_paths`) and whether an empty one is left out of the
    message (`slot_optional`). `build` hands their values out in that order, so the checks can
    look at them alone once they have cleared the rest (slot_checks.py).
    """

    __slots__ = (
        "_action",
        "_dynamic",
        "_fields",
        "_identity",
        "_integrations",
        "_items",
        "_objects",
        "_places",
        "_required",
        "_skeletons",
        "_wire",
        "checks",
        "slot_optional",
        "slot_paths",
    )

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
        # The items' objects with their static values in place, copied per message; the dynamic
        # items, rendered per message, and where each value goes (a copied container, a key).
        self._skeletons, self._dynamic, self._places = _skeletons(items)
        self.slot_paths, self.slot_optional = _slots(action, fields, items)
        # What the checks learned about this message, by the ids of a privacy policy and a tracking plan.
        self.checks: dict[tuple[int, int], LearnedChecks] = {}

    def __repr__(self) -> str:
        dynamic = sum(template is not None for _, template, _ in self._fields) + sum(
            template is not None for _, _, template, _, _ in self._items
        )
        return f"<MessagePlan {self._action} {len(self._fields) + len(self._items)} parts, {dynamic} dynamic>"

    def build(
        self,
        variables: Mapping[str, Any],
        message_id: str,
        host_context: Mapping[str, Any],
        slots: list[Any] | None = None,
    ) -> dict[str, Any] | None:
        """The message, exactly as `render_parts` + `build_message` would build it; None when the
        general path must run instead (it has something to say, or work this path does not do).

        `slots`, when given, receives the value of each slot, in `slot_paths` order.
        """
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
                if slots is not None:
                    slots.append(text)
            fields[name] = text
        for name in self._required:
            if fields.get(name, "") == "":
                return None
        if self._identity and fields.get("userId", "") == "" and fields.get("anonymousId", "") == "":
            return None
        values: list[Any] = []
        for template, value_type in self._dynamic:
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
            values.append(value)
        if slots is not None:
            slots += values
        # The items' objects: fresh copies of the skeletons, the dynamic values put in their places.
        containers: list[dict[str, Any]] = []
        objects: dict[str, dict[str, Any]] = {}
        context: dict[str, Any] = {}
        for list_name, skeleton in self._skeletons:
            if list_name == "context":
                context = skeleton.copy_into(containers)
            else:
                objects[list_name] = skeleton.copy_into(containers)
        for (container, key), value in zip(self._places, values, strict=True):
            containers[container][key] = value
        message = self._message(fields, objects, context, message_id, host_context)
        if slots is not None:
            for key in HOST_CONTEXT_KEYS:
                slots.append(host_context.get(key))
            slots.append(message_id)
            slots.append(message["timestamp"])
        return message

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


class _Skeleton:
    """One object of a message's items (properties, traits, the context, or an object inside one)
    with its keys in the order the items give them: static values in place, None where a dynamic
    value or an inner object goes. Copied per message: the dicts of a message are its own."""

    __slots__ = ("flat", "nested")

    def __init__(self) -> None:
        self.flat: dict[str, Any] = {}
        self.nested: list[tuple[str, _Skeleton]] = []

    def child(self, key: str) -> _Skeleton:
        for name, inner in self.nested:
            if name == key:
                return inner
        inner = _Skeleton()
        self.flat[key] = None
        self.nested.append((key, inner))
        return inner

    def copy_into(self, containers: list[dict[str, Any]]) -> dict[str, Any]:
        """A fresh copy, appended to `containers` with every inner copy after it (their order is
        `_skeletons`' numbering)."""
        copy = self.flat.copy()
        containers.append(copy)
        for key, inner in self.nested:
            copy[key] = inner.copy_into(containers)
        return copy

    def numbered(self, numbers: dict[int, int]) -> None:
        numbers[id(self)] = len(numbers)
        for _, inner in self.nested:
            inner.numbered(numbers)


def _skeletons(
    items: tuple[tuple[str, tuple[str, ...], CompiledTemplate | None, Any, ValueType | None], ...],
) -> tuple[
    tuple[tuple[str, _Skeleton], ...],
    tuple[tuple[CompiledTemplate, ValueType | None], ...],
    tuple[tuple[int, str], ...],
]:
    """(each list's skeleton, in the items' order; the dynamic items; where each one's value goes:
    the number of its container among the copies `copy_into` makes, and its key)."""
    roots: dict[str, _Skeleton] = {}
    dynamic: list[tuple[CompiledTemplate, ValueType | None]] = []
    targets: list[tuple[_Skeleton, str]] = []
    for list_name, parts, template, value, value_type in items:
        node = roots.setdefault(list_name, _Skeleton())
        for part in parts[:-1]:  # no key path is a prefix of another (`_overlapping`)
            node = node.child(part)
        node.flat[parts[-1]] = value if template is None else None
        if template is not None:
            dynamic.append((template, value_type))
            targets.append((node, parts[-1]))
    numbers: dict[int, int] = {}
    for root in roots.values():
        root.numbered(numbers)
    places = tuple((numbers[id(node)], key) for node, key in targets)
    return tuple(roots.items()), tuple(dynamic), places


def _slots(
    action: str,
    fields: tuple[tuple[str, CompiledTemplate | None, str], ...],
    items: tuple[tuple[str, tuple[str, ...], CompiledTemplate | None, Any, ValueType | None], ...],
) -> tuple[tuple[tuple[SlotPath, ...], ...], tuple[bool, ...]]:
    """(where each slot's value lands in the message `_message` lays out, none when it is not sent;
    whether an empty value is left out), in the order `build` hands the values out."""
    item_paths = {(list_name, *parts) for list_name, parts, _, _, _ in items}
    paths: list[tuple[SlotPath, ...]] = []
    optional: list[bool] = []
    for name, template, _ in fields:
        if template is not None:
            paths.append(_field_paths(action, name, item_paths))
            optional.append(name not in REQUIRED_FIELDS[action])  # `build` steps aside for an empty required one
    for list_name, parts, template, _, _ in items:
        if template is not None:
            paths.append(((list_name, *parts),))
            optional.append(False)
    for wire in HOST_CONTEXT_KEYS.values():
        paths.append((("context", "quickbot", wire),))
        optional.append(True)
    paths += [(MESSAGE_ID_PATH,), (TIMESTAMP_PATH,)]
    optional += [False, False]
    return tuple(paths), tuple(optional)


def _field_paths(action: str, name: str, item_paths: set[SlotPath]) -> tuple[SlotPath, ...]:
    """`_message`'s placement of a field, per action."""
    always, when_set = _WIRE_FIELDS[action]
    if (action != "alias" and name in IDENTITY_FIELDS) or name in always:
        return ((name,),)
    if action == "identify" and name == "email":
        return (("traits", "email"),)
    if name in when_set:
        if action == "page" and name == "category" and ("properties", "category") not in item_paths:
            return ((name,), ("properties", "category"))
        return ((name,),)
    return ()


def _overlapping(keys: list[tuple[str, ...]]) -> bool:
    """Two items at one place, or one inside another (`a` and `a.b`): `set_nested` must arbitrate."""
    seen = set(keys)
    if len(seen) != len(keys):
        return True
    return any(key[:depth] in seen for key in keys for depth in range(1, len(key)))
