"""A bot builder's template can never freeze the server: other threads keep running.

Each payload below runs through the real block's `execute` (real sandbox, real delivery to the
embedded collector) while a thread of the same process ticks every 10 ms. A render that holds
the GIL in one long C operation (comparing, hashing or formatting a huge value) silences the
ticker; one that only runs long is stopped by the CPU deadline. Both are measured in ways a
busy machine does not fake: the rendering thread's own CPU time (`time.thread_time`), memory
with `tracemalloc`, and tick gaps re-measured before a long gap is blamed on the template.
"""

from __future__ import annotations

import itertools
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from support import WORKSPACE

from quickbot_segment_plugin.block import SegmentBlock
from quickbot_segment_plugin.templating import default_engine
from quickbot_segment_plugin.templating import engine as engine_module

#: (what it attacks, template). Every one passes validate(); each must fail fast at execute.
PAYLOADS: list[tuple[str, str]] = [
    (
        "comparison of nested lists built with *",
        "{% set a = [[[[[1]*100]*100]*100]*100]*100 %}{% set b = [[[[[1]*100]*100]*100]*100]*100 %}{{ a == b }}",
    ),
    ("hashing a nested tuple as a dict key", "{% set t = ((((((1,)*100,)*100,)*100,)*100,)*100) %}{{ {t: 1} }}"),
    ("unique of nested tuples", "{% set t = (((((1,)*100,)*100,)*100,)*100) %}{{ [t, t]|unique|list|length }}"),
    ("sort of nested tuples", "{% set t = (((((1,)*100,)*100,)*100,)*100) %}{{ [t, t, t]|sort|length }}"),
    ("membership of a nested tuple", "{% set t = (((((1,)*100,)*100,)*100,)*100) %}{{ t in [t, t] }}"),
    ("max of nested tuples", "{% set t = (((((1,)*100,)*100,)*100,)*100) %}{{ [t, t]|max|length }}"),
    ("count of a nested tuple", "{% set t = (((((1,)*100,)*100,)*100,)*100) %}{{ [t, t].count(t) }}"),
    ("% with a mapping value used 3,276 times", "{{ ('%(a)s' * 3276) % {'a': 'x' * 16380} }}"),
    ("format filter with a value used 3,276 times", "{{ ('%(a)s' * 3276)|format(a='x' * 16380) }}"),
    (
        "nesting built with +",
        "{% set a = [1]*5000 %}{% set b = [a] + [a] + [a] %}{% set c = [b] + [b] %}{{ c == c|list }}",
    ),
    (
        "nesting built with list literals",
        "{% set a = [1]*1000 %}{% set b = [a,a,a,a,a,a,a,a,a,a] %}{% set c = [b,b,b,b,b,b,b,b,b,b] %}"
        "{% set d = [c,c,c,c,c] %}{{ d == d|list }}",
    ),
    ("namespace holding a big list", "{% set ns = namespace(a=[1]*10000) %}{{ ns.a == ns.a }}"),
    ("dictionary keys hashed over and over", "{% set t = ((1,)*1000,)*45 %}{{ {t: 1, t: 2, t: 3, t: 4, t: 5} }}"),
    (
        "a tuple key looked up in a loop",
        "{% set t = ((1,)*1000,)*40 %}{% set d = {'k': 1} %}{% for i in range(9000) %}{{ d[t] }}{% endfor %}",
    ),
    (
        "macros calling macros",
        "{% macro a(n) %}{% for i in range(50) %}{{ a(n - 1) if n > 0 }}{% endfor %}{% endmacro %}"
        "{% macro b() %}{{ a(10) }}{{ a(10) }}{% endmacro %}{{ b() }}",
    ),
    ("string operations on a large range", "{{ range(10000)|join(',')|replace(',', ',,,,')|length }}"),
    (
        "text of a large range, many times",
        "{% for i in range(10000) %}{{ (range(9000)|list)|string|length }}{% endfor %}",
    ),
    ("batch of a long sequence", "{% for i in range(1000) %}{{ range(10000)|batch(3)|list|length }}{% endfor %}"),
    ("slice of a long sequence", "{% for i in range(1000) %}{{ range(10000)|slice(9999)|list|length }}{% endfor %}"),
    (
        "loop.changed comparing big values",
        "{% set a = [[1]*100]*200 %}{% set b = [[1]*100]*200 %}"
        "{% for i in range(4000) %}{{ loop.changed(a if i % 2 else b) }}{% endfor %}",
    ),
    ("nested loops", "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"),
]

