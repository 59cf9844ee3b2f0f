"""Which web pages may write to the collector: the `Origin` rules.

The collector runs on the operator's machine, next to their browser. Any page they open
can POST to `http://127.0.0.1:<port>` with `text/plain` (no preflight), so without these
rules a page could fill the disk through `/v1/*`, or script faults and delete events
through the admin API. Browsers always send `Origin` on such requests; server libraries,
the plugin and the CLI send none, so a request without `Origin` is not a browser's.

- `/v1/*` refuses a request whose Origin is another site (anything but the collector
  itself, or an origin the operator allowed with `--allow-origin`).
- The admin API (`/_admin/*`, `DELETE /events`) accepts its own origin only, port included:
  `http://localhost:3000` is another local service (a dev server, a notebook), not the
  debugger page.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from .http import is_loopback


def normalize_origin(origin: str) -> str | None:
    """`scheme://host:port` in lower case with the default port spelled out; None when not an origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


def is_own_origin(origin: str, host_header: str | None, local_port: int, *, allow_remote: bool) -> bool:
    """Whether `origin` is the collector's own page: http on a loopback name with the
    collector's port, or, on a collector started with --allow-remote, exactly the Host the
    request was sent to. (On a loopback-only collector a matching Host proves nothing: a
    page that rebinds its own name to 127.0.0.1 sends its own name as both.)"""
    normalized = normalize_origin(origin)
    if normalized is None:
        return False
    parts = urlsplit(normalized)
    if parts.scheme == "http" and parts.port == local_port and is_loopback(parts.hostname or ""):
        return True
    if allow_remote and host_header:
        return normalized == normalize_origin(f"{parts.scheme}://{host_header.strip()}")
    return False


def write_allowed(
    origin: str | None, host_header: str | None, local_port: int, allowed: Iterable[str], *, allow_remote: bool
) -> bool:
    """The rule for `/v1/*`: no Origin (not a browser), the collector itself, or an allowed origin."""
    if origin is None:
        return True
    if is_own_origin(origin, host_header, local_port, allow_remote=allow_remote):
        return True
    normalized = normalize_origin(origin)
    return normalized is not None and normalized in allowed


def admin_allowed(origin: str | None, host_header: str | None, local_port: int, *, allow_remote: bool) -> bool:
    """The rule for the admin API: no Origin (the CLI, a script) or the collector's own page."""
    return origin is None or is_own_origin(origin, host_header, local_port, allow_remote=allow_remote)


def parse_allowed_origins(values: Iterable[str]) -> frozenset[str]:
    """Operator-given origins, normalized; raises ValueError naming the first malformed one."""
    origins = set()
    for value in values:
        if not value.strip():
            continue
        normalized = normalize_origin(value)
        if normalized is None:
            raise ValueError(
                f"{value.strip()[:80]!r} is not a web origin; write it as scheme://host[:port], "
                "such as http://localhost:3000."
            )
        origins.add(normalized)
    return frozenset(origins)
