"""A bot builder's template is hostile input: known sandbox escapes and server-side template
injection payloads are refused with a clear error and no side effect, and payloads that try
to exhaust the server stop within a small, fixed budget of CPU time and memory."""

from __future__ import annotations

import gc
import time
import tracemalloc
from pathlib import Path

import pytest

from quickbot_segment_plugin.templating import TemplateEngine, TemplateError, TemplateLimitError

VARIABLES: dict[str, object] = {"Plan": "pro", "Colors": ["red", "green"], "Settings": {"a": 1}}

#: Words that would show a Python object, a module or a memory address leaked into a message.
LEAK_MARKERS = ("<class", "<function", "<built-in", "<module", " at 0x", "__globals__':", "posix", "Popen")

#: (what it is, the payload); `{sentinel}` is a file the payload tries to create.
ESCAPES = [
    ("str.format reaching attributes (CVE-2016-10745)", "{{ '{0.__class__.__mro__[1].__subclasses__}'.format(Plan) }}"),
    ("str.format_map (CVE-2019-10906)", "{{ '{a.__class__.__init__.__globals__}'.format_map({'a': Plan}) }}"),
    (
        "format method through an indirect reference (CVE-2024-56326)",
        "{% set fmt = '{0.__class__.__init__.__globals__}'.format %}{{ fmt(Plan) }}",
    ),
    ("format via a dict of methods (CVE-2024-56326)", "{% set d = {'f': Plan.format} %}{{ d.f('{0.__class__}', 1) }}"),
    ("|attr to reach format (CVE-2025-27516)", "{{ ('{0.__class__}' | attr('format'))(Plan) }}"),
    ("|attr to a dunder", "{{ Plan | attr('__class__') }}"),
    ("__class__ / __mro__ / __subclasses__", "{{ ''.__class__.__mro__[1].__subclasses__() }}"),
    (
        "subclasses walk to Popen",
        "{% for c in ''.__class__.__mro__[1].__subclasses__() %}"
        "{% if c.__name__ == 'Popen' %}{{ c(['touch', '{sentinel}']) }}{% endif %}{% endfor %}",
    ),
    ("__globals__ of a function", "{{ Plan.upper.__self__.__class__.__init__.__globals__ }}"),
    ("item syntax for dunders", "{{ Plan['__class__']['__base__']['__subclasses__']() }}"),
    ("cycler global", "{{ cycler.__init__.__globals__.os.system('touch {sentinel}') }}"),
    ("joiner global", "{{ joiner.__init__.__globals__.os.popen('touch {sentinel}').read() }}"),
    ("namespace global", "{{ namespace.__init__.__globals__.os.system('touch {sentinel}') }}"),
    ("namespace as a value", "{% set ns = namespace(x=1) %}{{ ns.x }}"),
    ("lipsum global", "{{ lipsum.__globals__['os'].popen('touch {sentinel}').read() }}"),
    ("lipsum as a generator", "{{ lipsum(100000) }}"),
    ("dict global", "{{ dict(a=1) }}"),
    ("Flask config", "{{ config.__class__.__init__.__globals__['os'].popen('touch {sentinel}').read() }}"),
    ("Flask config.items", "{{ config.items() }}"),
    (
        "Flask request",
        "{{ request.application.__globals__.__builtins__.__import__('os').popen('touch {sentinel}').read() }}",
    ),
    ("self template reference", "{{ self._TemplateReference__context.cycler.__init__.__globals__.os }}"),
    ("self.__init__", "{{ self.__init__.__globals__.__builtins__ }}"),
    ("__import__ by name", "{{ __import__('os').system('touch {sentinel}') }}"),
    ("open by name", "{{ open('{sentinel}', 'w').write('x') }}"),
    ("range internals", "{{ range.__globals__ }}"),
    ("loop internals", "{% for x in Colors %}{{ loop.__class__.__init__.__globals__ }}{% endfor %}"),
    ("macro internals", "{% macro m() %}{% endmacro %}{{ m._func.__globals__ }}"),
    ("caller internals", "{% macro m() %}{{ caller._func }}{% endmacro %}{% call m() %}x{% endcall %}"),
    ("vars internals", "{{ vars.__class__.__init__ }}"),
    ("map attribute to a dunder", "{{ Colors | map(attribute='__class__') | list }}"),
    ("selectattr to a dunder", "{{ Colors | selectattr('__class__.__base__') | list }}"),
    ("sort by a dunder", "{{ Colors | sort(attribute='__class__') }}"),
    ("groupby a dunder", "{{ Colors | groupby('__class__') }}"),
    ("join by a dunder", "{{ Colors | join(attribute='__class__') }}"),
    ("private filter by name", "{{ [1, 2] | map('qb:charge') | list }}"),
    ("mutating a variable's list", "{{ Colors.append('x') }}{{ Colors }}"),
    ("mutating a variable's dict", "{{ Settings.update({'a': 2}) }}"),
    ("bytes from encode", "{{ Plan.encode() }}"),
    ("translate tables", "{{ Plan.maketrans('a', 'b') }}"),
    ("a method as a value", "{{ Plan.upper }}"),
    ("{% include %} without a loader", "{% include '{sentinel}' %}"),
    ("{% import %}", "{% import 'os' as os %}{{ os.system('touch {sentinel}') }}"),
    ("{% from ... import %}", "{% from 'os' import system %}{{ system('touch {sentinel}') }}"),
    ("{% extends %}", "{% extends '{sentinel}' %}"),
    ("{% block %} and self", "{% block b %}x{% endblock %}{{ self.b() }}"),
    ("debug extension tag", "{% debug %}"),
    ("do extension tag", "{% do Colors.append(1) %}"),
    ("assigning to vars", "{% set vars = 1 %}{{ vars }}"),
]


