"""The form schemas: committed = generated, valid 2020-12, shaped for RJSF/Ajv, and in
agreement with the models on every input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from quickbot_segment_plugin import schemas
from quickbot_segment_plugin.execution.validation import check_options
from quickbot_segment_plugin.options.models import (
    ACTION_TITLES,
    IDENTITY_ACTIONS,
    IDENTITY_FIELDS,
    MAX_ITEMS,
    MODELS_BY_ACTION,
    OPTIONS_ADAPTER,
)
from quickbot_segment_plugin.schemas import CredentialsForm

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "block_schemas"

OPTIONS_SCHEMA = schemas.load("options")
CREDENTIALS_SCHEMA = schemas.load("credentials")
OPTIONS_VALIDATOR = jsonschema.Draft202012Validator(OPTIONS_SCHEMA)
CREDENTIALS_VALIDATOR = jsonschema.Draft202012Validator(CREDENTIALS_SCHEMA)


@pytest.mark.parametrize("name", sorted(schemas.SCHEMA_FILES))
def test_committed_files_equal_what_the_models_generate(name: schemas.SchemaName) -> None:
    committed = (COMMITTED / schemas.SCHEMA_FILES[name]).read_text(encoding="utf-8")
    assert committed == schemas.render(schemas.generate()[name]), (
        "block_schemas/ is out of date: run `quickbot-segment schema --write`"
    )


def test_the_installed_package_ships_the_same_files() -> None:
    for name, filename in schemas.SCHEMA_FILES.items():
        assert schemas.load(name) == json.loads((COMMITTED / filename).read_text(encoding="utf-8"))  # type: ignore[arg-type]


@pytest.mark.parametrize("schema", [OPTIONS_SCHEMA, CREDENTIALS_SCHEMA], ids=["options", "credentials"])
def test_schemas_pass_the_2020_12_meta_schema(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(":v1")
    jsonschema.Draft202012Validator.check_schema(schema)


def _walk(node: Any, path: str = "#") -> list[tuple[str, Any]]:
    found = [(path, node)]
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_walk(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_walk(value, f"{path}/{index}"))
    return found


def test_options_schema_has_the_shape_real_editors_need() -> None:
    """One `action` select, then one `if`/`then` per action (form-schema.md: no root `oneOf`,
    whose every branch Ajv reports, no `anyOf`, no `$ref`, no `default: null`)."""
    assert OPTIONS_SCHEMA["type"] == "object"
    assert OPTIONS_SCHEMA["required"] == ["action"]
    action = OPTIONS_SCHEMA["properties"]["action"]
    assert [choice["const"] for choice in action["oneOf"]] == ["identify", "alias", "track", "page", "group", "screen"]
    assert [choice["title"] for choice in action["oneOf"]] == [ACTION_TITLES[c["const"]] for c in action["oneOf"]]
    rules = OPTIONS_SCHEMA["allOf"]
    assert [rule["if"]["properties"]["action"]["const"] for rule in rules] == list(MODELS_BY_ACTION)
    for rule in rules:
        then = rule["then"]
        assert set(then["required"]) <= set(then["properties"])
        assert then["properties"]["action"] == {}
        assert then["additionalProperties"] is False
    for path, node in _walk(OPTIONS_SCHEMA):
        if isinstance(node, dict) and path.rsplit("/", 1)[-1] != "properties":
            for forbidden in ("anyOf", "$ref", "$defs", "mapping", "discriminator", "dependencies"):
                assert forbidden not in node, f"{forbidden} at {path}"
            assert "default" not in node or node["default"] not in (None, "", [], {}), f"empty default at {path}"
    assert "oneOf" not in OPTIONS_SCHEMA


def test_every_list_is_capped() -> None:
    capped = 0
    for path, field in _field_schemas(OPTIONS_SCHEMA):
        if field.get("type") == "array":
            assert field["maxItems"] == MAX_ITEMS, path
            capped += 1
        elif field.get("type") == "object" and "additionalProperties" in field:
            assert field["maxProperties"] == MAX_ITEMS, path
            capped += 1
    assert capped >= 6


def _field_schemas(schema: dict[str, Any], path: str = "#") -> list[tuple[str, dict[str, Any]]]:
    """Every property schema, walking the schema's structure (not its examples or names)."""
    found = []
    for index, rule in enumerate(schema.get("allOf", [])):
        found.extend(_field_schemas(rule["then"], f"{path}/allOf/{index}/then"))
    for name, field in schema.get("properties", {}).items():
        if field == {}:
            continue  # `action: {}` in an action's `then`: the root declares the field
        found.append((f"{path}/properties/{name}", field))
        if isinstance(field.get("items"), dict):
            found.extend(_field_schemas(field["items"], f"{path}/properties/{name}/items"))
    return found


