"""What the benchmarks share: timing loops, percentiles, and a block built under given settings.

Each benchmark measures its subject against a baseline in the same run; these helpers make
sure every script times the same way (garbage collection off while timing, microseconds,
the same p99) so their ratios can be compared with each other.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from quickbot_segment_plugin.block import SegmentBlock
from quickbot_segment_plugin.credentials.keyring import ENCRYPTION_KEYS_ENV, generate_key

WRITE_KEY = "benchmarkWriteKey0123456789"
WORKSPACE = "bench"

# The block `bench_execute.py` and `bench_spool.py` time: a track with one templated id and three
# properties, two of them templates, as the issue that set execute's targets describes it.
TRACK_OPTIONS = {
    "action": "track",
    "event": "Lead Qualified",
    "userId": "{{User ID}}",
    "properties": [
        {"key": "plan", "value": "{{Plan}}"},
        {"key": "score", "value": "{{Score}}"},
        {"key": "source", "value": "chatbot"},
    ],
}
TRACK_VARIABLES = {"User ID": "user-1042", "Plan": "premium", "Score": 8}

# The heavier block of the same issue: ten properties (typed ones among them), nested traits in
# the context, checked against a 20-event tracking plan (bench_tracking_plan.py) and the default
# privacy policy.
HEAVY_OPTIONS = {
    "action": "track",
    "event": "Lead Qualified",
    "userId": "{{User ID}}",
    "properties": [
        {"key": "plan", "value": "{{Plan}}"},
        {"key": "score", "value": "{{Score}}", "type": "number"},
        {"key": "source", "value": "chatbot"},
        {"key": "email_opt_in", "value": "yes", "type": "boolean"},
        {"key": "answered_at", "value": "2026-01-31T12:00:00Z", "type": "datetime"},
        {"key": "step", "value": "{{Step}}", "type": "number"},
        {"key": "channel", "value": "web"},
        {"key": "campaign", "value": "{{Campaign}}"},
        {"key": "variant", "value": "B"},
        {"key": "locale", "value": "fr-FR"},
    ],
    "context": [
        {"key": "traits.name", "value": "{{First name}}"},
        {"key": "traits.address.city", "value": "{{City}}"},
        {"key": "traits.address.country", "value": "FR"},
    ],
}
HEAVY_VARIABLES = {
    "User ID": "user-1042",
    "Plan": "premium",
    "Score": 8,
    "Step": "3",
    "Campaign": "spring-sale",
    "First name": "Zoë",
    "City": "Lyon",
}


def cpu_us_per_call(call: Callable[[], object], count: int) -> float:
    """CPU time of the calling thread per call: what a call costs, without the waits for the GIL
    that a busy machine adds to its wall-clock time."""
    gc.disable()
    try:
        start = time.thread_time_ns()
        for _ in range(count):
            call()
        return (time.thread_time_ns() - start) / 1000 / count
    finally:
        gc.enable()


def process_cpu_seconds() -> float:
    """User + system CPU of this process, every thread included (the delivery threads too)."""
    times = os.times()
    return times.user + times.system


def timed_us(call: Callable[[], object], count: int) -> list[float]:
    """One sample per call, in microseconds, with the garbage collector off while timing."""
    samples = []
    gc.disable()
    try:
        for _ in range(count):
            start = time.perf_counter_ns()
            call()
            samples.append((time.perf_counter_ns() - start) / 1000)
    finally:
        gc.enable()
    return samples


def per_call_us(action: Callable[[], object], rounds: int, repeats: int = 5) -> float:
    """The best of `repeats` averages over `rounds` calls: the cost without scheduling noise."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(rounds):
            action()
        best = min(best, (time.perf_counter() - start) / rounds * 1e6)
    return best


def p99(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99)]


def use_local_segment(url: str, directory: str | Path, **settings: str) -> None:
    """Make every block built from now on send to `url`, with a fresh encryption key.

    Dead letters go to `directory` (a temporary one: a benchmark must not write to the
    operator's store), and `settings` are further `QUICKBOT_SEGMENT_*` variables by their
    suffix (`BATCH_SIZE="100"`). Plans and privacy files are not looked for unless a side
    asks for them through `block_under`.
    """
    os.environ[ENCRYPTION_KEYS_ENV] = generate_key()
    os.environ["QUICKBOT_SEGMENT_ENDPOINT"] = url
    os.environ["QUICKBOT_SEGMENT_DEAD_LETTER_PATH"] = str(Path(directory) / "dead-letters.sqlite3")
    for name in ("QUICKBOT_SEGMENT_PRIVACY_DIR", "QUICKBOT_SEGMENT_TRACKING_PLAN_DIR"):
        os.environ.pop(name, None)
    for suffix, value in {"MAX_QUEUE_SIZE": "100000", **settings}.items():
        os.environ[f"QUICKBOT_SEGMENT_{suffix}"] = value


def execute_rounds(
    sides: Mapping[str, tuple[SegmentBlock, dict[str, Any]]],
    options: dict[str, Any],
    events: int,
    rounds: int = 5,
    round_medians: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Microseconds per `execute` for each side, in interleaved rounds so drift hits every side alike.

    Each side is warmed first (plan cache, client, connection), and its queue is delivered
    after each of its rounds, so no side is timed beside another side's batches in flight.
    With `round_medians`, each round's median per side is appended there too: a ratio taken
    round by round is steadier on a shared machine than one of the pooled medians.
    """
    for block, context in sides.values():
        for _ in range(300):
            block.execute(options, context)
        block.pool().flush(60)
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, (block, context) in sides.items():
            timed = timed_us(lambda b=block, c=context: b.execute(options, c), events // rounds)
            samples[name] += timed
            if round_medians is not None:
                round_medians.setdefault(name, []).append(statistics.median(timed))
            block.pool().flush(60)
    return samples


def block_under(
    environ: Mapping[str, str | None], options: dict[str, Any], context: dict[str, Any]
) -> tuple[SegmentBlock, dict[str, Any]]:
    """A block whose settings are read under `environ` (blocks read them once, on first use).

    The block is sealed a token, run once so every cache and client exists, and the
    environment is restored; returns the block and the context (with credentials) to time.
    """
    saved = {name: os.environ.get(name) for name in environ}
    _apply(environ)
    try:
        block = SegmentBlock()
        token = block.seal_credentials({"writeKey": WRITE_KEY}, workspace_id=WORKSPACE)
        context = {**context, "credentials": token}
        result = block.execute(options, context)
        assert result["status"] == "queued", result["logs"]
    finally:
        _apply(saved)
    return block, context


def _apply(environ: Mapping[str, str | None]) -> None:
    for name, value in environ.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
