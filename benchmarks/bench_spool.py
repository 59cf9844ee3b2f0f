"""What the spool costs: `execute` with the spool on and off, and delivery throughput, same run.

    python benchmarks/bench_spool.py [--events 10000] [--burst 10000] [--repeat 2] [--append-only]

(0) `Spool.append` alone, µs per event, for the message as UTF-8 bytes (what orjson returns: the
    path `execute` takes) and as text, beside a plain `os.write` of the same records to a file of
    its own (what a write(2) per event would cost). And `Spool.ack`, µs per event in batches of 100 (delivery threads pay
    it). Interleaved rounds, median of the rounds' means; `--append-only` stops after this.
(a) `execute` latency: three blocks in one process, spool `process` (the default), `machine`
    and `off`, timed in interleaved rounds against a local receiver answering at once (common.py,
    `execute_rounds`: each side's queue is delivered after each of its rounds). Target: the
    median with `process` at most 1.15x the median with `off`.
(b) delivery throughput at 50 ms: a burst of `--burst` events offered to a `DeliveryPool`
    with and without a spool (`process`), each contender in a fresh process, interleaved
    `--repeat` times; events/s from the first enqueue until the receiver has them all (the
    run with the median rate). Target: the spool changes it by less than 10%.
Prints a table and writes benchmarks/results/spool.json. The machine may be shared: ratios
from the same run are the point, not absolute numbers.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import TRACK_OPTIONS as OPTIONS
from common import TRACK_VARIABLES as VARIABLES
from common import WORKSPACE, WRITE_KEY, block_under, execute_rounds, p99, use_local_segment
from receiver import ReceiverProcess

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


_CONTENDER = """
import json, os, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
from bench_delivery import wire_message
from quickbot_segment_plugin.delivery import DeliveryPool, DeliverySettings
from quickbot_segment_plugin.delivery.spool import Spool
from quickbot_segment_plugin.delivery.spool_settings import SpoolSettings
kind, url, events = sys.argv[2], sys.argv[3], int(sys.argv[4])
directory = tempfile.mkdtemp(prefix="bench-spool-")
spool = Spool(SpoolSettings(Path := __import__("pathlib").Path(directory))) if kind == "spool" else None
pool = DeliveryPool(DeliverySettings.from_env(), spool=spool)
messages = [wire_message(n) for n in range(events)]
print("ready", flush=True)
sys.stdin.readline()
began = os.times()
refused = sum(not pool.enqueue("bench", "benchmarkWriteKey0123456789", url, m, token="sealed").accepted for m in messages)
print("enqueued", refused, flush=True)
sys.stdin.readline()
ended = os.times()
print(json.dumps({"cpu_seconds": ended.user - began.user + ended.system - began.system}), flush=True)
pool.shutdown(10)
"""


def measure_append(events: int, rounds: int = 15) -> dict[str, Any]:
    """µs per event for `Spool.append` (bytes and text), `os.write` of the same records, and `Spool.ack`."""
    from bench_delivery import wire_message

    from quickbot_segment_plugin.delivery.spool import Spool
    from quickbot_segment_plugin.delivery.spool_format import event_record
    from quickbot_segment_plugin.delivery.spool_settings import SpoolSettings

    messages = [wire_message(n) for n in range(events)]
    ids = [message["messageId"] for message in messages]
    texts = [json.dumps(message, separators=(",", ":")) for message in messages]
    encoded = [text.encode() for text in texts]
    records = [event_record(n + 1, 1, data) for n, data in enumerate(encoded)]
    per_round: dict[str, list[float]] = {"os_write": [], "append_bytes": [], "append_text": [], "ack": []}
    with tempfile.TemporaryDirectory() as directory:
        gc.disable()
        try:
            for _ in range(rounds):
                fd = os.open(Path(directory) / "floor", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
                write = os.write
                started = time.perf_counter()
                for record in records:
                    write(fd, record)
                per_round["os_write"].append((time.perf_counter() - started) / events * 1e6)
                os.close(fd)
                for side, payloads in (("append_bytes", encoded), ("append_text", texts)):
                    spool = Spool(SpoolSettings(Path(directory) / side))
                    append = spool.append
                    started = time.perf_counter()
                    for message_id, payload in zip(ids, payloads, strict=True):
                        append(WORKSPACE, WRITE_KEY, "https://api.segment.io", "sealed", message_id, payload)
                    per_round[side].append((time.perf_counter() - started) / events * 1e6)
                    batches = [ids[start : start + 100] for start in range(0, events, 100)]
                    started = time.perf_counter()
                    for batch in batches:
                        spool.ack(WORKSPACE, batch)
                    if side == "append_bytes":
                        per_round["ack"].append((time.perf_counter() - started) / events * 1e6)
                    spool.close()
        finally:
            gc.enable()
    result: dict[str, Any] = {name: statistics.median(values) for name, values in per_round.items()}
    result["rounds"] = rounds
    return result


def measure_execute(events: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory, ReceiverProcess(0.0) as receiver:
        use_local_segment(receiver.url, directory, BATCH_SIZE="100", FLUSH_INTERVAL="0.05", GZIP="true")
        base = {"workspace_id": "bench", "variables": VARIABLES, "bot_id": "b"}
        sides = {
            mode: block_under(
                {
                    "QUICKBOT_SEGMENT_SPOOL_DURABILITY": mode,
                    "QUICKBOT_SEGMENT_SPOOL_DIR": str(Path(directory) / f"spool-{mode}"),
                },
                OPTIONS,
                base,
            )
            for mode in ("off", "process", "machine")
        }
        by_round: dict[str, list[float]] = {}
        samples = execute_rounds(sides, OPTIONS, events, rounds=20, round_medians=by_round)
        for block, _ in sides.values():
            block.shutdown(10)
    result: dict[str, Any] = {
        mode: {"median_us": statistics.median(values), "p99_us": p99(values)} for mode, values in samples.items()
    }
    # The median of the round-by-round ratios: each pair of rounds ran back to back, so a slow
    # moment of the machine weighs on both sides of a ratio rather than on one side's median.
    for mode in ("process", "machine"):
        ratios = [spooled / off for spooled, off in zip(by_round[mode], by_round["off"], strict=True)]
        result[f"{mode}_ratio"] = statistics.median(ratios)
        result[f"{mode}_ratio_quartiles"] = statistics.quantiles(ratios, n=4)[::2]
    return result


def _run_contender(receiver: ReceiverProcess, kind: str, events: int) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    child = subprocess.Popen(
        [sys.executable, "-c", _CONTENDER, str(HERE), kind, receiver.url, str(events)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdin is not None and child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{kind} contender did not start")
    receiver.reset()
    started = time.monotonic()
    child.stdin.write("go\n")
    child.stdin.flush()
    refused = int(child.stdout.readline().split()[1])
    finished = receiver.wait_for(events - refused, 180)
    child.stdin.write("stop\n")
    child.stdin.flush()
    cpu = json.loads(child.stdout.readline())["cpu_seconds"]
    child.wait(30)
    delivered = receiver.stats()["distinct"]
    return {
        "kind": kind,
        "events_per_s": delivered / (finished - started),
        "refused": refused,
        "cpu_us_per_event": 1e6 * cpu / max(1, delivered),
    }


def measure_throughput(events: int, repeat: int, latency_ms: float) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "spool": []}
    with ReceiverProcess(latency_ms / 1000) as receiver:
        for _ in range(repeat):
            for kind in runs:
                runs[kind].append(_run_contender(receiver, kind, events))
    result: dict[str, Any] = {"latency_ms": latency_ms, "events": events}
    for kind, kind_runs in runs.items():
        ordered = sorted(kind_runs, key=lambda run: run["events_per_s"])
        result[kind] = {**ordered[len(ordered) // 2], "events_per_s_runs": [run["events_per_s"] for run in kind_runs]}
    result["change"] = result["spool"]["events_per_s"] / result["off"]["events_per_s"] - 1
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="execute calls timed per side")
    parser.add_argument("--burst", type=int, default=10_000, help="events per throughput run")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--append-only", action="store_true", help="only the Spool.append and ack rows")
    args = parser.parse_args()
    append = measure_append(args.events)
    print(
        f"Spool.append, us per event (median of {append['rounds']} rounds): bytes {append['append_bytes']:.2f}, "
        f"text {append['append_text']:.2f}; os.write of the same records {append['os_write']:.2f} "
        f"(append bytes / os.write {append['append_bytes'] / append['os_write']:.2f}x); "
        f"Spool.ack {append['ack']:.2f} per event, in batches of 100"
    )
    if args.append_only:
        return
    execute = measure_execute(args.events)
    throughput = measure_throughput(args.burst, args.repeat, args.latency_ms)
    results = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "append": append,
        "execute": execute,
        "throughput": throughput,
    }
    print("| measure | spool off | spool process | spool machine | process / off |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| execute median (us) | {execute['off']['median_us']:.1f} | {execute['process']['median_us']:.1f} | "
        f"{execute['machine']['median_us']:.1f} | "
        f"{execute['process']['median_us'] / execute['off']['median_us']:.2f}x |"
    )
    low, high = execute["process_ratio_quartiles"]
    print(
        f"| execute, median of round-by-round ratios | | | | {execute['process_ratio']:.2f}x "
        f"(quartiles {low:.2f}-{high:.2f}; machine {execute['machine_ratio']:.2f}x) |"
    )
    print(
        f"| execute p99 (us) | {execute['off']['p99_us']:.1f} | {execute['process']['p99_us']:.1f} | "
        f"{execute['machine']['p99_us']:.1f} | {execute['process']['p99_us'] / execute['off']['p99_us']:.2f}x |"
    )
    print(
        f"| burst of {args.burst:,} at {args.latency_ms:g} ms (events/s) | {throughput['off']['events_per_s']:,.0f} | "
        f"{throughput['spool']['events_per_s']:,.0f} | | {1 + throughput['change']:.2f}x |"
    )
    print(
        f"| CPU per delivered event (us) | {throughput['off']['cpu_us_per_event']:.1f} | "
        f"{throughput['spool']['cpu_us_per_event']:.1f} | | |"
    )
    out = HERE / "results" / "spool.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
