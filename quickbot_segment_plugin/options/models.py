"""The saved options of the Segment block, version 1: the one definition the form, `validate`
and `execute` all derive from.

The pydantic models here are the source of `block_schemas/segment.schema.json` (see
`schemas.py`), so the editor form and the server can never disagree about what a block may
hold. Field metadata (titles, descriptions, examples, `x-` hints) lives next to each field
for the same reason.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.json_schema import SkipJsonSchema

OPTIONS_VERSION = 1

ValueType = Literal["string", "number", "boolean", "datetime", "json"]

ACTION_TITLES: dict[str, str] = {
    "identify": "Identify User",
    "alias": "Alias",
    "track": "Track Event",
    "page": "Page View",
    "group": "Group",
    "screen": "Screen",
}

# Fields of which one must be set: Segment needs a userId or an anonymousId on every call but
# alias. JSON Schema can only say so with `anyOf`, which form editors render badly
# (form-schema.md), so the rule is checked by `validate()` and announced by this hint.
IDENTITY_FIELDS = ("userId", "anonymousId")


def _field(
    title: str,
    description: str,
    examples: list[Any],
    *,
    order: int,
    template: bool = True,
    widget: str = "text",
    **constraints: Any,
) -> Any:
    """A pydantic Field carrying the editor metadata every option field must have."""
    extra: dict[str, Any] = {"x-order": order, "x-template": template, "x-widget": widget}
    return Field(title=title, description=description, examples=examples, json_schema_extra=extra, **constraints)


NOT_BLANK = r"\S"


class KeyValueItem(BaseModel):
    """One trait, property or context entry, as the editor's key/value list saves it."""

    model_config = ConfigDict(extra="forbid", strict=True, title="Key/value item")

    key: str = _field(
        "Key",
        "Name of the trait or property. Dots build nested objects: `address.city`, `company.name`.",
        ["plan", "address.city"],
        order=1,
        template=False,
        min_length=1,
        max_length=255,
        pattern=NOT_BLANK,
    )
    value: str = _field(
        "Value",
        "The value; supports {{variables}}. A value that is exactly one {{variable}} keeps the "
        "variable's type (a number stays a number). An item whose value renders empty is dropped.",
        ["{{Plan}}", "premium"],
        order=2,
        default="",
    )
    type: ValueType | SkipJsonSchema[None] = _field(
        "Type",
        "Convert the value to this type before sending; leave unset to keep the variable's own type.",
        ["number"],
        order=3,
        template=False,
        widget="select",
        default=None,
    )


def _items_field(title: str, description: str, order: int, example: list[dict[str, str]]) -> Any:
    return _field(title, description, [example], order=order, template=True, widget="key-value-list", default=[])


class _ActionOptions(BaseModel):
    """What every action may carry besides its own fields."""

    model_config = ConfigDict(extra="forbid", strict=True)

    action: str
    condition: str = _field(
        "Condition",
        "Send only when this renders true. Empty, false, 0, no or off skips the block "
        "(variable-based conditional tracking). Leave blank to always send.",
        ["{{Newsletter consent}}", "{{ Score > 5 }}"],
        order=90,
        default="",
    )
    consent: str = _field(
        "Consent",
        "The end user's consent state, usually one {{variable}}: an object of category -> true/false "
        "(Segment's categoryPreferences), a list or comma-separated text of granted categories, or yes/no. "
        "When set, the event is sent only with consent and carries it as context.consent; empty or "
        "missing consent skips the block. Leave blank when this event needs no consent.",
        ["{{Consent}}", "{{Cookie preferences}}"],
        order=88,
        default="",
    )
    consentCategories: str = _field(
        "Consent categories",
        "The consent categories this event needs, comma-separated (Segment consent category ids, "
        "such as Analytics or Advertising). Blank: any consent given is enough.",
        ["Analytics", "Analytics, Advertising"],
        order=89,
        template=False,
        default="",
    )
    timestamp: str = _field(
        "Timestamp",
        "When the event happened, as an ISO-8601 date-time; leave blank for now.",
        ["{{Signup date}}", "2026-01-31T12:00:00Z"],
        order=91,
        default="",
    )
    context: list[KeyValueItem] = _items_field(
        "Context",
        "Key/value items merged into the Segment context (locale, ip, userAgent, page.url ...).",
        92,
        [{"key": "locale", "value": "{{Language}}"}],
    )
    integrations: dict[str, bool] = _field(
        "Integrations",
        "Turn destinations on or off for this event: destination name -> true/false "
        '("All": false sends to none but those set to true).',
        [{"All": True, "Mixpanel": False}],
        order=93,
        template=False,
        widget="switch-map",
        default={},
    )

    def identity_missing(self) -> bool:
        """True when neither userId nor anonymousId is set (for the actions that need one)."""
        return not any(getattr(self, name, "").strip() for name in IDENTITY_FIELDS)


