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
from quickbot_segment_plugin.options.models import MODELS_BY_ACTION, OPTIONS_ADAPTER
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
    assert OPTIONS_SCHEMA["type"] == "object"
    assert OPTIONS_SCHEMA["discriminator"] == {"propertyName": "action"}
    actions = []
    for branch in OPTIONS_SCHEMA["oneOf"]:
        assert branch["type"] == "object"
        assert "action" in branch["required"]
        assert set(branch["required"]) <= set(branch["properties"])
        assert "const" in branch["properties"]["action"]
        actions.append(branch["properties"]["action"]["const"])
    assert actions == ["identify", "alias", "track", "page", "group", "screen"]
    for path, node in _walk(OPTIONS_SCHEMA):
        if isinstance(node, dict) and path.rsplit("/", 1)[-1] != "properties":
            for forbidden in ("anyOf", "$ref", "$defs", "mapping", "if", "then", "else", "dependencies"):
                assert forbidden not in node, f"{forbidden} at {path}"
            assert node.get("default", "") is not None, f"default null at {path}"


def _field_schemas(schema: dict[str, Any], path: str = "#") -> list[tuple[str, dict[str, Any]]]:
    """Every property schema, walking the schema's structure (not its examples or names)."""
    found = []
    for index, branch in enumerate(schema.get("oneOf", [])):
        if "properties" in branch:
            found.extend(_field_schemas(branch, f"{path}/oneOf/{index}"))
    for name, field in schema.get("properties", {}).items():
        found.append((f"{path}/properties/{name}", field))
        if isinstance(field.get("items"), dict):
            found.extend(_field_schemas(field["items"], f"{path}/properties/{name}/items"))
    return found


def test_every_field_has_title_description_examples_and_documented_hints() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
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
        assert f"`{keyword}`" in readme, f"README does not document {keyword}"


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
    assert ui["action"] == {"ui:widget": "hidden"}
    assert ui["traits"]["items"]["ui:order"][:3] == ["key", "value", "type"]
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
    return options


def _mutations(options: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    keys = [*options, "unknown", "action", "traits", "integrations"]
    replacement = json_scalars | st.lists(json_scalars, max_size=2) | st.dictionaries(text, json_scalars, max_size=2)
    return st.builds(lambda key, value: {**options, key: value}, st.sampled_from(keys), replacement)


def _model_accepts(options: Any) -> bool:
    try:
        OPTIONS_ADAPTER.validate_python(options)
    except ValidationError:
        return False
    return True


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
