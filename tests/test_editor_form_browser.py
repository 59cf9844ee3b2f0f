"""The block's form as a bot builder meets it: the shipped schema and uiSchema rendered by
RJSF 6 with its Ajv 8 validator on Ajv2020 (default options), in Debian's Chromium.

For each action: every required field left empty in turn shows that field's error and no
other; a valid block submits with no error and reopens unchanged; switching action drops the
other action's fields; options saved by 0.1.0 open on their action. The harness
(tests/form: React 18, RJSF, Ajv, bundled by esbuild from package-lock.json) is built by
.ci/form-deps.sh, which .ci/run calls and exports QUICKBOT_FORM_HARNESS for; without that
variable the fixture builds it itself. Skipped only when chromium or npm is missing and CI is
not set. With QUICKBOT_FORM_SCREENSHOTS=<dir> each action's form is also saved as <dir>/<action>.png
(the pictures in docs/bot-builders/form/).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quickbot_segment_plugin import schemas
from quickbot_segment_plugin.execution.validation import check_options
from quickbot_segment_plugin.options.models import ACTION_TITLES, IDENTITY_ACTIONS, MODELS_BY_ACTION, REQUIRED_FIELDS

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
# Read at import: the autouse fixture in conftest.py removes QUICKBOT_* variables during each test.
HARNESS = os.environ.get("QUICKBOT_FORM_HARNESS")
SCREENSHOTS = os.environ.get("QUICKBOT_FORM_SCREENSHOTS")
WAIT_MS = 20_000  # only bounds a broken run

SCHEMA = schemas.load_copy("options")
UI_SCHEMA = schemas.load_copy("options-ui")
SAVED_0_1_0: dict[str, dict[str, Any]] = json.loads((REPO / "tests" / "form" / "saved-0.1.0.json").read_text("utf-8"))
# What a builder types into each required field.
TYPED = {
    "email": "{{Email}}",
    "userId": "{{User ID}}",
    "previousId": "{{Session ID}}",
    "event": "Order Completed",
    "name": "Checkout",
    "groupId": "{{Company ID}}",
}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"CI is set, so the editor form test must run, but {reason}.")
    pytest.skip(f"editor form test skipped: {reason}")


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if HARNESS:
        built = Path(HARNESS)
    else:
        if shutil.which("npm") is None or shutil.which("node") is None:
            _unavailable("node/npm is missing (apt-get install nodejs npm)")
        target = tmp_path_factory.mktemp("form-harness")
        script = REPO / ".ci" / "form-deps.sh"
        built_by = subprocess.run([str(script), str(target)], capture_output=True, text=True, check=False)
        if built_by.returncode != 0:
            pytest.fail(f"{script} {target} failed (exit {built_by.returncode}):\n{built_by.stderr[-2000:]}")
        built = target
    bundle = built / "dist" / "harness.js"
    if not bundle.is_file():
        pytest.fail(f"QUICKBOT_FORM_HARNESS={built} has no dist/harness.js: run .ci/form-deps.sh {built}")
    return built


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


class EditorForm:
    """One block's form in a page, used through what a builder sees: selects, inputs, errors."""

    def __init__(self, browser: Any, harness: Path) -> None:
        self.context = browser.new_context(viewport={"width": 720, "height": 900}, color_scheme="light")
        self.page = self.context.new_page()
        self.page_errors: list[str] = []
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        self.page.goto((harness / "index.html").as_uri())
        self.page.add_script_tag(path=str(harness / "dist" / "harness.js"))

    def open(self, options: dict[str, Any] | None, *, host_filter: bool = True) -> None:
        self.page.evaluate(
            "([schema, ui, data, hostFilter]) => harness.mount(schema, ui, data, {hostFilter})",
            [SCHEMA, UI_SCHEMA, options, host_filter],
        )
        self.page.wait_for_selector("#root_action", timeout=WAIT_MS)

    def action_shown(self) -> str:
        label: str = self.page.eval_on_selector("#root_action", "(select) => select.selectedOptions[0].textContent")
        return label

    def choose_action(self, action: str) -> None:
        self.page.select_option("#root_action", label=ACTION_TITLES[action])
        self.page.wait_for_function(
            "(action) => harness.state.current && harness.state.current.action === action", arg=action
        )

    def type_into(self, field: str, text: str) -> None:
        self.page.fill(f"#root_{field}", text)

    def fields_shown(self) -> set[str]:
        ids: list[str] = self.page.eval_on_selector_all("[id^=root_]", "(nodes) => nodes.map((node) => node.id)")
        return {node_id.removeprefix("root_") for node_id in ids if node_id.count("_") == 1}

    def submit(self) -> None:
        before = self.page.evaluate("() => harness.state.submitted.length")
        self.page.evaluate("() => { harness.state.errors = null; }")
        self.page.click("button[type=submit]")
        self.page.wait_for_function(
            "(before) => harness.state.errors !== null || harness.state.submitted.length > before",
            arg=before,
            timeout=WAIT_MS,
        )

    def errors_listed(self) -> list[str]:
        """The error list RJSF shows above the form, one line per error."""
        listed: list[str] = self.page.eval_on_selector_all(
            ".panel-danger li", "(items) => items.map((item) => item.textContent)"
        )
        return listed

    def errors_by_field(self) -> dict[str, list[str]]:
        """The errors RJSF shows under fields, by the id of the field they sit under ("" for the form)."""
        found: dict[str, list[str]] = self.page.evaluate(
            """() => {
                const byField = {};
                for (const item of document.querySelectorAll('.error-detail li')) {
                    const group = item.closest('.form-group');
                    const input = group && group.querySelector('input, select, textarea');
                    const key = input && group.querySelector('.error-detail') === item.parentElement
                        ? input.id.replace(/^root_/, '') : '';
                    (byField[key] = byField[key] || []).push(item.textContent);
                }
                return byField;
            }"""
        )
        return found

    def data(self) -> Any:
        return self.page.evaluate("() => harness.state.current")

    def submitted(self) -> list[Any]:
        submitted: list[Any] = self.page.evaluate("() => harness.state.submitted")
        return submitted

    def close(self) -> None:
        assert self.page_errors == [], f"the form raised in the page: {self.page_errors}"
        self.context.close()