def _user_id() -> Any:
    return _field(
        "User ID",
        "Unique identifier for the user. Required unless an Anonymous ID is given. Use the same "
        "format across all interactions.",
        ["{{User ID}}", "user_123"],
        order=10,
        default="",
    )


def _anonymous_id() -> Any:
    return _field(
        "Anonymous ID",
        "Identifier of a user who is not known yet, such as the session; used when there is no User ID.",
        ["{{Session ID}}"],
        order=11,
        default="",
    )


def _required_text(title: str, description: str, examples: list[str], order: int) -> Any:
    return _field(title, description, examples, order=order, min_length=1, pattern=NOT_BLANK)


class IdentifyOptions(_ActionOptions):
    """Identify User: create or update a user profile."""

    model_config = ConfigDict(title="Identify User", json_schema_extra={"x-required-one-of": list(IDENTITY_FIELDS)})

    action: Literal["identify"] = _field(
        "Action", "Create or update the user's profile in Segment.", ["identify"], order=0, template=False
    )
    userId: str = _user_id()
    anonymousId: str = _anonymous_id()
    email: str = _required_text(
        "Email",
        "User's email address; always sent as the email trait for better user matching.",
        ["{{Email}}"],
        20,
    )
    traits: list[KeyValueItem] = _items_field(
        "Traits", "Key-value pairs for user attributes.", 30, [{"key": "plan", "value": "{{Plan}}"}]
    )


class AliasOptions(_ActionOptions):
    """Alias: link a previous identity to a new one."""

    model_config = ConfigDict(title="Alias")

    action: Literal["alias"] = _field(
        "Action", "Link a previous user identifier to a new one.", ["alias"], order=0, template=False
    )
    userId: str = _required_text("User ID", "New user identifier.", ["{{User ID}}"], 10)
    previousId: str = _required_text(
        "Previous ID", "Previous user identifier to link, such as the anonymous id.", ["{{Session ID}}"], 12
    )


class TrackOptions(_ActionOptions):
    """Track Event: record what the user did."""

    model_config = ConfigDict(title="Track Event", json_schema_extra={"x-required-one-of": list(IDENTITY_FIELDS)})

    action: Literal["track"] = _field(
        "Action", "Record a custom event and its properties.", ["track"], order=0, template=False
    )
    event: str = _required_text(
        "Event Name", "Name of the event to track: descriptive and action-oriented.", ["Order Completed"], 5
    )
    userId: str = _user_id()
    anonymousId: str = _anonymous_id()
    properties: list[KeyValueItem] = _items_field(
        "Properties", "Key-value pairs for event metadata.", 30, [{"key": "plan", "value": "{{Plan}}"}]
    )


class PageOptions(_ActionOptions):
    """Page View: a virtual page view within the bot flow."""

    model_config = ConfigDict(title="Page View", json_schema_extra={"x-required-one-of": list(IDENTITY_FIELDS)})

    action: Literal["page"] = _field(
        "Action", "Track a virtual page view within the bot flow.", ["page"], order=0, template=False
    )
    name: str = _required_text("Page Name", "Page or section name.", ["Pricing"], 5)
    userId: str = _user_id()
    anonymousId: str = _anonymous_id()
    category: str = _field("Category", "Page category for organization.", ["Docs"], order=20, default="")
    properties: list[KeyValueItem] = _items_field(
        "Properties", "Additional page metadata.", 30, [{"key": "url", "value": "{{Page URL}}"}]
    )


