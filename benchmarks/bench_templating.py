"""What rendering one templated field costs, against the plain dictionary look-up it replaces.

    python benchmarks/bench_templating.py [--rounds 200000]

Baseline: `variables["First name"]` (what a block without templates would do). Measured in the
same run, for a compiled template: static text, one variable (`{{First name}}`), mixed text
(`Hello {{First name}}!`), a Jinja expression (`{{ Plan | upper }}`), a small loop, the same
through `engine.render` (cache look-up included), and compiling a new source (cache miss).
Prints a table and writes benchmarks/results/templating.json; the ratios are the point.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import timeit
from datetime import UTC, datetime
from pathlib import Path

from quickbot_segment_plugin.templating import TemplateEngine, TemplateLimits

VARIABLES: dict[str, object] = {
    "First name": "Ada",
    "Plan": "pro",
    "Colors": ["red", "green", "blue"],
    "Age": 36,
}

TEMPLATES = {
    "static text": "Thanks for signing up!",
    "one variable": "{{First name}}",
    "mixed text": "Hello {{First name}}!",
    "expression": "{{ Plan | upper }}",
    "expression in text": "Plan: {{ Plan | upper }} ({{ Age + 1 }})",
    "loop over a list": "{% for c in Colors %}{{ c }}, {% endfor %}",
}


def per_call_ns(statement: str, namespace: dict[str, object], rounds: int, repeats: int = 7) -> float:
    """Median over `repeats` of the mean time per statement, in nanoseconds (no call overhead)."""
    timer = timeit.Timer(statement, globals=namespace)
    return statistics.median(timer.repeat(repeat=repeats, number=rounds)) / rounds * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=200_000)
    args = parser.parse_args()
    rounds = args.rounds

    engine = TemplateEngine()
    results: dict[str, float] = {
        "dict lookup (baseline)": per_call_ns('variables["First name"]', {"variables": VARIABLES}, rounds)
    }
    for name, source in TEMPLATES.items():
        compiled = engine.compile(source)
        compiled.render(VARIABLES)
        scale = 10 if name.startswith(("expression", "loop")) else 1
        results[f"{name}: {source}"] = per_call_ns(
            "render(variables)", {"render": compiled.render, "variables": VARIABLES}, rounds // scale
        )
    results["engine.render (cache + render): Hello {{First name}}!"] = per_call_ns(
        "render(source, variables)",
        {"render": engine.render, "source": TEMPLATES["mixed text"], "variables": VARIABLES},
        rounds,
    )
    missing_engine = TemplateEngine(TemplateLimits(cache_size=1))
    sources = ["{{ Plan | upper }}", "{{ Plan | lower }}"]
    counter = iter(range(10**9))
    results["compile a new source (cache miss): {{ Plan | upper }}"] = per_call_ns(
        "compile(sources[next(counter) % 2])",
        {"compile": missing_engine.compile, "sources": sources, "counter": counter},
        max(rounds // 400, 50),
        repeats=3,
    )
    baseline = results["dict lookup (baseline)"]

    width = max(len(name) for name in results) + 2
    print(f"{'operation':<{width}}{'ns/call':>12}{'x dict lookup':>16}")
    for name, nanos in results.items():
        print(f"{name:<{width}}{nanos:>12.0f}{nanos / baseline:>16.1f}")

    output = Path(__file__).resolve().parent / "results" / "templating.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "benchmark": "templating",
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "python": platform.python_version(),
                "rounds": rounds,
                "baseline": "dict lookup (baseline)",
                "results": {
                    name: {"ns_per_call": round(nanos, 1), "ratio_to_baseline": round(nanos / baseline, 2)}
                    for name, nanos in results.items()
                },
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
