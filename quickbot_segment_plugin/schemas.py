"""The form schemas of the block: generated from the models, committed, shipped, loaded.

Real editors (RJSF + Ajv 2020, see form-schema.md) need a shape pydantic does not emit by
default: branches inlined under a root `type: object`, a discriminator without `mapping`,
no nullable `anyOf`, no `$ref`. `generate()` rewrites pydantic's output into that shape;
`quickbot-segment schema --write` stores it in `block_schemas/`, and a test fails when the
committed files drift from the models. At run time the committed files are read (once,
lazily), so the host gets byte-for-byte what operators and editors see.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .core import REGION_HOSTS, REGION_TITLES
from .credentials import WRITE_KEY_CHARS, WRITE_KEY_MAX_CHARS, WRITE_KEY_MIN_CHARS
from .options import OPTIONS_ADAPTER, OPTIONS_VERSION

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
OPTIONS_SCHEMA_ID = f"urn:quickbot:block:segment:options:v{OPTIONS_VERSION}"
CREDENTIALS_SCHEMA_ID = "urn:quickbot:block:segment:credentials:v1"

SCHEMA_FILES = {
    "options": "segment.schema.json",
    "options-ui": "segment.ui.json",
    "credentials": "segment-credentials.schema.json",
    "credentials-ui": "segment-credentials.ui.json",
}
SchemaName = Literal["options", "options-ui", "credentials", "credentials-ui"]

# Every `x-` keyword the schemas use; README lists them for editors that run Ajv in strict
# mode (`ajv.addVocabulary(X_KEYWORDS)`), and a test keeps this list complete.
X_KEYWORDS = ("x-order", "x-template", "x-widget", "x-secret", "x-required-one-of", "x-options-version")


class CredentialsForm(BaseModel):
    """Your Segment source's Write Key and its region; stored encrypted, never shown again."""

    model_config = ConfigDict(extra="forbid", title="Segment credentials")

    writeKey: str = Field(
        title="Write Key",
        description="Your Segment source Write Key (Sources > your source > API Keys); not the Source ID. "
        "Stored encrypted.",
        examples=["9bX3kzT1QvLr5mWcYp2Ah7NdEo4Ug6Js"],
        # The same rule `Credentials` enforces when sealing, so the form rejects a bad paste early.
        min_length=WRITE_KEY_MIN_CHARS,
        max_length=WRITE_KEY_MAX_CHARS,
        pattern=f"^{WRITE_KEY_CHARS}+$",
        json_schema_extra={
            "format": "password",
            "writeOnly": True,
            "x-secret": True,
            "x-template": False,
            "x-widget": "password",
            "x-order": 1,
        },
    )
    region: Literal["us", "eu"] = Field(
        default="us",
        title="Region",
        description="Where your Segment workspace lives. EU workspaces must choose Europe, or every event is lost.",
        examples=["eu"],
        json_schema_extra={"x-template": False, "x-widget": "select", "x-order": 2},
    )


def generate() -> dict[SchemaName, dict[str, Any]]:
    """All four documents, as they must be committed."""
    options = _options_schema()
    credentials = _credentials_schema()
    return {
        "options": options,
        "options-ui": _ui_schema(_fields_of(options)),
        "credentials": credentials,
        "credentials-ui": _ui_schema(_fields_of(credentials)),
    }


