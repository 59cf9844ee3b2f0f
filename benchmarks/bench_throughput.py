"""Delivery throughput at internet latency: the plugin, the raw library, the Node library.

    python benchmarks/bench_throughput.py [--events 20000] [--latency-ms 0 50] [--repeat 1] [--no-node]

A loopback receiver (benchmarks/receiver.py, in its own process) answers every request after
0 ms and after 50 ms (a real round trip to Segment; the sleep is per request, so requests in
flight wait concurrently). In the same run, each contender runs in a fresh process of its own:

- plugin: one `DeliveryPool`, one workspace, default settings (what an operator gets);
- raw: one segment-analytics-python `Client(write_key, host=...)` with the library's defaults
  (100 events a batch, a 10,000-event queue, one request in flight, no gzip);
- node: one shared `@segment/analytics-node` `Analytics` client with its defaults, when `node`
  and `npm` exist; the package is installed into a temporary directory outside the repository
  (/tmp/node-bench) the first time, and the column is skipped with a note if that fails.

Two workloads, each of `--events` events:

- steady: a stream the producer keeps at most 5,000 events ahead of what was sent (it waits
  while more than that wait in the client's queue, not counting batches in flight; Node:
  events not yet acknowledged): a closed loop in which nobody's queue overflows, so this
  measures how fast delivery keeps up;
- burst: every event offered at once, as fast as the producer can call (a busy moment);
  events refused by a full queue are "lost" (the plugin dead-letters them; the library
  only logs a warning).

For each: delivered events/s (first call until the receiver has them all), HTTP requests
per 100 events, events lost (offered minus distinct events received), the most requests the
receiver saw at once, and CPU (user+sys of the contender's process from first call until
the last event arrived) per delivered event; with `--repeat`, the run with the median events/s
(contenders interleaved). Prints a table; writes benchmarks/results/throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from receiver import ReceiverProcess

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NODE_DIR = Path(os.environ.get("QUICKBOT_BENCH_NODE_DIR", "/tmp/node-bench"))
STEADY_BACKLOG = 5_000
WAIT_SECONDS = 180.0


# One contender in its own process: "ready" -> (go) -> work -> "enqueued <refused>" -> (stop) -> JSON.
_PYTHON_CONTENDER = """
import atexit, json, os, sys, time
sys.path.insert(0, sys.argv[1])
from bench_delivery import wire_message, raw_arguments
kind, url, scenario, events, backlog = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
WRITE_KEY = "benchmarkWriteKey0123456789"
messages = [wire_message(n) for n in range(events)]
if kind == "raw":
    from segment.analytics import Client
    client = Client(WRITE_KEY, host=url)  # the library's defaults
    atexit.unregister(client.join)
    calls = [raw_arguments(message) for message in messages]
    def send(n):
        queued, _ = client.track(**calls[n])
        return queued
    def depth():
        return client.queue.qsize()
else:
    from quickbot_segment_plugin.delivery import DeliveryPool, DeliverySettings
    pool = DeliveryPool(DeliverySettings.from_env())
    def send(n):
        return pool.enqueue("bench", WRITE_KEY, url, messages[n]).accepted
    def depth():
        return pool.stats()["waiting_to_send_now"]
print("ready", flush=True)
sys.stdin.readline()
began = os.times()
refused = 0
for n in range(events):
    if not send(n):
        refused += 1
    if scenario == "steady" and n % 100 == 99:
        while depth() > backlog:
            time.sleep(0.001)
print("enqueued", refused, flush=True)
sys.stdin.readline()
ended = os.times()
cpu = (ended.user - began.user) + (ended.system - began.system)
print(json.dumps({"cpu_seconds": cpu, "refused": refused}), flush=True)
if kind == "raw":
    client.join()
else:
    pool.shutdown(10)