@pytest.fixture
def form(browser: Any, harness: Path) -> Iterator[EditorForm]:
    opened = EditorForm(browser, harness)
    yield opened
    opened.close()


def _required_slots(action: str) -> list[str]:
    """The fields a builder must fill in: the model's required ones, and User ID (or Anonymous ID)."""
    slots = list(REQUIRED_FIELDS[action])
    if action in IDENTITY_ACTIONS:
        slots.insert(0, "userId")
    return slots


def _fill_new_block(form: EditorForm, action: str, leave_empty: str | None) -> None:
    form.open({})
    form.choose_action(action)
    for field in _required_slots(action):
        if field != leave_empty:
            form.type_into(field, TYPED[field])


CASES = [(action, field) for action in MODELS_BY_ACTION for field in _required_slots(action)]


@pytest.mark.parametrize(("action", "empty"), CASES, ids=[f"{a}-{f}" for a, f in CASES])
def test_an_empty_required_field_shows_its_own_error_and_no_other(form: EditorForm, action: str, empty: str) -> None:
    _fill_new_block(form, action, leave_empty=empty)
    form.submit()
    listed = form.errors_listed()
    assert len(listed) == 1, f"{ACTION_TITLES[action]} without {empty}: {listed}"
    title = "User ID or Anonymous ID" if empty == "userId" and action in IDENTITY_ACTIONS else None
    title = title or MODELS_BY_ACTION[action].model_fields[empty].title
    assert listed == [f"must have required property '{title}'"]
    assert form.errors_by_field() == {empty: listed}
    assert form.submitted() == []
    if SCREENSHOTS and (action, empty) == ("identify", "userId"):
        form.page.screenshot(path=str(Path(SCREENSHOTS) / "errors.png"), full_page=True)


