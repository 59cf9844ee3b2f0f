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

from ..collector import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_STORED_EVENTS,
    DEFAULT_MAX_STORED_MB,
    Collector,
    CollectorError,
    CollectorSettings,
    parse_allowed_origins,
)
from ..core import PluginError, env_name

# The variables behind the flags, named once by the settings model.
PORT_ENV = env_name(CollectorSettings, "port")
DB_ENV = env_name(CollectorSettings, "db")
URL_ENV = env_name(CollectorSettings, "url")
MAX_CONNECTIONS_ENV = env_name(CollectorSettings, "max_connections")
MAX_STORED_EVENTS_ENV = env_name(CollectorSettings, "max_stored_events")
MAX_STORED_MB_ENV = env_name(CollectorSettings, "max_stored_mb")
ALLOWED_ORIGINS_ENV = env_name(CollectorSettings, "allowed_origins")


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
        default=None,
        help=f"connections served at once (default: ${MAX_CONNECTIONS_ENV} or {DEFAULT_MAX_CONNECTIONS})",
    )
    run.add_argument(
        "--max-stored-events",
        type=int,
        default=None,
        help="events kept; past it the oldest are dropped and counted "
        f"(default: ${MAX_STORED_EVENTS_ENV} or {DEFAULT_MAX_STORED_EVENTS})",
    )
    run.add_argument(
        "--max-stored-mb",
        type=float,
        default=None,
        help="megabytes of stored JSON kept; past it the oldest events are dropped "
        f"(default: ${MAX_STORED_MB_ENV} or {DEFAULT_MAX_STORED_MB})",
    )
    run.add_argument(
        "--allow-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="a web page allowed to send events from a browser, such as http://localhost:3000; repeat for "
        f"several (default: ${ALLOWED_ORIGINS_ENV}, comma-separated; other sites' pages are refused)",
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
    events.add_argument("--type", type=_call_type, help="identify, track, page, screen, group or alias (any case)")
    events.add_argument("--user-id", help="only this userId")
    events.add_argument("--anonymous-id", help="only this anonymousId")
    events.add_argument("--event", help="only track calls with this event name, or page/screen calls with this name")
    events.add_argument("--message-id", help="only this messageId")
    events.add_argument("--since", help="only events received at or after this ISO-8601 time")
    events.add_argument("--limit", type=int, default=20, help="how many (default: 20, at most 1000)")
    events.add_argument("--offset", type=int, default=0, help="skip this many newest events first")
    events.add_argument("--json", action="store_true", help="print the events as JSON instead of a table")
    events.add_argument(
        "--rejections",
        action="store_true",
        help="list the requests the collector refused (or accepted and dropped) instead, with the reason "
        "and the write key's fingerprint",
    )
    events.set_defaults(func=list_events)


CALL_TYPES = ("identify", "track", "page", "screen", "group", "alias")


def _call_type(text: str) -> str:
    """`--type Track` is `track`; an unknown type is a usage error (exit 2) listing the valid ones."""
    wanted = text.strip().lower()
    if wanted not in CALL_TYPES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a Segment call type; use one of {', '.join(CALL_TYPES)}")
    return wanted


def run_collector(args: argparse.Namespace) -> int:
    settings = CollectorSettings.from_env()
    port = args.port if args.port is not None else settings.port
    db = args.db or settings.db or None
    max_connections = args.max_connections if args.max_connections is not None else settings.max_connections
    max_events = args.max_stored_events if args.max_stored_events is not None else settings.max_stored_events
    max_mb = args.max_stored_mb if args.max_stored_mb is not None else settings.max_stored_mb
    origins = args.allow_origin
    origins_from = "--allow-origin"
    if origins is None:
        origins = settings.allowed_origins.split(",")
        origins_from = f"${ALLOWED_ORIGINS_ENV}"
    try:
        parse_allowed_origins(origins)
    except ValueError as error:
        raise CollectorError(f"{origins_from}: {error}", field="allow-origin") from None
    if not 1 <= max_events <= 100_000_000:
        raise CollectorError(
            f"--max-stored-events must be from 1 to 100000000, got {max_events}.", field="max-stored-events"
        )
    if not 0.001 <= max_mb <= 1_000_000:
        raise CollectorError(f"--max-stored-mb must be from 0.001 to 1000000, got {max_mb}.", field="max-stored-mb")
    collector = Collector(
        db,
        host=args.host,
        port=port,
        allow_remote=args.allow_remote,
        latency=args.latency,
        max_connections=max_connections,
        max_stored_events=max_events,
        max_stored_mb=max_mb,
        allowed_origins=origins,
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
    base = (args.url or CollectorSettings.from_env().url).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise CollectorError(f"--url must be an http:// URL, got {base!r}.", field="url")
    if not 0 <= args.limit <= 1000:
        raise CollectorError(f"--limit must be from 0 to 1000, got {args.limit}.", field="limit")
    if args.offset < 0:
        raise CollectorError(f"--offset must be 0 or more, got {args.offset}.", field="offset")
    if args.rejections:
        return list_rejections(base, args.limit, as_json=args.json)
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


def list_rejections(base: str, limit: int, *, as_json: bool) -> int:
    """Requests the collector refused (or answered 200 and dropped), newest first."""
    page = _get_json(f"{base}/rejections?limit={limit}", base)
    rejections: list[dict[str, Any]] = page.get("rejections", [])
    if as_json:
        print(json.dumps(rejections, indent=2, ensure_ascii=False))
        return 0
    print(render_rejections(rejections) if rejections else "no rejected requests")
    return 0


def render_rejections(rejections: list[dict[str, Any]]) -> str:
    """One line per rejection, then its reason indented (reasons are sentences)."""
    header = ("RECEIVED", "STATUS", "CODE", "WRITE KEY", "PATH")
    widths = (24, 6, 22, 19, 20)
    lines = ["  ".join(title.ljust(width) for title, width in zip(header, widths, strict=True)).rstrip()]
    for rejection in rejections:
        cells = tuple(
            _printable(str(value))
            for value in (
                rejection.get("received_at", ""),
                rejection.get("status", ""),
                rejection.get("code", ""),
                rejection.get("write_key_fingerprint") or "-",
                rejection.get("path", ""),
            )
        )
        lines.append(
            "  ".join(_cut(cell, width).ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        )
        lines.append(f"    {_printable(str(rejection.get('reason', '')))}")
    return "\n".join(lines)


def _printable(text: str) -> str:
    """A refused request's path or Origin is whatever a client sent: control characters
    (terminal escapes) are shown escaped, never sent to the operator's terminal."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


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
    # MESSAGE ID is never cut: it is what `--message-id` takes (uuids are 36 characters).
    widths = (24, 8, 24, 28, 36, 5)
    lines = ["  ".join(title.ljust(width) for title, width in zip(header, widths, strict=True)).rstrip()]
    for event in events:
        user = event.get("user_id") or (
            f"anon:{event['anonymous_id']}" if event.get("anonymous_id") is not None else "-"
        )
        warnings = event.get("warnings") or []
        flags = ("dup " if event.get("duplicate") else "") + (f"!{len(warnings)}" if warnings else "")
        cells = (
            _cut(str(event.get("received_at", "")), widths[0]),
            _cut(str(event.get("type", "")), widths[1]),
            _cut(str(user), widths[2]),
            _cut(_label(event), widths[3]),
            str(event.get("message_id", "")),
            flags.strip() or "-",
        )
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip())
        lines.extend(f"    ! {warning}" for warning in warnings)
    return "\n".join(lines)
