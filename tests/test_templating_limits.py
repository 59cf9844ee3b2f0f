"""What a bot builder or an end user can type never makes validate() or execute() raise, and
never makes a template print something that is not data.

Through the real block (validate, execute with a dry run, so the whole message is built and
checked) and through the real engine for the limits themselves.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import WORKSPACE

from quickbot_segment_plugin.block import SegmentBlock
from quickbot_segment_plugin.templating import TemplateEngine, TemplateError, TemplateLimitError, TemplateLimits
from quickbot_segment_plugin.templating import engine as engine_module


@pytest.fixture
def dry_block() -> Iterator[SegmentBlock]:
    block = SegmentBlock()
    yield block
    block.shutdown(5.0)


def track(**extra: Any) -> dict[str, Any]:
    return {"action": "track", "userId": "u-1", "event": "Signed Up", **extra}


def dry_run(block: SegmentBlock, options: dict[str, Any], variables: dict[str, Any] | None = None) -> dict[str, Any]:
    context = {"workspace_id": WORKSPACE, "variables": variables or {}, "dry_run": True}
    return block.execute(options, context)


def logs(result: dict[str, Any], level: str) -> list[tuple[str, str | None]]:
    return [(log["message"], log["details"].get("field")) for log in result["logs"] if log["level"] == level]


# -- validate() and execute() never raise -------------------------------------------------------

DEEP = sys.getrecursionlimit() * 3
#: Chains deeper than the recursion limit that still fit in a field (10,000 characters).
CHAINS = {
    "attributes": "{{ a" + ".a" * 4000 + " }}",
    "filters": "{{ a" + "|upper" * 1600 + " }}",
    "additions": "{{ 1" + " + 1" * 2400 + " }}",
    "slices": "{{ a" + "[1:]" * 2400 + " }}",
    "parentheses": "{{ " + "(" * 4000 + "1" + ")" * 4000 + " }}",
    "lists": "{{ " + "[" * 4000 + "]" * 4000 + " }}",
    "not": "{{ " + "not " * 2400 + "1 }}",
    "issue's 2,000 characters of .a": "{{ a" + ".a" * 1000 + " }}",
}


@pytest.mark.parametrize("source", CHAINS.values(), ids=list(CHAINS))
def test_chains_deeper_than_the_recursion_limit_are_a_problem_not_an_exception(
    dry_block: SegmentBlock, source: str
) -> None:
    assert len(source) <= 10_000
    options = track(properties=[{"key": "p", "value": source}])
    problems = dry_block.validate(options)
    for problem in problems:
        assert problem["path"] == "properties/0/value"
        assert "Value of property 1" in problem["message"] and "characters long" not in problem["message"]
    result = dry_run(dry_block, options, {"a": "text"})
    assert result["status"] in {"failed", "dry_run"}
    assert not any("unexpectedly" in message for message, _ in logs(result, "error"))


def test_a_static_number_past_pythons_digit_limit_is_a_problem(dry_block: SegmentBlock) -> None:
    options = track(properties=[{"key": "amount", "value": "9" * 4301, "type": "number"}])
    problems = dry_block.validate(options)
    assert [problem["path"] for problem in problems] == ["properties/0/value"]
    assert "4,301 digits" in problems[0]["message"] and "at most 1,000" in problems[0]["message"]


@pytest.mark.parametrize("digits", [1001, 4301, 5000, 30_000])
def test_an_end_users_huge_number_fails_the_field_not_the_block(dry_block: SegmentBlock, digits: int) -> None:
    options = track(properties=[{"key": "amount", "value": "{{Amount}}", "type": "number"}])
    result = dry_run(dry_block, options, {"Amount": "7" * digits})
    assert result["status"] == "failed"
    [(message, field)] = logs(result, "error")
    assert field == "properties/0/value"
    assert "digits" in message and "unexpectedly" not in message


def test_a_huge_whole_number_from_the_host_fails_the_field(dry_block: SegmentBlock) -> None:
    for value in ("{{Big}}", "Total: {{Big}}", "{{ Big + 1 }}", "{{ [Big] }}"):
        result = dry_run(dry_block, track(properties=[{"key": "n", "value": value}]), {"Big": 10**5000})
        assert result["status"] == "failed", value
        [(message, field)] = logs(result, "error")
        assert field == "properties/0/value" and "digits" in message, (value, message)


def test_json_nesting_past_the_recursion_limit_fails_the_field(dry_block: SegmentBlock) -> None:
    options = track(properties=[{"key": "data", "value": "{{Data}}", "type": "json"}])
    for data in ("[" * 100_000 + "]" * 100_000, "[" * 33 + "]" * 33, "1" * 5000):
        result = dry_run(dry_block, options, {"Data": data})
        assert result["status"] == "failed"
        [(message, field)] = logs(result, "error")
        assert field == "properties/0/value" and "unexpectedly" not in message
    assert dry_run(dry_block, options, {"Data": "[" * 10 + "]" * 10})["status"] == "dry_run"


_ATOMS = st.sampled_from(["a", "1", "'x'", "[1, 2]", "(1,)", "{'k': a}", "range(3)", "Name with spaces", "vars['a']"])
_SUFFIXES = st.sampled_from(
    [
        ".a",
        "|upper",
        " + 1",
        "[1:]",
        "[0]",
        " ~ 'y'",
        "|string",
        "|list",
        " * 2",
        " == a",
        "|length",
        ".upper()",
        "|join",
    ]
)


@st.composite
def templates(draw: st.DrawFn) -> str:
    atom = draw(_ATOMS)
    if draw(st.booleans()):
        suffixes = draw(st.lists(_SUFFIXES, max_size=30))
        expression = atom + "".join(suffixes)
    else:
        suffix = draw(_SUFFIXES)
        expression = atom + suffix * draw(st.integers(min_value=1, max_value=DEEP))
    wrap = draw(
        st.sampled_from(
            ["{{ %s }}", "Text {{ %s }} more", "{%% if %s %%}yes{%% endif %%}", "{%% set v = %s %%}{{ v }}"]
        )
    )
    return wrap % expression


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=templates(), noise=st.text(max_size=30))
def test_validate_and_execute_never_raise(dry_block: SegmentBlock, source: str, noise: str) -> None:
    for template in (source, noise + source, source[: len(source) // 2]):
        options = track(event=template, properties=[{"key": "p", "value": template, "type": "number"}])
        problems = dry_block.validate(options)
        assert isinstance(problems, list)
        result = dry_run(dry_block, options, {"a": "5", "Name with spaces": "6"})
        assert result["status"] in {"failed", "dry_run"}
        assert not any("unexpectedly" in message for message, _ in logs(result, "error")), result


# -- only data reaches the output ---------------------------------------------------------------

NOT_DATA = [
    "{{ range|string }}",
    "{{ x.upper|string }}",
    "{{ '%s'|format(x.upper) }}",
    "{{ '%s' % x.upper }}",
    "{{ '%r' % (range,) }}",
    "{{ 'a' ~ x.upper }}",
    "{{ [x.upper]|join(',') }}",
    "{{ x.upper|upper }}",
    "{{ x.upper|center(90) }}",
    "{% macro m() %}{% endmacro %}{{ m|string }}",
    "{% for i in [1] %}{{ loop|string }}{% endfor %}",
    "{{ {'a': x.upper}|urlencode }}",
]


@pytest.mark.parametrize("source", NOT_DATA)
def test_functions_and_objects_never_print_their_address(source: str) -> None:
    engine = TemplateEngine()
    with pytest.raises(TemplateError) as caught:
        engine.render(source, {"x": "text"})
    assert "0x" not in str(caught.value)
    assert "not a value a field can hold" in caught.value.message


def test_data_still_prints_as_before() -> None:
    engine = TemplateEngine()
    assert engine.render("{{ range(3)|list|string }}", {}).value == "[0, 1, 2]"
    assert engine.render("{{ '%s and %s' % (a, b) }}", {"a": 1, "b": "two"}).value == "1 and two"
    assert engine.render("{{ '%(a)s/%(a)r' % {'a': 'x'} }}", {}).value == "x/'x'"
    assert engine.render("{{ '%s|%s'|format(unset, 3) }}", {}).value == "|3"
    assert engine.render("{{ '%-5s|%05.1f|%%' % ('ab', 3.14159) }}", {}).value == "ab   |003.1|%"
    assert engine.render("{{ [1, none]|join('-') }}", {}).value == "1-"


@pytest.mark.parametrize(
    "source",
    [
        "{% set __class__ = 1 %}",
        "{% set _x = 1 %}{{ _x }}",
        "{% for _i in [1] %}{% endfor %}",
        "{% for a, _b in [(1, 2)] %}{% endfor %}",
        "{% with _y = 1 %}{% endwith %}",
        "{% macro m(_arg) %}{% endmacro %}",
        "{% macro m(a, _b=1) %}{% endmacro %}",
    ],
)
def test_names_starting_with_underscore_cannot_be_assigned(dry_block: SegmentBlock, source: str) -> None:
    [problem] = dry_block.validate(track(event=source))
    assert problem["path"] == "event"
    assert "names starting with '_' are not available" in problem["message"]


# -- % and format are sized exactly -------------------------------------------------------------


def test_percent_counts_a_mapping_value_each_time_it_is_used() -> None:
    engine = TemplateEngine(TemplateLimits(max_output_chars=100))
    exactly = "{{ ('%(a)s' * 4) % {'a': 'x' * 25} }}"
    assert engine.render(exactly, {}).value == "x" * 100
    with pytest.raises(TemplateLimitError) as caught:
        engine.render("{{ ('%(a)s' * 4) % {'a': 'x' * 26} }}", {})
    assert caught.value.setting == "QUICKBOT_TEMPLATE_MAX_OUTPUT_CHARS"
    with pytest.raises(TemplateLimitError):
        engine.render("{{ ('%(a)s' * 4)|format(a='x' * 26) }}", {})
    with pytest.raises(TemplateLimitError):
        engine.render("{{ '%101s' % 'a' }}", {})
    assert len(engine.render("{{ '%100s' % 'a' }}", {}).value) == 100  # type: ignore[arg-type]


def test_a_huge_format_never_builds_its_text() -> None:
    import tracemalloc

    engine = TemplateEngine()
    source = "{{ ('%(a)s' * 3276) % {'a': 'x' * 16380} }}"
    engine.compile(source)
    tracemalloc.start()
    try:
        with pytest.raises(TemplateLimitError):
            engine.render(source, {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


# -- the cost of nested values ------------------------------------------------------------------


def test_a_shared_reference_is_charged_every_time_it_is_reachable() -> None:
    source = "{% set a = [[1] * 100] * 100 %}{{ a|length }}"
    assert TemplateEngine(TemplateLimits(max_work=30_000)).render(source, {}).value == "100"
    with pytest.raises(TemplateLimitError) as caught:
        TemplateEngine(TemplateLimits(max_work=10_000)).render(source, {})
    assert caught.value.setting == "QUICKBOT_TEMPLATE_MAX_WORK"


def test_comparing_huge_nested_values_is_refused_before_it_runs() -> None:
    engine = TemplateEngine(TemplateLimits(max_work=100_000_000))
    source = "{% set a = [[[[[1]*100]*100]*100]*100]*100 %}{% set b = [[[[[1]*100]*100]*100]*100]*100 %}{{ a == b }}"
    started = time.thread_time()
    with pytest.raises(TemplateError, match="more than 1,000,000 items"):
        engine.render(source, {})
    assert time.thread_time() - started < 0.5


# -- the deadline -------------------------------------------------------------------------------


def test_the_deadline_stops_a_render_the_work_budget_allows() -> None:
    engine = TemplateEngine(TemplateLimits(max_work=100_000_000, max_render_ms=20))
    source = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    engine.compile(source)
    started = time.thread_time()
    with pytest.raises(TemplateLimitError) as caught:
        engine.render(source, {})
    assert caught.value.setting == "QUICKBOT_TEMPLATE_MAX_RENDER_MS"
    assert "20 ms of CPU" in caught.value.message
    assert time.thread_time() - started < 0.1


def test_all_the_fields_of_one_execute_share_one_budget(
    dry_block: SegmentBlock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUICKBOT_TEMPLATE_MAX_EXECUTE_WORK", "100000")
    monkeypatch.setattr(engine_module, "_default_engine", None)
    costly = "{% for i in range(3000) %}{{ i }}{% endfor %}"
    one = dry_run(dry_block, track(properties=[{"key": "p0", "value": costly}]))
    assert one["status"] == "dry_run"  # one such field fits in its own budget...
    many = dry_run(dry_block, track(properties=[{"key": f"p{n}", "value": costly} for n in range(10)]))
    assert many["status"] == "failed"  # ...but ten of them do not fit in one execute's
    [(message, field)] = logs(many, "error")
    assert "QUICKBOT_TEMPLATE_MAX_EXECUTE_WORK" in message
    assert field is not None and field.startswith("properties/") and field != "properties/0/value"
    again = dry_run(dry_block, track(properties=[{"key": "p0", "value": costly}]))
    assert again["status"] == "dry_run"  # the next execute starts with a full budget


def test_limit_settings_are_read_with_bounds() -> None:
    limits = TemplateLimits.from_env(
        {"QUICKBOT_TEMPLATE_MAX_RENDER_MS": "80", "QUICKBOT_TEMPLATE_MAX_EXECUTE_MS": "900"}
    )
    assert (limits.max_render_ms, limits.max_execute_ms, limits.max_execute_work) == (80, 900, 500_000)
    with pytest.raises(Exception, match="QUICKBOT_TEMPLATE_MAX_RENDER_MS"):
        TemplateLimits.from_env({"QUICKBOT_TEMPLATE_MAX_RENDER_MS": "0"})


# -- unset variables are named ------------------------------------------------------------------


def test_unset_variables_in_mixed_text_are_named(dry_block: SegmentBlock) -> None:
    options = track(
        event="Colour: {{Favourite colour}}",
        properties=[{"key": "size", "value": "{{Size}} / {{Fit}} cm"}],
    )
    result = dry_run(dry_block, options, {})
    assert result["status"] == "dry_run"
    warnings = logs(result, "warning")
    assert (
        "Event Name uses the variable 'Favourite colour', which is not set, so it was treated as empty.",
        "event",
    ) in warnings
    assert (
        "The property 'size' uses the variables 'Size', 'Fit', which are not set, so they were treated as empty.",
        "properties/0/value",
    ) in warnings
    assert result["payload"]["event"] == "Colour:"


def test_unset_variables_in_a_condition_are_named(dry_block: SegmentBlock) -> None:
    options = track(condition="{{ Plan == 'pro' and Country }}")
    result = dry_run(dry_block, options, {})
    assert result["status"] == "skipped"
    assert ("Condition uses the variable 'Plan', which is not set, so it was treated as empty.", "condition") in logs(
        result, "warning"
    )
    handled = dry_run(dry_block, track(condition="{{ Plan is defined }}"), {})
    assert logs(handled, "warning") == []  # a template that checks for the variable is not warned
