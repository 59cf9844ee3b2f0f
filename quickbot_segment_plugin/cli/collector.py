"""`quickbot-segment collector` and `quickbot-segment events`: the local Segment stand-in.

`collector` runs the embedded Segment-compatible endpoint in the foreground, so a bot
builder can point the plugin at it (`QUICKBOT_SEGMENT_ENDPOINT`) and watch events arrive
without a Segment account; `events` lists what a running collector stored, with the
warnings Segment's debugger would show.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from types import FrameType
from typing import Any

from ..collector import DEFAULT_MAX_CONNECTIONS, Collector, CollectorError
from ..core import PluginError, env_int, env_str

PORT_ENV = "QUICKBOT_SEGMENT_COLLECTOR_PORT"
DB_ENV = "QUICKBOT_SEGMENT_COLLECTOR_DB"
URL_ENV = "QUICKBOT_SEGMENT_COLLECTOR_URL"
DEFAULT_PORT = 8787


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    run = subparsers.add_parser(
        "collector",
        help="run a local Segment-compatible endpoint (no Segment account needed)",
        description="Runs the embedded Segment-compatible collector in the foreground until Ctrl-C. "
        "It accepts Segment's Tracking API (/v1/batch, /v1/track, ...), stores every event in SQLite "
        "and serves them at GET /events.",
    )
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    run.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port to listen on, 0 for any free port (default: ${PORT_ENV} or 8787)",
    )
    run.add_argument(
        "--db",
        default=None,
        help=f"SQLite file to keep events in (default: ${DB_ENV}, else a temporary file)",
    )
    run.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (the collector accepts any key)",
    )
    run.add_argument(
        "--latency", type=float, default=0.0, help="seconds to wait before each answer (simulates a network)"
    )
    run.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help=f"connections served at once (default: {DEFAULT_MAX_CONNECTIONS})",
    )
    run.set_defaults(func=run_collector)

    events = subparsers.add_parser(
        "events",
        help="list the events a running collector stored",
        description="Lists events stored by a running collector, newest first, with Segment's warnings.",
    )
    events.add_argument(
        "--url", default=None, help=f"the collector's URL (default: ${URL_ENV} or http://127.0.0.1:8787)"
    )
    events.add_argument("--type", help="identify, track, page, screen, group or alias")
    events.add_argument("--user-id", help="only this userId")
    events.add_argument("--anonymous-id", help="only this anonymousId")
    events.add_argument("--event", help="only track calls with this event name")
    events.add_argument("--message-id", help="only this messageId")
    events.add_argument("--since", help="only events received at or after this ISO-8601 time")
    events.add_argument("--limit", type=int, default=20, help="how many (default: 20, at most 1000)")
    events.add_argument("--offset", type=int, default=0, help="skip this many newest events first")
    events.add_argument("--json", action="store_true", help="print the events as JSON instead of a table")
    events.set_defaults(func=list_events)


def run_collector(args: argparse.Namespace) -> int:
    port = args.port if args.port is not None else env_int(PORT_ENV, DEFAULT_PORT, maximum=65535)
    db = args.db or env_str(DB_ENV, "") or None
    collector = Collector(
        db,
        host=args.host,
        port=port,
        allow_remote=args.allow_remote,
        latency=args.latency,
        max_connections=args.max_connections,
    )
    collector.start()
    restore = _stop_on_sigterm()
    try:
        where = f"in {collector.db_path}" if db else "in a temporary file, deleted on exit (use --db to keep them)"
        print(f"Segment-compatible collector listening on {collector.url}", flush=True)
        print(f"  events are stored {where}", flush=True)
        print(f"  send the plugin's events here:  QUICKBOT_SEGMENT_ENDPOINT={collector.url}", flush=True)
        print(f"  watch them live in a browser:   {collector.debugger_url}", flush=True)
        print(f"  list them:                      quickbot-segment events --url {collector.url}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        received = collector.count()
        print(f"\nStopped; {received} event(s) stored.", flush=True)
        return 0
    finally:
        restore()
        collector.stop()


def _stop_on_sigterm() -> Any:
    """Makes SIGTERM (docker stop, systemd) stop as cleanly as Ctrl-C does."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


