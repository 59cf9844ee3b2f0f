"""What rendering one templated field costs, against the plain dictionary look-up it replaces.

    python benchmarks/bench_templating.py [--rounds 200000] [--against DIR]

Baseline: `variables["First name"]` (what a block without templates would do). Measured in the
same run, for a compiled template: static text, one variable (`{{First name}}`), mixed text
(`Hello {{First name}}!`), a Jinja expression (`{{ Plan | upper }}`), a small loop, the same
through `engine.render` (cache look-up included), and compiling a new source (cache miss).
Prints a table and writes benchmarks/results/templating.json; the ratios are the point.

`--against DIR` also loads the package from DIR (for example `git archive <commit>
quickbot_segment_plugin | tar -x -C DIR`) and times each template with both versions in turn,
in the same process, taking the fastest of many short runs of each: on a busy machine this
is the comparison that stays meaningful (the ratio, not the nanoseconds).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import timeit
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

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


def load_other_version(directory: Path) -> ModuleType:
    """The package found in `directory`, imported under another name beside this one."""
    name = "baseline_quickbot_segment_plugin"
    package = directory / "quickbot_segment_plugin"
    spec = importlib.util.spec_from_file_location(
        name, package / "__init__.py", submodule_search_locations=[str(package)]
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"--against: no quickbot_segment_plugin package in {directory}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return importlib.import_module(f"{name}.templating")


def fastest_ns(render: Any, rounds: int, repeats: int) -> float:
    timer = timeit.Timer("render(variables)", globals={"render": render, "variables": VARIABLES})
    return min(timer.repeat(repeat=repeats, number=rounds)) / rounds * 1e9


def compare(directory: Path, rounds: int) -> None:
    """Each template rendered by this version and by the one in `directory`, interleaved."""
    other = load_other_version(directory)
    engines = {"this": TemplateEngine(), "other": other.TemplateEngine()}
    print(f"{'template':<66}{'other ns':>10}{'this ns':>10}{'this/other':>12}")
    for name, source in TEMPLATES.items():
        renders = {label: engine.compile(source).render for label, engine in engines.items()}
        scale = 10 if name.startswith(("expression", "loop")) else 1
        best = {label: float("inf") for label in renders}
        for _ in range(15):  # interleaved, so both versions see the same load
            for label, render in renders.items():
                best[label] = min(best[label], fastest_ns(render, rounds // scale // 10, 3))
        ratio = best["this"] / best["other"]
        print(f"{name + ': ' + source:<66}{best['other']:>10.0f}{best['this']:>10.0f}{ratio:>12.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=200_000)
    parser.add_argument("--against", type=Path, help="directory holding another version's quickbot_segment_plugin")
    args = parser.parse_args()
    rounds = args.rounds
    if args.against is not None:
        compare(args.against, rounds)
        return

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
