"""Properties over arbitrary templates and variables: a render either succeeds within the
limits or raises `TemplateError`, nothing else; and the fast paths mean exactly what the full
template language means."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quickbot_segment_plugin.templating import Rendered, TemplateEngine, TemplateError, TemplateLimits

#: Small limits, so that arbitrary templates run into every limit often.
LIMITS = TemplateLimits(max_output_chars=300, max_items=50, max_work=3_000, max_nesting=5, max_number_digits=40)
ENGINE = TemplateEngine(LIMITS)
DEFAULT_ENGINE = TemplateEngine()

NAMES = ["Age", "First name", "E-mail", "utm.source", "2nd answer", "Prénom", "Colors", "Text", "Missing", "loop"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.just("{{ 7*7 }}")
    | st.just("x" * 400),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
variable_maps = st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=12), json_values, max_size=8)

FRAGMENTS = [
    *NAMES, "{{", "}}", "{%", "%}", "{#", "#}", "{{-", "-}}", " ", "\n", "'", '"', "(", ")", "[", "]", ",", "|", ".", "~",
    "+", "-", "*", "**", "/", "//", "%", "==", "<", "=", "not", "and", "or", "if", "else", "elif", "endif", "for",
    "in", "endfor", "set", "endset", "macro", "endmacro", "call", "endcall", "filter", "endfilter", "recursive",
    "loop", "loop.index", "range(", "vars['", "']", "10", "9999999", "10**9", "'%09999d'", "upper", "join(',')",
    "center(99999)", "format(", "default('d')", "map('upper')", "list", "sort", "tojson", "replace('', 'ab')",
    "__class__", "__globals__", "attr(", "cycler", "self", "caller()", "raw", "endraw", "none", "true",
]  # fmt: skip
soup = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=40).map("".join)

LEAVES = [
    "Age", "First name", "Colors", "Text", "Missing", "vars['E-mail']", "'ab'", "''", "0", "3", "-7", "1.5",
    "10**9", "[1, 2, 3]", "none", "true", "{'k': Age}", "range(40)", "'%05d'", "'{{ 7*7 }}'", "Colors[1:]",
]  # fmt: skip
OPERATORS = ["+", "-", "*", "/", "//", "%", "**", "~", "==", "!=", "<", "in", "not in", "and", "or"]
FILTERS = [
    "upper", "length", "list", "join(', ')", "center(5000)", "format(Age)", "default('d')", "replace('', 'ab')",
    "map('string') | list", "sort", "tojson", "int", "float", "string", "first", "sum", "unique | list",
    "batch(3) | list", "indent(50)", "title", "reverse | list", "round", "abs", "truncate(5)", "urlencode",
    "select('odd') | list", "slice(3) | list", "dictsort", "wordcount", "trim", "capitalize", "max", "items | list",
]  # fmt: skip
METHODS = ["upper()", "split()", "replace('a', 'bb')", "center(70)", "count('a')", "startswith('a')", "get('k')"]


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, st.sampled_from(OPERATORS), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(children, st.sampled_from(FILTERS)).map(lambda t: f"({t[0]} | {t[1]})"),
        st.tuples(children, st.sampled_from(METHODS)).map(lambda t: f"{t[0]}.{t[1]}"),
        st.tuples(children, children, children).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        st.tuples(children, children).map(lambda t: f"[{t[0]}, {t[1]}]"),
        children.map(lambda c: f"(not {c})"),
    )


expressions = st.recursive(st.sampled_from(LEAVES), _combine, max_leaves=10)
pieces = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="{}%#\r"), max_size=10),
    expressions.map(lambda e: "{{ " + e + " }}"),
    st.tuples(expressions, expressions).map(lambda t: "{% for x in " + t[0] + " %}{{ x ~ " + t[1] + " }}{% endfor %}"),
    st.tuples(expressions, expressions).map(lambda t: "{% if " + t[0] + " %}{{ " + t[1] + " }}{% endif %}"),
    expressions.map(lambda e: "{% macro m(n) %}{{ n ~ " + e + " }}{% if n %}{{ m(n - 1) }}{% endif %}{% endmacro %}"),
    st.just("{{ m(3) }}"),
)
structured = st.lists(pieces, min_size=1, max_size=4).map("".join)


def _assert_within_limits(result: Rendered, limits: TemplateLimits) -> None:
    assert isinstance(result, Rendered)
    assert isinstance(result.missing, tuple) and all(isinstance(name, str) for name in result.missing)
    assert len(set(result.missing)) == len(result.missing)
    value: Any = result.value
    if isinstance(value, str):
        assert len(value) <= limits.max_output_chars
    elif isinstance(value, int) and not isinstance(value, bool):
        assert value.bit_length() <= 4 * limits.max_output_chars
    elif value is not None:
        assert len(str(value)) <= limits.max_output_chars


def _render_or_template_error(engine: TemplateEngine, source: str, variables: dict[str, Any]) -> None:
    try:
        engine.check(source)
        result = engine.render(source, variables)
    except TemplateError as error:
        assert str(error).strip()
        assert error.line is None or error.line >= 1
        assert error.column is None or error.column >= 1
        return
    _assert_within_limits(result, engine.limits)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=structured, variables=variable_maps)
def test_expressions_render_within_limits_or_raise_template_error(source: str, variables: dict[str, Any]) -> None:
    _render_or_template_error(ENGINE, source, variables)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=soup, variables=variable_maps)
def test_arbitrary_text_never_raises_anything_but_template_error(source: str, variables: dict[str, Any]) -> None:
    _render_or_template_error(ENGINE, source, variables)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=st.one_of(soup, structured, st.text(max_size=60)), variables=variable_maps)
def test_the_default_limits_hold_too(source: str, variables: dict[str, Any]) -> None:
    _render_or_template_error(DEFAULT_ENGINE, source, variables)


plain_text = st.text(alphabet=st.characters(blacklist_characters="{}%#\r"), max_size=8)
references = st.sampled_from(NAMES[:-1]).map(lambda name: "{{" + name + "}}") | st.sampled_from(NAMES[:-1]).map(
    lambda name: "{{ " + name + " }}"
)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(plain_text | references, max_size=6), variables=variable_maps)
def test_the_fast_paths_mean_what_the_full_language_means(parts: list[str], variables: dict[str, Any]) -> None:
    source = "<" + "".join(parts) + ">"
    forced = source + "{% if true %}{% endif %}"  # same text, but only the full language can render it
    outcomes = []
    for candidate in (source, forced):
        try:
            outcomes.append(ENGINE.render(candidate, variables))
        except TemplateError as error:
            outcomes.append(type(error))
    assert outcomes[0] == outcomes[1]
