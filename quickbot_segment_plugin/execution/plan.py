"""A block's options compiled once into a plan, then rendered per conversation.

The same block runs for every conversation that reaches it, so everything that depends only
on the options (validation, template compilation, field labels) is done once per distinct
options and cached; rendering a plan is the only per-conversation work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..core import (
    MessageError,
    MessageParts,
    ResultLog,
    Truth,
    condition_is_true,
    excerpt,
    key_path,
    set_nested,
    truth_of,
)
from ..options import (
    IDENTITY_FIELDS,
    ITEM_LIST_FIELDS,
    ITEM_NOUNS,
    REQUIRED_FIELDS,
    ActionOptions,
    ConversionError,
    ValueType,
    convert,
    field_title,
    parse_datetime,
    templated_fields,
    to_text,
)
from ..templating import CompiledTemplate, TemplateEngine, TemplateError
from .comparison_hints import explain_comparison

if TYPE_CHECKING:
    from .message_plan import MessagePlan

_USER_ID, _ANONYMOUS_ID = IDENTITY_FIELDS


class RenderFailure(Exception):
    """Rendering stopped the block; the reason is already in the result log."""


@dataclass(frozen=True)
class FieldPlan:
    name: str
    label: str
    template: CompiledTemplate
    source: str


@dataclass(frozen=True)
class ItemPlan:
    list_name: str
    index: int
    key: str
    label: str
    template: CompiledTemplate
    value_type: ValueType | None
    key_parts: tuple[str, ...]  # key_path(key), split once here rather than per conversation


@dataclass(frozen=True)
class BlockPlan:
    options: ActionOptions
    fields: tuple[FieldPlan, ...]
    items: tuple[ItemPlan, ...]
    condition: FieldPlan | None
    timestamp: FieldPlan | None
    legacy: bool
    consent: FieldPlan | None = None  # read by consent.consent_decision
    message: MessagePlan | None = None  # the compiled message, when these options allow one (message_plan.py)

    @property
    def action(self) -> str:
        return self.options.action


def compile_plan(options: ActionOptions, engine: TemplateEngine, *, legacy: bool = False) -> BlockPlan:
    action = options.action
    fields = []
    condition = timestamp = consent = None
    for name in templated_fields(type(options)):
        source: str = getattr(options, name)
        plan = FieldPlan(name, field_title(action, name), engine.compile(source), source)
        if name == "condition":
            condition = plan if source.strip() else None
        elif name == "timestamp":
            timestamp = plan if source.strip() else None
        elif name == "consent":
            consent = plan if source.strip() else None
        else:
            fields.append(plan)
    items = []
    for list_name in ITEM_LIST_FIELDS:
        for index, item in enumerate(getattr(options, list_name, ()) or ()):
            noun = ITEM_NOUNS[list_name]
            items.append(
                ItemPlan(
                    list_name=list_name,
                    index=index,
                    key=item.key.strip(),
                    label=f"{noun} {item.key.strip()!r}",
                    template=engine.compile(item.value),
                    value_type=item.type,
                    key_parts=key_path(item.key.strip()),
                )
            )
    return BlockPlan(options, tuple(fields), tuple(items), condition, timestamp, legacy, consent)


def condition_allows(plan: BlockPlan, variables: Mapping[str, Any], log: ResultLog) -> bool:
    if plan.condition is None:
        return True
    value = _render(plan.condition, variables, log, "condition", condition=True)
    if condition_is_true(value):
        return True
    log.info(
        f"Skipped: the condition {plan.condition.source!r} is false for this conversation.",
        field="condition",
        value=to_text(value)[:200],
    )
    return False


def render_parts(plan: BlockPlan, variables: Mapping[str, Any], message_id: str, log: ResultLog) -> MessageParts:
    """Render every field; raises RenderFailure after logging why the block cannot send."""
    action = plan.action
    fields: dict[str, Any] = {}
    missing_by_field: dict[str, tuple[str, ...]] = {}
    for field_plan in plan.fields:
        try:
            rendered = field_plan.template.render(variables)
            fields[field_plan.name] = to_text(rendered.value).strip()
        except TemplateError as error:
            raise _render_failure(
                log, field_plan.label, field_plan.name, error, field_plan.template, variables
            ) from None
        except (ValueError, RecursionError, MemoryError) as error:
            raise _unusable_value(log, field_plan.label, field_plan.name, error) from None
        if rendered.missing:
            missing_by_field[field_plan.name] = rendered.missing
    required_present = _check_required(plan, fields, missing_by_field, log)
    for name, missing in missing_by_field.items():
        if fields[name] != "":
            log.warning(f"{_unset_sentence(field_title(action, name), missing)}.", field=name)
        elif required_present:
            log.warning(f"{_empty_sentence(field_title(action, name), missing)}.", field=name)
    # Items are rendered even when a required field is missing, so one test run shows every problem.
    objects: dict[str, dict[str, Any]] = {}
    context: dict[str, Any] = {}
    for item in plan.items:
        value = _render_item(item, variables, log)
        if value is _DROPPED:
            continue
        target = context if item.list_name == "context" else objects.setdefault(item.list_name, {})
        try:
            set_nested(target, item.key_parts, value, item.key)
        except MessageError as error:
            log.error(f"The {item.label} cannot be sent: {error}", field=f"{item.list_name}/{item.index}/key")
            raise RenderFailure from None
    if not required_present:
        raise RenderFailure
    parts = MessageParts(action=action, message_id=message_id, fields=_wire_fields(action, fields))
    if action == "identify":
        objects.setdefault("traits", {})["email"] = fields["email"]
    if action == "page" and fields.get("category"):
        objects.setdefault("properties", {}).setdefault("category", fields["category"])
    parts.payload_objects = objects
    parts.context = context
    parts.integrations = plan.options.integrations  # build_message copies it into the message
    if plan.timestamp is not None:
        parts.timestamp = _render_timestamp(plan.timestamp, variables, log)
    return parts


_DROPPED = object()


def _render_item(item: ItemPlan, variables: Mapping[str, Any], log: ResultLog) -> Any:
    path = f"{item.list_name}/{item.index}/value"
    try:
        rendered = item.template.render(variables)
    except TemplateError as error:
        raise _render_failure(log, f"The {item.label}", path, error, item.template, variables) from None
    value = rendered.value
    if value is None or (isinstance(value, str) and not value.strip()) or value == []:
        log.warning(f"{_empty_reason(f'The {item.label}', rendered.missing)}; it was not sent.", field=path)
        return _DROPPED
    if rendered.missing:
        log.warning(f"{_unset_sentence(f'The {item.label}', rendered.missing)}.", field=path)
    if item.value_type == "boolean" and truth_of(value) is Truth.NO_VALUE:
        # truth.py: none/null mean "no value", in a boolean item as in a condition.
        log.warning(
            f"The {item.label} holds {to_text(value).strip()!r}, which means no value; it was not sent.", field=path
        )
        return _DROPPED
    if item.value_type is not None:
        try:
            return convert(value, item.value_type)
        except ConversionError as error:
            log.error(f"The {item.label} must be a {item.value_type}: {error}.", field=path)
            raise RenderFailure from None
        except (ValueError, RecursionError, MemoryError) as error:
            raise _unusable_value(log, f"The {item.label}", path, error) from None
    return value


def _render_timestamp(plan: FieldPlan, variables: Mapping[str, Any], log: ResultLog) -> datetime | None:
    value = _render(plan, variables, log, "timestamp")
    if value in (None, "") or (isinstance(value, str) and not value.strip()):
        log.warning("Timestamp is empty; the event is sent with the current time.", field="timestamp")
        return None
    try:
        return parse_datetime(value)
    except ConversionError as error:
        log.error(f"Timestamp: {error}.", field="timestamp")
        raise RenderFailure from None


def _render(plan: FieldPlan, variables: Mapping[str, Any], log: ResultLog, path: str, condition: bool = False) -> Any:
    try:
        rendered = plan.template.render(variables)
    except TemplateError as error:
        raise _render_failure(log, plan.label, path, error, plan.template, variables) from None
    if rendered.missing:
        value = rendered.value
        if condition or (value is not None and to_text(value).strip() != ""):
            log.warning(f"{_unset_sentence(plan.label, rendered.missing)}.", field=path)
        else:
            log.warning(_empty_sentence(plan.label, rendered.missing), field=path)
    return rendered.value


def _check_required(
    plan: BlockPlan, fields: dict[str, Any], missing: dict[str, tuple[str, ...]], log: ResultLog
) -> bool:
    """Log an error for each required field that rendered empty; True when none did."""
    failed = False
    for name in REQUIRED_FIELDS[plan.action]:
        if fields.get(name, "") == "":
            label = field_title(plan.action, name)
            log.error(f"{_empty_reason(label, missing.get(name, ()))}, and {label} is required.", field=name)
            failed = True
    if plan.action != "alias" and fields.get(_USER_ID, "") == "" and fields.get(_ANONYMOUS_ID, "") == "":
        reasons = [_empty_reason(field_title(plan.action, name), missing.get(name, ())) for name in IDENTITY_FIELDS]
        log.error(f"{'; '.join(reasons)}; Segment needs a User ID or an Anonymous ID.", field="userId")
        failed = True
    return not failed


def _wire_fields(action: str, fields: dict[str, Any]) -> dict[str, Any]:
    wire = {name: fields[name] for name in IDENTITY_FIELDS if fields.get(name, "") != ""}
    if action == "identify":
        return wire
    if action == "alias":
        return {"userId": fields["userId"], "previousId": fields["previousId"]}
    if action == "track":
        wire["event"] = fields["event"]
    elif action in {"page", "screen"}:
        wire["name"] = fields["name"]
        if fields.get("category", "") != "":
            wire["category"] = fields["category"]
    elif action == "group":
        wire["groupId"] = fields["groupId"]
    return wire  # every value is already text: render_parts stores to_text(...).strip()


def _render_failure(
    log: ResultLog,
    label: str,
    path: str,
    error: TemplateError,
    template: CompiledTemplate,
    variables: Mapping[str, Any],
) -> RenderFailure:
    """Log why `label` could not be rendered; the caller raises what this returns.

    The render itself stays inline at each caller: a helper around it cost a call per field
    of every conversation.
    """
    hint = explain_comparison(error.message, label, template.variables, variables)
    log.error(hint or f"{label} could not be rendered: {error.message}", field=path)
    return RenderFailure()


def _unusable_value(log: ResultLog, label: str, path: str, error: BaseException) -> RenderFailure:
    """A value Python cannot handle (a 5,000-digit number, nesting past the recursion limit)."""
    if isinstance(error, RecursionError):
        reason = "its value nests too deeply"
    elif isinstance(error, MemoryError):
        reason = "its value needs too much memory"
    else:
        reason = f"its value cannot be used ({excerpt(str(error), 120)})"
    log.error(f"{label} could not be rendered: {reason}.", field=path)
    return RenderFailure()


def _unset_sentence(label: str, missing: tuple[str, ...]) -> str:
    """An unset variable in a field that is not empty (`Colour: {{Favourite colour}}`)."""
    names = ", ".join(f"'{name}'" for name in missing)
    if len(missing) > 1:
        return f"{label} uses the variables {names}, which are not set, so they were treated as empty"
    return f"{label} uses the variable {names}, which is not set, so it was treated as empty"


def _empty_reason(label: str, missing: tuple[str, ...]) -> str:
    """Why `label` is empty: the variables that were not set, when that was the cause."""
    return _empty_sentence(label, missing) if missing else f"{label} is empty"


def _empty_sentence(label: str, missing: tuple[str, ...]) -> str:
    names = ", ".join(f"'{name}'" for name in missing)
    plural = "s" if len(missing) > 1 else ""
    verb = "are" if len(missing) > 1 else "is"
    return f"{label} is empty because the variable{plural} {names} {verb} not set"