def render(document: dict[str, Any]) -> str:
    """The exact text a document is committed as (stable key order, trailing newline)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in generate().items():
        path = directory / SCHEMA_FILES[name]
        path.write_text(render(document), encoding="utf-8")
        written.append(path)
    return written


@cache
def load(name: SchemaName) -> dict[str, Any]:
    """A committed document, read once; callers get their own copy to mutate."""
    text = _schema_file(SCHEMA_FILES[name]).read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def load_copy(name: SchemaName) -> dict[str, Any]:
    return copy.deepcopy(load(name))


def _schema_file(filename: str) -> Path:
    shipped = resources.files("quickbot_segment_plugin").joinpath("block_schemas").joinpath(filename)
    if shipped.is_file():
        return Path(str(shipped))
    # An editable install or a source checkout: block_schemas/ sits beside the package.
    source_tree = Path(__file__).resolve().parent.parent / "block_schemas" / filename
    if source_tree.is_file():
        return source_tree
    raise FileNotFoundError(
        f"{filename} is missing from the installed package; reinstall quickbot-segment-plugin "
        "(the wheel ships block_schemas/ inside the package)."
    )


def _options_schema() -> dict[str, Any]:
    generated = OPTIONS_ADAPTER.json_schema(mode="validation")
    definitions = generated.get("$defs", {})
    branches = [_clean(_inline(branch, definitions)) for branch in generated["oneOf"]]
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": OPTIONS_SCHEMA_ID,
        "title": "Segment",
        "description": "Send an identify, alias, track, page, group or screen call to Segment from the "
        "conversation. Every text field supports {{variable}} substitution.",
        "type": "object",
        "x-options-version": OPTIONS_VERSION,
        "discriminator": {"propertyName": "action"},
        "oneOf": branches,
    }


def _credentials_schema() -> dict[str, Any]:
    generated = TypeAdapter(CredentialsForm).json_schema(mode="validation")
    region = generated["properties"]["region"]
    region.pop("enum", None)
    region.pop("type", None)
    region["oneOf"] = [{"const": key, "title": REGION_TITLES[key]} for key in REGION_HOSTS]
    region["type"] = "string"
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": CREDENTIALS_SCHEMA_ID,
        **_clean(generated),
    }


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    """Replace every `$ref` with its definition: RJSF and Ajv's discriminator both want none."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = definitions[ref.removeprefix("#/$defs/")]
            merged = {**_inline(target, definitions), **{k: v for k, v in node.items() if k != "$ref"}}
            return merged
        return {key: _inline(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(value, definitions) for value in node]
    return node


def _clean(node: Any) -> Any:
    """Drop what editors mishandle: `default: null` (a dropdown set to null, form-schema.md)."""
    if isinstance(node, dict):
        cleaned = {key: _clean(value) for key, value in node.items() if key != "$defs"}
        if "default" in cleaned and cleaned["default"] is None:
            del cleaned["default"]
        return cleaned
    if isinstance(node, list):
        return [_clean(value) for value in node]
    return node


def _fields_of(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Field name -> its schema, over every branch (the first branch that has a field wins)."""
    fields: dict[str, dict[str, Any]] = {}
    for branch in schema.get("oneOf", [schema]):
        for name, field_schema in branch.get("properties", {}).items():
            fields.setdefault(name, field_schema)
    return fields


def _ui_schema(fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """RJSF's uiSchema from the same field metadata: order, hidden action, widgets, help."""
    ordered = sorted(fields, key=lambda name: (fields[name].get("x-order", 50), name))
    ui: dict[str, Any] = {"ui:order": [*ordered, "*"]}
    for name in ordered:
        ui[name] = _ui_field(fields[name])
    return ui


def _ui_field(field_schema: dict[str, Any]) -> dict[str, Any]:
    widget = field_schema.get("x-widget")
    entry: dict[str, Any] = {}
    if "const" in field_schema:
        # The branch is chosen from the oneOf selector; a second, editable copy of the id confuses.
        return {"ui:widget": "hidden"}
    if widget == "password":
        entry["ui:widget"] = "password"
    elif widget == "select":
        entry["ui:widget"] = "select"
    examples = field_schema.get("examples") or []
    if examples and isinstance(examples[0], str):
        entry["ui:placeholder"] = examples[0]
    if field_schema.get("x-template"):
        entry["ui:help"] = "Supports {{variables}}, e.g. {{First name}}."
    if field_schema.get("type") == "array":
        item_fields = field_schema["items"].get("properties", {})
        entry["items"] = _ui_schema(item_fields)
        entry["ui:options"] = {"orderable": True, "addable": True, "removable": True}
    return entry
