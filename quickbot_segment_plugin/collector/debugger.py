"""The collector's debugger page: the files it is made of, and the rules it is served under.

Offline, or before a workspace has a write key, the collector is the bot builder's Segment
debugger. The page (`debugger/index.html`, `.js`, `.css`, shipped inside the package so
it works with no internet) reads the collector's own read API; it never sees a write key.

It shows whatever bots sent, so it is served under rules that hold whatever that is:
- a Content-Security-Policy that allows only the page's own files (no inline script, no
  other origin), so even a mistake that put event data into markup could not run it;
- `nosniff` (on every collector response), so a stored value can never be read as script
  or style;
- a Host check: on a collector that listens on loopback only, a request whose Host is not
  a loopback name is refused. Without it a web page could rebind its own domain name to
  127.0.0.1 and read every stored event through the visitor's browser.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

from .http import Reply, error_reply, is_loopback

ASSET_PREFIX = "/debugger/"
_CONTENT_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "debugger.js": "text/javascript; charset=utf-8",
    "debugger.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# X-Content-Type-Options: nosniff goes on every collector response (collector_http.render).
SECURITY_HEADERS = [
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
]


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


@functools.lru_cache(maxsize=1)
def assets() -> dict[str, Asset]:
    """The page's files, read once from the installed package (a missing one fails loudly)."""
    folder = resources.files("quickbot_segment_plugin") / "debugger"
    return {name: Asset(folder.joinpath(name).read_bytes(), kind) for name, kind in _CONTENT_TYPES.items()}


def wants_page(accept: str | None) -> bool:
    """Whether `GET /` comes from a browser (which asks for HTML) rather than a script.

    Scripts, `curl` and "test connection" checks keep getting the JSON description of the
    server they always got.
    """
    return accept is not None and "text/html" in accept.lower()


def page_reply() -> Reply:
    return asset_reply("index.html", vary_accept=True)


def asset_reply(name: str, *, vary_accept: bool = False) -> Reply:
    """One of the page's files, or 404 for any other name (no path is ever opened from a URL)."""
    asset = assets().get(name)
    if asset is None:
        return error_reply(404, "not_found", "no such debugger file.", headers=list(SECURITY_HEADERS))
    headers = list(SECURITY_HEADERS)
    if vary_accept:
        headers.append(("Vary", "Accept"))
    return Reply(200, asset.body, content_type=asset.content_type, headers=headers)


def host_allowed(host_header: str | None, allow_remote: bool) -> bool:
    """Whether a request to the debugger or the read API names this machine as its host.

    Browsers always send Host; a rebinding attack sends the attacker's own domain name,
    which resolves to 127.0.0.1 but is not a loopback name. A collector started with
    `allow_remote` is reachable under any name, by the operator's choice.
    """
    if allow_remote:
        return True
    if host_header is None:
        return True  # not a browser: HTTP/1.0 tools, raw sockets
    host = host_header.strip()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return is_loopback(host)


def misdirected_reply() -> Reply:
    return error_reply(
        403,
        "forbidden_host",
        "the debugger and the read API answer requests to a loopback address (127.0.0.1, ::1 or "
        "localhost) only; start the collector with --allow-remote to serve other names.",
        headers=list(SECURITY_HEADERS),
    )