@pytest.mark.parametrize("action", list(MODELS_BY_ACTION))
def test_without_the_host_filter_the_only_extra_lines_are_the_generic_condition_ones(
    form: EditorForm, action: str
) -> None:
    """RJSF with no transformErrors at all: the field's error, plus Ajv's 'must match "then"
    schema' for the action's `if` (and "else" for the identity rule): nothing from another action."""
    empty = _required_slots(action)[-1]
    form.open({"action": action}, host_filter=False)
    for field in _required_slots(action):
        if field != empty:
            form.type_into(field, TYPED[field])
    form.submit()
    listed = form.errors_listed()
    field_errors = [line for line in listed if "required property" in line]
    generic = [line for line in listed if line not in field_errors]
    assert len(field_errors) == 1
    assert set(generic) <= {'must match "then" schema', 'must match "else" schema'}
    assert 'must match "then" schema' in generic


@pytest.mark.parametrize("action", list(MODELS_BY_ACTION))
def test_a_valid_block_submits_and_reopens_unchanged(form: EditorForm, action: str) -> None:
    _fill_new_block(form, action, leave_empty=None)
    form.submit()
    assert form.errors_listed() == []
    [saved] = form.submitted()
    assert saved["action"] == action
    assert check_options(saved).problems == []
    form.open(saved)
    assert form.action_shown() == ACTION_TITLES[action]
    form.submit()
    assert form.submitted() == [saved]


@pytest.mark.parametrize("action", list(MODELS_BY_ACTION))
def test_options_saved_by_0_1_0_open_on_their_action_and_save_unchanged(form: EditorForm, action: str) -> None:
    saved = SAVED_0_1_0[action]
    form.open(saved)
    assert form.action_shown() == ACTION_TITLES[action]
    assert set(MODELS_BY_ACTION[action].model_fields) - {"action"} <= form.fields_shown() | {"integrations"}
    form.submit()
    assert form.errors_listed() == []
    assert form.submitted() == [saved]
    if SCREENSHOTS:
        folder = Path(SCREENSHOTS)
        folder.mkdir(parents=True, exist_ok=True)
        form.page.screenshot(path=str(folder / f"{action}.png"), full_page=True)


ACTIONS = list(MODELS_BY_ACTION)
SWITCHES = [(ACTIONS[index - 1], action) for index, action in enumerate(ACTIONS)] + [("track", "identify")]


@pytest.mark.parametrize(("start", "switch_to"), SWITCHES, ids=[f"{a}-to-{b}" for a, b in SWITCHES])
def test_switching_action_drops_the_other_actions_fields(form: EditorForm, start: str, switch_to: str) -> None:
    form.open(SAVED_0_1_0[start])
    form.choose_action(switch_to)
    own = set(MODELS_BY_ACTION[switch_to].model_fields)
    left_over = set(form.data()) - own
    assert left_over == set(), f"{start} -> {switch_to} kept {left_over}"
    assert form.fields_shown() - {"integrations"} <= own
    for field in _required_slots(switch_to):
        if field not in form.data():
            form.type_into(field, TYPED[field])
    form.submit()
    assert form.errors_listed() == []
    [saved] = form.submitted()
    assert set(saved) <= own
    assert check_options(saved).problems == []


def test_the_key_value_type_select_reads_unset_when_unset(form: EditorForm) -> None:
    form.open(SAVED_0_1_0["track"] | {"properties": [{"key": "plan", "value": "{{Plan}}"}]})
    shown = form.page.eval_on_selector("#root_properties_0_type", "(select) => select.selectedOptions[0].textContent")
    assert shown == ""
    form.submit()
    assert "type" not in form.submitted()[0]["properties"][0]


def test_errors_in_the_items_list_point_at_the_item(form: EditorForm) -> None:
    form.open(SAVED_0_1_0["identify"] | {"traits": [{"key": "plan", "value": "{{Plan}}"}, {"value": "x"}]})
    form.submit()
    assert form.errors_by_field() == {"traits_1_key": ["must have required property 'Key'"]}


def test_the_schemas_compile_under_ajv_strict_mode_with_the_documented_vocabulary(form: EditorForm) -> None:
    for name in ("options", "credentials"):
        document = schemas.load_copy(name)  # type: ignore[call-overload]
        compiled = form.page.evaluate(
            "([schema, keywords]) => harness.strictCompile(schema, keywords)", [document, list(schemas.X_KEYWORDS)]
        )
        assert compiled is None, f"{name}: {compiled}"
        undeclared = form.page.evaluate("(schema) => harness.strictCompile(schema, [])", document)
        assert undeclared is not None and "x-" in undeclared