TICK = 0.010
#: Longest pause of the ticker the template may cause (the issue's requirement).
MAX_GAP = 0.150
#: CPU the rendering thread may spend on one execute of a payload.
MAX_CPU = 0.100
#: Memory one execute of a payload may allocate at its peak.
MAX_MEMORY = 10 * 1024 * 1024


class Ticker:
    """A thread of the same process that wants to run every 10 ms, and records when it did."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.ticks.append(time.perf_counter())
            time.sleep(TICK)

    def longest_gap(self, since: float, until: float) -> float:
        window = [since, *(tick for tick in self.ticks if since <= tick <= until), until]
        return max(later - earlier for earlier, later in itertools.pairwise(window))

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@contextmanager
def cpu_of_this_thread() -> Iterator[list[float]]:
    spent: list[float] = []
    start = time.thread_time()
    yield spent
    spent.append(time.thread_time() - start)


def execute(block: SegmentBlock, token: str, template: str) -> dict[str, Any]:
    options = {"action": "track", "userId": "u-1", "event": "Payload", "properties": [{"key": "p", "value": template}]}
    assert block.validate(options) == [], "the payload must pass validate(): it attacks execute()"
    context = {"workspace_id": WORKSPACE, "credentials": token, "variables": {}}
    return block.execute(options, context)


def stall(block: SegmentBlock, token: str, template: str, ticker: Ticker) -> tuple[float, float, dict[str, Any]]:
    """(longest tick gap, CPU seconds, result) of one execute of `template`."""
    started = time.perf_counter()
    with cpu_of_this_thread() as cpu:
        result = execute(block, token, template)
    time.sleep(2 * TICK)  # let the ticker record the tick that ends the last gap
    return ticker.longest_gap(started, time.perf_counter()), cpu[0], result


def measure(block: SegmentBlock, token: str, template: str) -> tuple[float, float, int, dict[str, Any]]:
    """(longest tick gap, CPU seconds, peak bytes, result) of one execute of `template`."""
    execute(block, token, "{{ 1 }}")  # warm up: plans, the delivery client and its threads
    execute(block, token, template)  # compiles and caches the template, as a live flow would
    with Ticker() as ticker:
        time.sleep(5 * TICK)
        gap, cpu, result = stall(block, token, template, ticker)
        # A busy machine can pause the ticker (or slow the CPU) on its own; a template that
        # holds the GIL or runs long does so every time. So a miss counts only when it repeats.
        attempts = 1
        while (gap > MAX_GAP or cpu > MAX_CPU) and attempts < 4:
            attempts += 1
            again, cpu_again, result = stall(block, token, template, ticker)
            gap, cpu = min(gap, again), min(cpu, cpu_again)
    tracemalloc.start()  # apart from the timing: tracing makes Python several times slower
    try:
        execute(block, token, template)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return gap, cpu, peak, result


def assert_harmless(attack: str, gap: float, cpu: float, peak: int) -> None:
    assert gap <= MAX_GAP, f"{attack}: other threads waited {gap * 1000:.0f} ms"
    assert cpu <= MAX_CPU, f"{attack}: the render used {cpu * 1000:.0f} ms of CPU"
    assert peak <= MAX_MEMORY, f"{attack}: the render allocated {peak / 1e6:.1f} MB"


@pytest.mark.slow
@pytest.mark.parametrize(("attack", "template"), PAYLOADS, ids=[attack for attack, _ in PAYLOADS])
def test_payload_is_refused_without_stalling(block: SegmentBlock, token: str, attack: str, template: str) -> None:
    gap, cpu, peak, result = measure(block, token, template)
    assert result["status"] == "failed", result
    errors = [log for log in result["logs"] if log["level"] == "error"]
    assert errors and errors[0]["details"]["field"] == "properties/0/value", errors
    assert_harmless(attack, gap, cpu, peak)


@pytest.mark.slow
@pytest.mark.parametrize(("attack", "template"), PAYLOADS, ids=[attack for attack, _ in PAYLOADS])
def test_deadline_stops_what_the_work_budget_lets_through(
    block: SegmentBlock, token: str, attack: str, template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the work budget at its maximum, the cost model no longer stops these payloads:
    the per-render CPU deadline and the fixed bound on a value's size still do."""
    monkeypatch.setenv("QUICKBOT_TEMPLATE_MAX_WORK", "100000000")
    monkeypatch.setenv("QUICKBOT_TEMPLATE_MAX_EXECUTE_WORK", "1000000000")
    monkeypatch.setattr(engine_module, "_default_engine", None)
    assert default_engine().limits.max_work == 100_000_000
    gap, cpu, peak, _ = measure(block, token, template)
    assert_harmless(attack, gap, cpu, peak)