"""

_NODE_CONTENDER = r"""
const { Analytics } = require('@segment/analytics-node');
const readline = require('readline');
const [url, scenario, eventsText, backlogText] = process.argv.slice(2);
const events = Number(eventsText), backlog = Number(backlogText);
const analytics = new Analytics({ writeKey: 'benchmarkWriteKey0123456789', host: url });
const rl = readline.createInterface({ input: process.stdin });
const lines = rl[Symbol.asyncIterator]();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const messages = [];
for (let n = 0; n < events; n++) {
  messages.push({
    userId: `user-${n % 500}`,
    event: 'Lead Qualified',
    properties: { plan: 'premium', score: n % 10, source: 'chatbot' },
    context: { quickbot: { botId: 'bot-1', sessionId: `s-${n % 97}` } },
    timestamp: new Date('2024-05-01T12:34:56.789Z'),
  });
}
(async () => {
  console.log('ready');
  await lines.next();
  const began = process.cpuUsage();
  let settled = 0, failed = 0;
  const done = (error) => { settled += 1; if (error) failed += 1; };
  for (let n = 0; n < events; n++) {
    analytics.track(messages[n], done);
    if (scenario === 'steady' && n % 100 === 99) {
      while (n + 1 - settled > backlog) await sleep(1);
    }
  }
  console.log(`enqueued 0`);
  await lines.next();
  const cpu = process.cpuUsage(began);
  console.log(JSON.stringify({ cpu_seconds: (cpu.user + cpu.system) / 1e6, refused: 0, failed }));
  await analytics.closeAndFlush({ timeout: 10000 });
  process.exit(0);
})();
"""


class Contender:
    """One contender process speaking the ready/go/enqueued/stop protocol on its pipes."""

    def __init__(self, command: list[str], cwd: Path | None = None) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=cwd, env=env
        )
        line = self._read()
        if line != "ready":
            raise RuntimeError(f"contender did not start: {line!r}")

    def _read(self) -> str:
        assert self._process.stdout is not None
        return self._process.stdout.readline().strip()

    def _send(self, line: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()

    def go(self) -> None:
        self._send("go")

    def enqueued(self) -> int:
        line = self._read()
        if not line.startswith("enqueued"):
            raise RuntimeError(f"unexpected answer: {line!r}")
        return int(line.split()[1])

    def stop(self) -> dict[str, Any]:
        self._send("stop")
        result: dict[str, Any] = json.loads(self._read())
        return result

    def close(self) -> None:
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def prepare_node() -> tuple[bool, str]:
    """Node and @segment/analytics-node in NODE_DIR (outside the repository), or why not."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return False, "node/npm not found: Node column skipped"
    package = NODE_DIR / "node_modules" / "@segment" / "analytics-node"
    if not package.exists():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(
                [npm, "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund", "@segment/analytics-node"],
                check=True,
                capture_output=True,
                timeout=300,
            )
        except (subprocess.SubprocessError, OSError) as error:
            return False, f"npm install @segment/analytics-node failed ({type(error).__name__}): Node column skipped"
    (NODE_DIR / "bench.js").write_text(_NODE_CONTENDER)
    version = json.loads((package / "package.json").read_text()).get("version", "?")
    return (
        True,
        f"@segment/analytics-node {version} on node {subprocess.run([node, '--version'], capture_output=True, text=True).stdout.strip()}",
    )


def contender_command(kind: str, url: str, scenario: str, events: int) -> tuple[list[str], Path | None]:
    if kind == "node":
        return ["node", str(NODE_DIR / "bench.js"), url, scenario, str(events), str(STEADY_BACKLOG)], NODE_DIR
    return [
        sys.executable,
        "-c",
        _PYTHON_CONTENDER,
        str(HERE),
        kind,
        url,
        scenario,
        str(events),
        str(STEADY_BACKLOG),
    ], None


