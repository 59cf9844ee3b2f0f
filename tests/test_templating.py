"""What a bot builder sees when a field is a template: names as the editor writes them, typed
values, missing variables, errors that point at the problem, and the operator's limits."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import pytest

from quickbot_segment_plugin.core.errors import ConfigurationError, PluginError
from quickbot_segment_plugin.templating import (
    ALLOWED_FILTERS,
    LIMIT_SETTINGS,
    Rendered,
    TemplateEngine,
    TemplateError,
    TemplateLimitError,
    TemplateLimits,
    default_engine,
)
from quickbot_segment_plugin.templating.state import RenderState

VARIABLES: dict[str, object] = {
    "First name": "Ada",
    "Last name": "Lovelace",
    "Prénom": "Zoé",
    "User ID": "u-42",
    "E-mail": "ada@example.com",
    "utm.source": "newsletter",
    "2nd answer": "blue",
    "Age": 36,
    "Score": 7,
    "Price": 9.5,
    "Subscribed": True,
    "Colors": ["red", "green"],
    "Plan": "pro",
    "Unanswered": None,
}


@pytest.fixture(scope="module")
def engine() -> TemplateEngine:
    return TemplateEngine()


def render(engine: TemplateEngine, source: str, variables: dict[str, object] | None = None) -> Rendered:
    return engine.render(source, VARIABLES if variables is None else variables)


# -- variable names as the flow editor writes them ------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{First name}}", "Ada"),
        ("{{ First name }}", "Ada"),
        ("{{Prénom}}", "Zoé"),
        ("{{ User ID }}", "u-42"),
        ("{{E-mail}}", "ada@example.com"),
        ("{{ utm.source }}", "newsletter"),
        ("{{2nd answer}}", "blue"),
        ("Hello {{First name}} {{Last name}}!", "Hello Ada Lovelace!"),
        ("{{ First name | upper }}", "ADA"),
        ("{{ First name ~ ' ' ~ Last name }}", "Ada Lovelace"),
        ("{{ First name.upper() }}", "ADA"),
        ("{{ vars['E-mail'] }}", "ada@example.com"),
        ('{{ vars["utm.source"] | upper }}', "NEWSLETTER"),
        ("{% if First name == 'Ada' %}hi {{ User ID }}{% endif %}", "hi u-42"),
        ("{% for c in Colors %}{{ loop.index }}={{ c }};{% endfor %}", "1=red;2=green;"),
    ],
)
def test_variable_names_with_spaces_unicode_dashes_and_dots(engine: TemplateEngine, source: str, expected: str) -> None:
    assert render(engine, source).value == expected


def test_a_name_with_a_dot_falls_back_to_attribute_access_when_no_such_variable(engine: TemplateEngine) -> None:
    variables: dict[str, object] = {"user": {"name": "Ada"}}
    assert engine.render("{{ user.name }}", variables).value == "Ada"
    assert engine.render("{{ user.name }}", {**variables, "user.name": "exact"}).value == "exact"


def test_jinja_keywords_still_work_when_no_variable_has_that_name(engine: TemplateEngine) -> None:
    assert render(engine, "{{ not Subscribed }}").value is False
    assert engine.render("{{ not Subscribed }}", {"not Subscribed": "the variable"}).value == "the variable"
    assert render(engine, "{{ 'yes' if Score > 5 else 'no' }}").value == "yes"
    assert render(engine, "{{ Age is defined and Score is odd }}").value is True


def test_subtraction_needs_spaces_because_a_dash_joins_a_name(engine: TemplateEngine) -> None:
    assert render(engine, "{{ Score - 2 }}").value == 5
    assert engine.render("{{Score-2}}", {"Score": 7, "Score-2": "dashed"}).value == "dashed"


# -- typed values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{Age}}", 36),
        ("{{ Score * 2 }}", 14),
        ("{{ Price }}", 9.5),
        ("{{Subscribed}}", True),
        ("{{ Colors }}", ["red", "green"]),
        ("{{ Colors | map('upper') | list }}", ["RED", "GREEN"]),
        ("{{ range(3) }}", [0, 1, 2]),
        ("{{ {'plan': Plan, 'n': 1} }}", {"plan": "pro", "n": 1}),
        ("{{ (1, 2) }}", [1, 2]),
        ("{{ Age > 30 }}", True),
        ("{{ none }}", None),
    ],
)
def test_a_field_that_is_one_expression_keeps_its_type(engine: TemplateEngine, source: str, expected: object) -> None:
    value = render(engine, source).value
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("  {{Age}} ", "  36 "),
        ("{{Age}}{{Score}}", "367"),
        ("Age: {{ Age }}", "Age: 36"),
        ("{{ Colors }}!", "['red', 'green']!"),
        ("{{Subscribed}} ", "True "),
        ("{{ Age }}{# note #}", "36"),
    ],
)
def test_surrounding_text_makes_the_field_text(engine: TemplateEngine, source: str, expected: str) -> None:
    assert render(engine, source).value == expected


def test_rendered_output_is_never_rendered_again(engine: TemplateEngine) -> None:
    variables: dict[str, object] = {"Payload": "{{ 7*7 }}{% if true %}x{% endif %}"}
    assert engine.render("{{Payload}}", variables).value == "{{ 7*7 }}{% if true %}x{% endif %}"
    assert engine.render("Got {{ Payload | upper }}", variables).value == "Got {{ 7*7 }}{% IF TRUE %}X{% ENDIF %}"
    assert engine.render("{{ '{{ 7*7 }}' }}", {}).value == "{{ 7*7 }}"


def test_jinja_internals_are_refused_as_values(engine: TemplateEngine) -> None:
    for source in ("{{ Plan.upper }}", "{{ vars }}", "x{{ range }}", "{% for i in Colors %}{{ loop }}{% endfor %}"):
        with pytest.raises(TemplateError) as caught:
            render(engine, source)
        assert "0x" not in str(caught.value)  # no memory address, no repr of an internal


def test_the_variables_table_is_not_a_mapping_so_it_cannot_be_dumped(engine: TemplateEngine) -> None:
    """The sandbox treats every Mapping as data a template may print, iterate and index, with no
    exception for `vars` (every variable of the conversation): it must never become one."""
    assert not isinstance(RenderState(TemplateLimits(), VARIABLES).view, Mapping)
    for source in (
        "{{ [vars] }}",
        "{{ {'all': vars} }}",
        "{{ vars | list }}",
        "{{ vars | dictsort }}",
        "{{ vars.items() }}",
    ):
        with pytest.raises(TemplateError):
            render(engine, source)
    assert render(engine, "{{ vars['E-mail'] }}").value == "ada@example.com"


# -- missing variables ----------------------------------------------------------------------


def test_missing_variables_render_empty_and_are_reported_in_first_use_order(engine: TemplateEngine) -> None:
    result = render(engine, "Hi {{ Nickname }} {{First name}}, {{ Country }}/{{ Nickname }} {{Unanswered}}")
    assert result.value == "Hi  Ada, / "
    assert result.missing == ("Nickname", "Country", "Unanswered")


def test_a_missing_single_expression_is_none(engine: TemplateEngine) -> None:
    assert render(engine, "{{Nickname}}") == Rendered(None, ("Nickname",))
    assert render(engine, "{{ Unanswered }}") == Rendered(None, ("Unanswered",))
    assert render(engine, "{{ vars['No such'] }}") == Rendered(None, ("No such",))
    assert render(engine, "{{ Nick name | upper }}") == Rendered("", ("Nick name",))


def test_variables_handled_by_the_template_are_not_reported(engine: TemplateEngine) -> None:
    assert render(engine, "{{ Nickname | default('friend') }}") == Rendered("friend", ())
    assert render(engine, "{{ 'x' if Nickname is defined else 'y' }}") == Rendered("y", ())
    assert render(engine, "{{ Unanswered is none }}") == Rendered(True, ())
    assert render(engine, "{% if Age > 1 %}ok{% else %}{{ Nickname }}{% endif %}") == Rendered("ok", ())


def test_an_unset_variable_in_a_calculation_is_a_clear_error(engine: TemplateEngine) -> None:
    with pytest.raises(TemplateError) as caught:
        render(engine, "Total: {{ Quantity * 2 }}")
    assert "Quantity" in caught.value.message and "not set" in caught.value.message
    assert caught.value.line == 1


# -- fast paths -----------------------------------------------------------------------------


def test_plain_text_is_returned_as_is(engine: TemplateEngine) -> None:
    source = "Order {placed} } { { %} #} }} {x} { %"
    result = engine.render(source, VARIABLES)
    assert result.value is source
    assert result.missing == ()


def test_a_single_variable_returns_the_value_itself(engine: TemplateEngine) -> None:
    name = "".join(["A", "da"])
    result = engine.render("{{ First name }}", {"First name": name})
    assert result.value is name  # a dictionary look-up, no copy and no conversion


def test_fast_paths_agree_with_the_full_template_language(engine: TemplateEngine) -> None:
    forced = "{% if true %}{% endif %}"  # renders nothing but needs the full language
    for source in ("Hi {{ First name }} {{Age}} {{Colors}} {{Nope}}!", "{{ E-mail }}x", "{{2nd answer}} {{ Price }}"):
        assert render(engine, source + forced) == render(engine, source)


def test_compiling_the_same_source_twice_returns_the_same_object(engine: TemplateEngine) -> None:
    source = "{{ Plan | upper }} for {{First name}}"
    assert engine.compile(source) is engine.compile(source)
    compiled = engine.compile(source)
    assert compiled.render(VARIABLES) == compiled.render(VARIABLES) == Rendered("PRO for Ada", ())


def test_the_cache_is_bounded_and_keeps_recently_used_templates() -> None:
    engine = TemplateEngine(TemplateLimits(cache_size=2))
    first = engine.compile("{{ a | upper }}")
    second = engine.compile("{{ b | upper }}")
    assert engine.compile("{{ a | upper }}") is first  # now the most recently used
    engine.compile("{{ c | upper }}")  # evicts b
    assert engine.compile("{{ a | upper }}") is first
    assert engine.compile("{{ b | upper }}") is not second


def test_variables_in_lists_the_names_a_template_reads(engine: TemplateEngine) -> None:
    assert engine.variables_in("Signed up") == frozenset()
    assert engine.variables_in("{{ First name }}") == {"First name"}
    assert engine.variables_in("{{Plan}} via {{ utm.source }}") >= {"Plan", "utm.source"}
    assert engine.variables_in(
        "{% set x = 1 %}{% for c in Colors %}{{ c ~ x ~ vars['E-mail'] ~ Last name }}{% endfor %}{{ range(2) }}"
    ) == {"Colors", "E-mail", "Last name"}


# -- errors a bot builder can act on ---------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "column", "words"),
    [
        ("Hello {{ name", 1, 14, "not closed"),
        ("line one\n  {% if Age %}yes", 2, 18, "{% endif %}"),
        ("{{ Age | nosuch }}", 1, 8, "no filter named 'nosuch'"),
        ("{{ Age is nosuch }}", 1, 8, "no test named 'nosuch'"),
        ("{{ What's your name? }}", 1, 8, "vars["),
        ("ok\nok {{ Age ) }}", 2, 11, "unexpected ')'"),
        ("{{ }}", 1, 4, "empty"),
        ("{% include 'other' %}", 1, 1, "not available"),
    ],
)
def test_syntax_errors_say_what_is_wrong_and_where(
    engine: TemplateEngine, source: str, line: int, column: int, words: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        engine.check(source)
    error = caught.value
    assert isinstance(error, PluginError)
    assert (error.line, error.column) == (line, column)
    assert words.lower() in error.message.lower()
    assert f"line {line}, column {column}" in str(error)


def test_runtime_errors_name_the_line(engine: TemplateEngine) -> None:
    with pytest.raises(TemplateError) as caught:
        engine.render("a\nb\n{{ Age / 0 }}", VARIABLES)
    assert caught.value.line == 3
    assert "divides by zero" in caught.value.message


def test_error_messages_never_repeat_a_long_value(engine: TemplateEngine) -> None:
    secret = "_s3cr3t-" + "x" * 500
    for source in (
        "{{ Value + 1 }}",
        "{{ Value.index('zz') }}",
        "{{ Value * 'a' }}",
        "{{ '%d' % Value }}",
        "{{ Plan[Value] }}",
        "{{ Plan | map(attribute=Value) | list }}",
    ):
        with pytest.raises(TemplateError) as caught:
            engine.render(source, {"Value": secret, "Plan": "pro"})
        assert "x" * 130 not in str(caught.value)


def test_unknown_filter_message_lists_the_allowed_ones(engine: TemplateEngine) -> None:
    with pytest.raises(TemplateError) as caught:
        engine.check("{{ Plan | attr('x') }}")
    assert all(name in caught.value.message for name in ("upper", "default", "join"))
    assert "attr" not in ALLOWED_FILTERS


def test_a_source_over_the_size_limit_is_refused_at_save_time() -> None:
    engine = TemplateEngine(TemplateLimits(max_source_chars=50))
    engine.check("x" * 50)
    with pytest.raises(TemplateLimitError) as caught:
        engine.check("x" * 51)
    assert caught.value.setting == "QUICKBOT_TEMPLATE_MAX_SOURCE_CHARS"
    assert "QUICKBOT_TEMPLATE_MAX_SOURCE_CHARS" in caught.value.message


# -- limits are operator settings -----------------------------------------------------------


def test_limits_come_from_documented_environment_variables() -> None:
    environ = {setting: "42" for setting in LIMIT_SETTINGS.values()}
    limits = TemplateLimits.from_env(environ)
    assert all(getattr(limits, name) == 42 for name in LIMIT_SETTINGS)
    assert TemplateLimits.from_env({}) == TemplateLimits()


def test_a_malformed_setting_names_the_variable() -> None:
    with pytest.raises(ConfigurationError) as caught:
        TemplateLimits.from_env({"QUICKBOT_TEMPLATE_MAX_WORK": "lots"})
    assert caught.value.field == "QUICKBOT_TEMPLATE_MAX_WORK"
    with pytest.raises(ConfigurationError):
        TemplateLimits.from_env({"QUICKBOT_TEMPLATE_MAX_OUTPUT_CHARS": "0"})


@pytest.mark.parametrize(
    ("limits", "source", "setting"),
    [
        (TemplateLimits(max_output_chars=10), "{{ Plan }} and some more text", "QUICKBOT_TEMPLATE_MAX_OUTPUT_CHARS"),
        (TemplateLimits(max_output_chars=10), "{{ 'x' * 11 }}", "QUICKBOT_TEMPLATE_MAX_OUTPUT_CHARS"),
        (TemplateLimits(max_items=5), "{{ range(6) | list }}", "QUICKBOT_TEMPLATE_MAX_ITEMS"),
        (TemplateLimits(max_work=100), "{% for i in range(200) %}{% endfor %}", "QUICKBOT_TEMPLATE_MAX_WORK"),
        (
            TemplateLimits(max_nesting=3),
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "QUICKBOT_TEMPLATE_MAX_NESTING",
        ),
        (TemplateLimits(max_number_digits=10), "{{ 10 ** 11 }}", "QUICKBOT_TEMPLATE_MAX_NUMBER_DIGITS"),
    ],
)
def test_each_limit_has_its_own_clear_error(limits: TemplateLimits, source: str, setting: str) -> None:
    with pytest.raises(TemplateLimitError) as caught:
        TemplateEngine(limits).render(source, VARIABLES)
    assert caught.value.setting == setting
    assert setting in caught.value.message


def test_work_within_the_limits_is_fine() -> None:
    engine = TemplateEngine(TemplateLimits(max_items=5, max_number_digits=11, max_output_chars=20))
    assert engine.render("{{ range(5) | list }}", {}).value == [0, 1, 2, 3, 4]
    assert engine.render("{{ 10 ** 10 }}", {}).value == 10**10
    assert engine.render("{{ 'x' * 20 }}", {}).value == "x" * 20


def test_a_variable_longer_than_a_field_is_refused_not_truncated() -> None:
    engine = TemplateEngine(TemplateLimits(max_output_chars=100))
    for source in ("{{Notes}}", "Notes: {{Notes}}", "{{ Notes | upper }}"):
        with pytest.raises(TemplateLimitError):
            engine.render(source, {"Notes": "n" * 101})
    assert engine.render("{{Notes}}", {"Notes": "n" * 100}).value == "n" * 100


# -- shared engine --------------------------------------------------------------------------


def test_renders_from_many_threads_never_mix_variables(engine: TemplateEngine) -> None:
    compiled = engine.compile("{{ Name | upper }}:{% for i in range(Count) %}{{ i }}{% endfor %}:{{ Gone }}")
    barrier = threading.Barrier(8)

    def render_for(worker: int) -> list[Rendered]:
        barrier.wait()
        return [compiled.render({"Name": f"w{worker}", "Count": worker % 4}) for _ in range(200)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(render_for, range(8)))
    for worker, rendered in enumerate(results):
        expected = Rendered(f"W{worker}:" + "".join(str(i) for i in range(worker % 4)) + ":", ("Gone",))
        assert set(rendered) == {expected}


def test_the_default_engine_is_built_lazily_from_the_environment() -> None:
    program = (
        "import quickbot_segment_plugin.templating as t\n"
        "import quickbot_segment_plugin.templating.engine as engine_module\n"
        "assert engine_module._default_engine is None, 'built at import'\n"
        "engine = t.default_engine()\n"
        "assert engine is t.default_engine()\n"
        "assert engine.limits.max_output_chars == 20\n"
        "try:\n"
        "    engine.render('{{ x }}' * 3, {'x': 'abcdefghij'})\n"
        "except t.TemplateLimitError as error:\n"
        "    print(error.setting)\n"
    )
    environ = {**os.environ, "QUICKBOT_TEMPLATE_MAX_OUTPUT_CHARS": "20"}
    completed = subprocess.run(
        [sys.executable, "-c", program], env=environ, capture_output=True, text=True, timeout=60, check=True
    )
    assert completed.stdout.strip() == "QUICKBOT_TEMPLATE_MAX_OUTPUT_CHARS"


def test_default_engine_returns_one_shared_engine() -> None:
    assert default_engine() is default_engine()