@pytest.fixture(scope="module")
def engine() -> TemplateEngine:
    return TemplateEngine()


@pytest.mark.parametrize(("what", "payload"), ESCAPES, ids=[what for what, _ in ESCAPES])
def test_sandbox_escapes_are_refused_cleanly(engine: TemplateEngine, tmp_path: Path, what: str, payload: str) -> None:
    sentinel = tmp_path / "pwned"
    variables = {**VARIABLES, "Colors": ["red", "green"], "Settings": {"a": 1}}
    with pytest.raises(TemplateError) as caught:
        engine.render(payload.replace("{sentinel}", str(sentinel)), variables)
    message = str(caught.value)
    assert message.strip()
    assert not any(marker in message for marker in LEAK_MARKERS), message
    assert not sentinel.exists()
    assert variables["Colors"] == ["red", "green"] and variables["Settings"] == {"a": 1}


@pytest.mark.parametrize(
    "payload",
    ["{{ ''|attr('format') }}", "{% include 'x' %}", "{% import 'x' as y %}", "{% extends 'x' %}", "{% debug %}"],
)
def test_the_worst_payloads_are_refused_when_the_flow_is_saved(engine: TemplateEngine, payload: str) -> None:
    with pytest.raises(TemplateError) as caught:
        engine.check(payload)
    assert caught.value.line == 1


@pytest.mark.parametrize("name", ["config", "request", "self", "settings", "os", "__builtins__", "environ"])
def test_names_that_mean_something_elsewhere_are_just_unset_variables(engine: TemplateEngine, name: str) -> None:
    assert engine.render("[{{ " + name + " }}]", {}).value == "[]"
    assert engine.render("{{ vars['" + name + "'] }}", {}).value is None
    assert engine.render("{{ " + name + " }}", {name: "a value"}).value == "a value"


def test_a_template_only_sees_the_variables_it_is_given(engine: TemplateEngine) -> None:
    compiled = engine.compile("{{ Secret }}|{{ vars['Secret'] }}")
    assert compiled.render({"Secret": "workspace A"}).value == "workspace A|workspace A"
    assert compiled.render({}).value == "|"


# -- resource exhaustion ----------------------------------------------------------------------

CPU_BUDGET_SECONDS = 0.100
MEMORY_BUDGET_BYTES = 10 * 1024 * 1024
BIG = "{% set s = 'x' * 30000 %}"