def test_every_field_has_title_description_examples_and_documented_hints() -> None:
    host_docs = (REPO / "docs" / "host-integrators" / "editor-form.md").read_text(encoding="utf-8")
    for schema in (OPTIONS_SCHEMA, CREDENTIALS_SCHEMA):
        fields = _field_schemas(schema)
        assert len(fields) >= 2
        for path, field in fields:
            for keyword in ("title", "description", "examples"):
                assert field.get(keyword), f"{path} has no {keyword}"
        for path, node in _walk(schema):
            if isinstance(node, dict) and "/examples" not in path:
                for keyword in node:
                    if keyword.startswith("x-"):
                        assert keyword in schemas.X_KEYWORDS, f"undeclared hint {keyword} at {path}"
    for keyword in schemas.X_KEYWORDS:
        assert f"`{keyword}`" in host_docs, f"docs/host-integrators/editor-form.md does not document {keyword}"


@pytest.mark.parametrize("schema", [OPTIONS_SCHEMA, CREDENTIALS_SCHEMA], ids=["options", "credentials"])
def test_every_example_validates_against_its_field(schema: dict[str, Any]) -> None:
    checked = 0
    for path, field in _field_schemas(schema):
        validator = jsonschema.Draft202012Validator(field)
        for example in field["examples"]:
            errors = list(validator.iter_errors(example))
            assert not errors, f"example {example!r} of {path}: {errors[0].message}"
            checked += 1
    assert checked >= 2


def test_credentials_schema_masks_the_write_key_and_titles_the_regions() -> None:
    write_key = CREDENTIALS_SCHEMA["properties"]["writeKey"]
    assert write_key["format"] == "password"
    assert write_key["writeOnly"] is True
    assert write_key["x-secret"] is True
    assert write_key["x-template"] is False
    region = CREDENTIALS_SCHEMA["properties"]["region"]
    assert [choice["const"] for choice in region["oneOf"]] == ["us", "eu"]
    assert all(choice["title"] for choice in region["oneOf"])


def test_ui_schemas_order_fields_and_hide_the_action() -> None:
    ui = schemas.load("options-ui")
    assert ui["ui:order"][0] == "action"
    assert ui["ui:order"][-1] == "*"
    assert ui["action"] == {"ui:widget": "select"}
    assert ui["traits"]["items"]["ui:order"][:3] == ["key", "value", "type"]
    # A placeholder on a select labels its empty choice: "number" there reads as the saved type.
    for name in ("traits", "properties", "context"):
        assert "ui:placeholder" not in ui[name]["items"]["type"]
    credentials_ui = schemas.load("credentials-ui")
    assert credentials_ui["writeKey"]["ui:widget"] == "password"
    assert credentials_ui["ui:order"][:2] == ["writeKey", "region"]


# --- models and schema agree -------------------------------------------------------------

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
non_blank = text.filter(lambda value: value.strip() != "")
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
value_types = st.sampled_from(["string", "number", "boolean", "datetime", "json"])


@st.composite
def items(draw: st.DrawFn) -> dict[str, Any]:
    item: dict[str, Any] = {"key": draw(non_blank.filter(lambda key: len(key) <= 255))}
    if draw(st.booleans()):
        item["value"] = draw(text)
    if draw(st.booleans()):
        item["type"] = draw(value_types)
    return item


@st.composite
def valid_options(draw: st.DrawFn) -> dict[str, Any]:
    action = draw(st.sampled_from(sorted(MODELS_BY_ACTION)))
    model = MODELS_BY_ACTION[action]
    options: dict[str, Any] = {"action": action}
    for name, info in model.model_fields.items():
        if name == "action":
            continue
        if not info.is_required() and not draw(st.booleans()):
            continue
        annotation = info.annotation
        if annotation is str:
            options[name] = draw(non_blank if info.is_required() else text)
        elif name == "integrations":
            options[name] = draw(st.dictionaries(text, st.booleans(), max_size=3))
        else:
            options[name] = draw(st.lists(items(), max_size=3))
    if action in IDENTITY_ACTIONS and not any(str(options.get(name, "")).strip() for name in IDENTITY_FIELDS):
        options[draw(st.sampled_from(IDENTITY_FIELDS))] = draw(non_blank)
    return options


