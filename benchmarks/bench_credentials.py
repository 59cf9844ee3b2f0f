"""What opening a token costs on the conversation hot path, against validating the form alone.

    python benchmarks/bench_credentials.py [--rounds 20000]

Baseline: `Credentials.model_validate` of the form's values (what any design has to do).
Measured in the same run: sealing, opening without the cache (AES-GCM + JSON + validation),
opening through the cache (what every conversation after the first pays), and re-sealing.
Prints a table and writes benchmarks/results/credentials.json; the ratios are the point.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import per_call_us

from quickbot_segment_plugin.credentials.keyring import ENCRYPTION_KEYS_ENV, Credentials, KeyRing, generate_key

WRITE_KEY = "benchmarkWriteKey0123456789abcdef"
WORKSPACE = "bench-workspace"
FORM = {"writeKey": WRITE_KEY, "region": "eu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=20_000)
    args = parser.parse_args()

    old_key, new_key = generate_key(), generate_key()
    ring = KeyRing.from_env({ENCRYPTION_KEYS_ENV: f"{new_key},{old_key}"})
    token = ring.seal(FORM, WORKSPACE)
    old_token = KeyRing.from_env({ENCRYPTION_KEYS_ENV: old_key}).seal(FORM, WORKSPACE)
    ring.open(token, WORKSPACE)

    cases: dict[str, Callable[[], object]] = {
        "validate form (baseline)": lambda: Credentials.model_validate(FORM),
        "seal": lambda: ring.seal(FORM, WORKSPACE),
        "open, uncached": lambda: ring.open_uncached(token, WORKSPACE),
        "open, cached": lambda: ring.open(token, WORKSPACE),
        "reseal (old key -> new)": lambda: ring.reseal(old_token, WORKSPACE),
    }
    results = {name: per_call_us(action, args.rounds) for name, action in cases.items()}
    baseline = results["validate form (baseline)"]

    print(f"{'operation':<28}{'us/call':>10}{'x baseline':>12}")
    for name, micros in results.items():
        print(f"{name:<28}{micros:>10.2f}{micros / baseline:>12.2f}")

    output = Path(__file__).resolve().parent / "results" / "credentials.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "benchmark": "credentials",
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "python": platform.python_version(),
                "rounds": args.rounds,
                "baseline": "validate form (baseline)",
                "results": {
                    name: {"us_per_call": round(micros, 3), "ratio_to_baseline": round(micros / baseline, 3)}
                    for name, micros in results.items()
                },
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