def run_one(receiver: ReceiverProcess, kind: str, scenario: str, events: int) -> dict[str, Any]:
    command, cwd = contender_command(kind, receiver.url, scenario, events)
    contender = Contender(command, cwd)
    receiver.reset()
    started = time.monotonic()
    contender.go()
    refused = contender.enqueued()
    expected = events - refused
    deadline = started + WAIT_SECONDS
    stats = receiver.stats()
    while stats["distinct"] < expected and time.monotonic() < deadline:
        time.sleep(0.002)
        stats = receiver.stats()
    finished = time.monotonic()
    result = contender.stop()
    contender.close()
    delivered = stats["distinct"]
    return {
        "contender": kind,
        "scenario": scenario,
        "events": events,
        "delivered": delivered,
        "lost": events - delivered,
        "refused_at_enqueue": refused,
        "seconds": finished - started,
        "events_per_s": delivered / (finished - started),
        "requests": stats["requests"],
        "requests_per_100_events": 100 * stats["requests"] / max(1, delivered),
        "max_concurrent_requests": stats["max_concurrent"],
        "cpu_us_per_event": 1e6 * result["cpu_seconds"] / max(1, delivered),
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median events/s (its own figures, not a mix of runs)."""
    ordered = sorted(runs, key=lambda run: run["events_per_s"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["events_per_s_runs"] = [run["events_per_s"] for run in runs]
    chosen["cpu_us_per_event_median"] = statistics.median(run["cpu_us_per_event"] for run in runs)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 50.0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-node", action="store_true")
    args = parser.parse_args()

    node_ok, node_note = (False, "--no-node given") if args.no_node else prepare_node()
    kinds = ["plugin", "raw", *(["node"] if node_ok else [])]
    results: dict[str, Any] = {
        "events": args.events,
        "steady_backlog": STEADY_BACKLOG,
        "repeat": args.repeat,
        "python": sys.version.split()[0],
        "node": node_note,
        "cpus": os.cpu_count(),
        "runs": [],
    }
    print(f"N={args.events} events per run; {node_note}", flush=True)
    for latency_ms in args.latency_ms:
        receiver = ReceiverProcess(latency_ms / 1000)
        try:
            for scenario in ("steady", "burst"):
                # Repeats interleave the contenders, so a noisy neighbour on the machine hits
                # all of them alike rather than one contender's every run.
                runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
                for _ in range(args.repeat):
                    for kind in kinds:
                        runs[kind].append(run_one(receiver, kind, scenario, args.events))
                for kind in kinds:
                    run = median_run(runs[kind])
                    run["receiver_latency_ms"] = latency_ms
                    results["runs"].append(run)
                    print(
                        f"  {latency_ms:g} ms {scenario:6} {kind:6} {run['events_per_s']:>9,.0f} ev/s "
                        f"lost {run['lost']:>6,}  req/100 ev {run['requests_per_100_events']:.2f}  "
                        f"cpu {run['cpu_us_per_event']:.1f} us/ev  max in flight {run['max_concurrent_requests']}",
                        flush=True,
                    )
        finally:
            receiver.close()
    print()
    print(table(results["runs"], kinds))
    out = HERE / "results" / "throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


def table(runs: list[dict[str, Any]], kinds: list[str]) -> str:
    """A Markdown table: one row per (latency, workload, contender), plus ratios to the plugin."""
    by_key = {(run["receiver_latency_ms"], run["scenario"], run["contender"]): run for run in runs}
    lines = [
        "| latency | workload | client | events/s | plugin / this | requests per 100 events | lost | "
        "max requests in flight | CPU us/event |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"plugin": "plugin (DeliveryPool)", "raw": "segment-analytics-python", "node": "@segment/analytics-node"}
    for latency, scenario, kind in sorted(by_key, key=lambda k: (k[0], k[1] != "steady", kinds.index(k[2]))):
        run = by_key[(latency, scenario, kind)]
        plugin = by_key[(latency, scenario, "plugin")]
        lines.append(
            f"| {latency:g} ms | {scenario} | {names[kind]} | {run['events_per_s']:,.0f} | "
            f"{plugin['events_per_s'] / run['events_per_s']:.2f}x | {run['requests_per_100_events']:.2f} | "
            f"{run['lost']:,} | {run['max_concurrent_requests']} | {run['cpu_us_per_event']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