class GroupOptions(_ActionOptions):
    """Group: associate the user with a company, team or account."""

    model_config = ConfigDict(title="Group", json_schema_extra={"x-required-one-of": list(IDENTITY_FIELDS)})

    action: Literal["group"] = _field(
        "Action",
        "Associate the user with a group (company, organization, team).",
        ["group"],
        order=0,
        template=False,
    )
    groupId: str = _required_text("Group ID", "Identifier of the group.", ["{{Company ID}}"], 5)
    userId: str = _user_id()
    anonymousId: str = _anonymous_id()
    traits: list[KeyValueItem] = _items_field(
        "Traits", "Key-value pairs for group attributes.", 30, [{"key": "name", "value": "{{Company}}"}]
    )


class ScreenOptions(_ActionOptions):
    """Screen: a screen view, for bots embedded in mobile apps."""

    model_config = ConfigDict(title="Screen", json_schema_extra={"x-required-one-of": list(IDENTITY_FIELDS)})

    action: Literal["screen"] = _field(
        "Action", "Track a screen view in a mobile app.", ["screen"], order=0, template=False
    )
    name: str = _required_text("Screen Name", "Screen name.", ["Checkout"], 5)
    userId: str = _user_id()
    anonymousId: str = _anonymous_id()
    category: str = _field("Category", "Screen category for organization.", ["Shop"], order=20, default="")
    properties: list[KeyValueItem] = _items_field(
        "Properties", "Additional screen metadata.", 30, [{"key": "step", "value": "{{Step}}"}]
    )


ActionOptions = IdentifyOptions | AliasOptions | TrackOptions | PageOptions | GroupOptions | ScreenOptions
BlockOptions = Annotated[ActionOptions, Field(discriminator="action")]
OPTIONS_ADAPTER: TypeAdapter[ActionOptions] = TypeAdapter(BlockOptions)

MODELS_BY_ACTION: dict[str, type[_ActionOptions]] = {
    "identify": IdentifyOptions,
    "alias": AliasOptions,
    "track": TrackOptions,
    "page": PageOptions,
    "group": GroupOptions,
    "screen": ScreenOptions,
}

ITEM_LIST_FIELDS = ("traits", "properties", "context")
# How one item of each list is called in messages to the bot builder ("the trait 'plan'").
ITEM_NOUNS = {"traits": "trait", "properties": "property", "context": "context item"}

# Read off the models, so the form, validation and execute cannot disagree:
# the fields that must not render empty (userId/anonymousId are a pair, IDENTITY_FIELDS) ...
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    action: tuple(name for name, info in model.model_fields.items() if info.is_required() and name != "action")
    for action, model in MODELS_BY_ACTION.items()
}
# ... and the traits/properties object each call carries (segment-analytics-python's msg layout).
PAYLOAD_OBJECTS: dict[str, tuple[str, ...]] = {
    action: tuple(name for name in ITEM_LIST_FIELDS if name != "context" and name in model.model_fields)
    for action, model in MODELS_BY_ACTION.items()
}


def templated_fields(model: type[BaseModel]) -> list[str]:
    """Names of the plain string fields of `model` that take {{ }} templates."""
    names = []
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("x-template") and info.annotation is str:
            names.append(name)
    return names


def field_title(action: str | None, name: str) -> str:
    """The label the editor shows for a field, for messages a bot builder recognises."""
    model = MODELS_BY_ACTION.get(action or "")
    if model is not None and name in model.model_fields:
        return model.model_fields[name].title or name
    if name in KeyValueItem.model_fields:
        return KeyValueItem.model_fields[name].title or name
    if name in _ActionOptions.model_fields:
        return _ActionOptions.model_fields[name].title or name
    return name