def _mutations(options: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    keys = [*options, "unknown", "action", "traits", "integrations", "userId", "anonymousId"]
    replacement = json_scalars | st.lists(json_scalars, max_size=2) | st.dictionaries(text, json_scalars, max_size=2)
    return st.builds(lambda key, value: {**options, key: value}, st.sampled_from(keys), replacement)


def _model_accepts(options: Any) -> bool:
    """The models, plus the one rule the schema states beside them: User ID or Anonymous ID."""
    try:
        model = OPTIONS_ADAPTER.validate_python(options)
    except ValidationError:
        return False
    return model.action not in IDENTITY_ACTIONS or not model.identity_missing()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(valid_options())
def test_whatever_the_models_accept_the_schema_accepts(options: dict[str, Any]) -> None:
    assert _model_accepts(options)
    dumped = OPTIONS_ADAPTER.dump_python(OPTIONS_ADAPTER.validate_python(options), mode="json", exclude_none=True)
    assert not list(OPTIONS_VALIDATOR.iter_errors(options))
    assert not list(OPTIONS_VALIDATOR.iter_errors(dumped))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(valid_options().flatmap(_mutations))
def test_models_and_schema_agree_on_broken_options_too(options: dict[str, Any]) -> None:
    schema_accepts = not list(OPTIONS_VALIDATOR.iter_errors(options))
    assert _model_accepts(options) == schema_accepts


@settings(max_examples=200)
@given(st.fixed_dictionaries({"writeKey": json_scalars}, optional={"region": json_scalars, "extra": text}))
def test_credentials_form_model_and_schema_agree(values: dict[str, Any]) -> None:
    try:
        CredentialsForm.model_validate(values, strict=True)
        model_accepts = True
    except ValidationError:
        model_accepts = False
    assert model_accepts == (not list(CREDENTIALS_VALIDATOR.iter_errors(values)))


def test_the_message_layout_in_core_agrees_with_the_option_models() -> None:
    """core.message says which object (traits/properties) each call carries; the models must agree."""
    from quickbot_segment_plugin.core import PAYLOAD_OBJECTS
    from quickbot_segment_plugin.options import ITEM_LIST_FIELDS, MODELS_BY_ACTION

    derived = {
        action: tuple(name for name in ITEM_LIST_FIELDS if name != "context" and name in model.model_fields)
        for action, model in MODELS_BY_ACTION.items()
    }
    assert derived == PAYLOAD_OBJECTS


SAVED_0_1_0: dict[str, dict[str, Any]] = json.loads((REPO / "tests" / "form" / "saved-0.1.0.json").read_text("utf-8"))


@pytest.mark.parametrize("action", sorted(SAVED_0_1_0))
def test_options_saved_with_0_1_0_still_validate(action: str) -> None:
    """0.1.0's form saved every field, empty ones as "": the shape is unchanged, so these open
    and save as they are, with no upgrade."""
    saved = SAVED_0_1_0[action]
    assert saved["action"] == action
    assert not list(OPTIONS_VALIDATOR.iter_errors(saved))
    checked = check_options(saved)
    assert checked.problems == []
    assert checked.upgraded is not None and not checked.upgraded.legacy


@pytest.mark.parametrize("action", sorted(IDENTITY_ACTIONS))
def test_the_schema_requires_user_id_or_anonymous_id(action: str) -> None:
    saved = {**SAVED_0_1_0[action], "userId": "", "anonymousId": " "}
    errors = list(OPTIONS_VALIDATOR.iter_errors(saved))
    assert errors, "an action with neither User ID nor Anonymous ID passed the schema"
    assert [problem.path for problem in check_options(saved).problems] == ["userId"]
    assert not list(OPTIONS_VALIDATOR.iter_errors({**saved, "anonymousId": "{{Session ID}}"}))
    assert not list(OPTIONS_VALIDATOR.iter_errors({**saved, "userId": "u1"}))


@pytest.mark.parametrize("field", ["traits", "properties", "context", "integrations"])
def test_the_schema_and_validate_refuse_more_than_max_items(field: str) -> None:
    """200 items, far above a real block, pass; one more is refused, naming the field."""
    assert MAX_ITEMS == 200
    action = "identify" if field == "traits" else "track"
    base = SAVED_0_1_0[action]
    many: Any = (
        {f"Destination {i}": True for i in range(MAX_ITEMS + 1)}
        if field == "integrations"
        else [{"key": f"k{i}", "value": "v"} for i in range(MAX_ITEMS + 1)]
    )
    at_cap: Any = dict(list(many.items())[:MAX_ITEMS]) if field == "integrations" else many[:MAX_ITEMS]
    assert not list(OPTIONS_VALIDATOR.iter_errors({**base, field: at_cap}))
    assert check_options({**base, field: at_cap}).problems == []
    assert list(OPTIONS_VALIDATOR.iter_errors({**base, field: many}))
    problems = check_options({**base, field: many}).problems
    assert [problem.path for problem in problems] == [field]
    assert f"at most {MAX_ITEMS} items; it has {MAX_ITEMS + 1}" in problems[0].message