def list_events(args: argparse.Namespace) -> int:
    base = (args.url or env_str(URL_ENV, f"http://127.0.0.1:{DEFAULT_PORT}")).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise CollectorError(f"--url must be an http:// URL, got {base!r}.", field="url")
    if not 0 <= args.limit <= 1000:
        raise CollectorError(f"--limit must be from 0 to 1000, got {args.limit}.", field="limit")
    if args.offset < 0:
        raise CollectorError(f"--offset must be 0 or more, got {args.offset}.", field="offset")
    query = {
        name: value
        for name, value in (
            ("type", args.type),
            ("userId", args.user_id),
            ("anonymousId", args.anonymous_id),
            ("event", args.event),
            ("messageId", args.message_id),
            ("since", args.since),
            ("limit", str(args.limit)),
            ("offset", str(args.offset)),
        )
        if value is not None
    }
    page = _get_json(f"{base}/events?{urllib.parse.urlencode(query)}", base)
    events: list[dict[str, Any]] = page.get("events", [])
    if args.json:
        print(json.dumps(events, indent=2, ensure_ascii=False))
        return 0
    print(render_table(events))
    total = int(page.get("total", len(events)))
    if events:
        shown = f"showing {args.offset + 1}-{args.offset + len(events)} of {total}"
        following = page.get("next_offset")
        print(shown + (f"; next page: --offset {following}" if following is not None else ""))
    else:
        print(f"no events (of {total} matching)" if total else "no events")
    return 0


def _get_json(url: str, base: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            data = response.read()
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read()).get("message", "")
        except (ValueError, AttributeError):
            message = ""
        raise PluginError(f"the collector at {base} answered {error.code}: {message or error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise PluginError(
            f"cannot reach a collector at {base} ({reason}); start one with `quickbot-segment collector`.",
            field="url",
        ) from None
    try:
        page = json.loads(data)
    except ValueError:
        raise PluginError(f"{base} did not answer like a collector (not JSON).", field="url") from None
    if not isinstance(page, dict):
        raise PluginError(f"{base} did not answer like a collector.", field="url")
    return page


def _label(event: dict[str, Any]) -> str:
    """The one thing that names a call: its event, page/screen name, group or previous id."""
    message = event.get("message") or {}
    kind = event.get("type")
    if kind == "track":
        return str(message.get("event", ""))
    if kind in ("page", "screen"):
        return str(message.get("name") or message.get("category") or "")
    if kind == "group":
        return f"group {message.get('groupId', '')}"
    if kind == "alias":
        return f"from {message.get('previousId', '')}"
    if kind == "identify":
        traits = message.get("traits")
        return ", ".join(sorted(traits)) if isinstance(traits, dict) else ""
    return ""


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render_table(events: list[dict[str, Any]]) -> str:
    """A fixed-width table, one line per event plus one per warning."""
    header = ("RECEIVED", "TYPE", "USER", "EVENT / NAME", "MESSAGE ID", "FLAGS")
    widths = (24, 8, 24, 28, 36, 5)
    lines = ["  ".join(title.ljust(width) for title, width in zip(header, widths, strict=True)).rstrip()]
    for event in events:
        user = event.get("user_id") or (
            f"anon:{event['anonymous_id']}" if event.get("anonymous_id") is not None else "-"
        )
        warnings = event.get("warnings") or []
        flags = ("dup " if event.get("duplicate") else "") + (f"!{len(warnings)}" if warnings else "")
        cells = (
            str(event.get("received_at", "")),
            str(event.get("type", "")),
            str(user),
            _label(event),
            str(event.get("message_id", "")),
            flags.strip() or "-",
        )
        lines.append(
            "  ".join(_cut(cell, width).ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        )
        lines.extend(f"    ! {warning}" for warning in warnings)
    return "\n".join(lines)