EXHAUSTION = [
    "{{ 'a' * 10**9 }}",
    "{{ 'a' * 1000000000 }}",
    "{{ [1] * 10**9 }}",
    "{{ 10 ** (10 ** 10) }}",
    "{{ 2 ** (10 ** 6) }}",
    "{{ range(10**9) | list }}",
    "{% for i in range(10**9) %}{% endfor %}",
    "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
    "{% for i in range(10000) %}{% for j in range(10000) %}{{ i }}{% endfor %}{% endfor %}",
    "{% for a in range(100) %}{% for b in range(100) %}{% for c in range(100) %}{% for d in range(100) %}"
    "{% endfor %}{% endfor %}{% endfor %}{% endfor %}",
    "{{ '%0999999999d' | format(1) }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '%.999999999f' % 1.5 }}",
    "{{ '%*d' % (999999999, 1) }}",
    "{{ 'x' | center(10**9) }}",
    "{{ 'x' | indent(10**9) }}",
    "{{ 'x'.center(10**9) }}",
    "{{ 'x'.ljust(10**9) }}",
    "{{ 'x'.zfill(10**9) }}",
    "{{ ('\t' * 30000).expandtabs(10**6) }}",
    BIG + "{{ s ~ s }}",
    BIG + "{{ s + s }}",
    BIG + "{{ [s] * 10000 }}",
    BIG + "x{{ [s] * 10000 }}",
    BIG + "{{ ([s] * 10000) | join }}",
    BIG + "{{ ([s] * 10000) | string }}",
    BIG + "{{ ([s] * 10000) | tojson }}",
    BIG + "{{ '%s' % ([s] * 10000,) }}",
    BIG + "{{ s.replace('', 'yy') }}",
    BIG + "{{ s | replace('x', 'yy') }}",
    BIG + "{{ s.split('') }}",
    BIG + "{{ (' ' * 30000).split(' ') }}",
    BIG + "{% set t %}{% for i in range(10000) %}{{ s }}{% endfor %}{% endset %}{{ t | length }}",
    BIG + "{% filter upper %}{% for i in range(10000) %}{{ s }}{% endfor %}{% endfilter %}",
    "{{ ['%0999999999d'] | format(1) }}",
    "{{ (range(3000) | list) | replace('', 'x' * 30000) }}",
    "{{ 'abc' | replace('', range(3000) | list) }}",
    "{{ range(10000) | join(range(3000) | list) }}",
    "{{ (range(10000) | list) + (range(10000) | list) }}",
    "{{ ','.join(range(10000) | map('string')) }}",
    "{{ range(10000) | map('string') | join(',') }}",
    "{{ (range(10000) | list) | tojson(indent=8) }}",
    "{{ [1, 2] | batch(10**9, 0) | list }}",
    "{{ [1, 2] | slice(10**9) | list }}",
    "{{ ([[1] * 10000] * 10000) | sum(start=[]) }}",
    "{% set xs = range(10000) | list %}{% for x in xs %}{{ xs | sort | length }}{% endfor %}",
    "{% set xs = range(10000) | list %}{% for x in xs %}{% if x in xs %}{% endif %}{% endfor %}",
    "{% set xs = range(10000) | list %}{% for x in xs %}{% set y = xs[::-1] %}{% endfor %}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{% macro f(n) %}{{ f(n) ~ f(n) }}{% endmacro %}{{ f(0) }}",
    "{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}{{ f('ab') }}",
    "{% macro f() %}{% call f() %}{% endcall %}{% endmacro %}{{ f() }}",
    "{% for x in range(10) recursive %}{{ loop(range(10)) }}{% endfor %}",
    "{{ " + "(" * 2000 + "1" + ")" * 2000 + " }}",
    "{{ x" + " | upper" * 1500 + " }}",
    "{{ [" * 1000 + "]" * 1000 + " }}",
]


def _measure(engine: TemplateEngine, payload: str) -> tuple[float, int, BaseException | None]:
    outcome: BaseException | None = None
    gc.collect()
    started = time.process_time()
    try:
        engine.render(payload, {})
    except TemplateError as error:
        outcome = error
    cpu = time.process_time() - started
    gc.collect()
    tracemalloc.start()
    try:
        engine.render(payload + " ", {})  # a new source: compiled again, as the first time
    except TemplateError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return cpu, peak, outcome


@pytest.fixture(scope="module")
def warm_engine() -> TemplateEngine:
    engine = TemplateEngine()
    engine.render("{% for i in range(2) %}{{ (i ~ x) | upper }}{% endfor %}", {"x": 1})  # builds Jinja's lexer
    return engine


@pytest.mark.parametrize("payload", EXHAUSTION, ids=[payload[:60] for payload in EXHAUSTION])
def test_resource_exhaustion_is_stopped_fast(warm_engine: TemplateEngine, payload: str) -> None:
    cpu, peak, outcome = _measure(warm_engine, payload)
    assert isinstance(outcome, TemplateError), "the payload was not refused"
    assert cpu < CPU_BUDGET_SECONDS, f"{cpu * 1000:.0f} ms of CPU"
    assert peak < MEMORY_BUDGET_BYTES, f"{peak / 1e6:.1f} MB at peak"


def test_limit_errors_name_the_setting(warm_engine: TemplateEngine) -> None:
    for payload in (
        "{{ 'a' * 10**9 }}",
        "{{ range(10**9) | list }}",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    ):
        with pytest.raises(TemplateLimitError) as caught:
            warm_engine.render(payload, {})
        assert caught.value.setting.startswith("QUICKBOT_TEMPLATE_")
        assert caught.value.setting in caught.value.message


def test_power_towers_are_evaluated_left_to_right_and_stay_bounded(warm_engine: TemplateEngine) -> None:
    # Jinja's ** is left-associative: 10**10**10 is (10**10)**10, a 101-digit number.
    cpu, peak, outcome = _measure(warm_engine, "{{ 10**10**10 }}")
    assert outcome is None and cpu < CPU_BUDGET_SECONDS and peak < MEMORY_BUDGET_BYTES
    assert warm_engine.render("{{ 10**10**10 }}", {}).value == 10**100
