"""`quickbot-segment credentials check` against servers that send the write key back, in every
encoding a proxy, a wrong host or a captive portal might use: the key is never printed."""

from __future__ import annotations

import base64
import binascii
import html
import json
import os
import re
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, unquote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quickbot_segment_plugin.core.redaction_forms import server_text
from quickbot_segment_plugin.credentials.keyring import ENCRYPTION_KEYS_ENV, WRITE_KEY_CHARS, KeyRing, generate_key

COMMAND = str(Path(sys.executable).with_name("quickbot-segment"))
WRITE_KEY = "echoTestKey/4Hq+Zr9Lm=Xv8Wb:Nc5T"  # the characters a write key may hold that URLs encode

ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda key: key,
    "percent": lambda key: urllib.parse.quote(key, safe=""),
    "percent-lower": lambda key: re.sub(
        r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), urllib.parse.quote(key, safe="")
    ),
    "plus": urllib.parse.quote_plus,
    "every-byte": lambda key: "".join(f"%{byte:02X}" for byte in key.encode()),
    "double-percent": lambda key: urllib.parse.quote(urllib.parse.quote(key, safe=""), safe=""),
    "base64-colon": lambda key: base64.b64encode(f"{key}:".encode()).decode(),
    "base64": lambda key: base64.b64encode(key.encode()).decode(),
    "base64-unpadded": lambda key: base64.b64encode(key.encode()).decode().rstrip("="),
    "urlsafe-base64": lambda key: base64.urlsafe_b64encode(key.encode()).decode(),
    "urlsafe-base64-colon": lambda key: base64.urlsafe_b64encode(f"{key}:".encode()).decode().rstrip("="),
    "base64-after-user": lambda key: base64.b64encode(f"user:{key}".encode()).decode(),
    "base64-after-u": lambda key: base64.b64encode(f"u{key}!".encode()).decode(),
    "json": lambda key: json.dumps(key)[1:-1],
    "html": lambda key: "".join(f"&#{ord(character)};" for character in key),
}


def readable(output: str, key: str) -> bool:
    """Whether `key` can be read back from `output`, decoded every way the encodings above use."""
    texts = {output}
    for _ in range(3):
        texts |= {decoded for text in texts for decoded in (unquote(text), unquote_plus(text), html.unescape(text))}
    if any(key in text for text in texts):
        return True
    for run in re.findall(r"[A-Za-z0-9+/_-]{8,}", output):
        for start in range(4):
            piece = run[start:].translate(str.maketrans("-_", "+/"))
            if len(piece) % 4 == 1:
                piece = piece[:-1]
            try:
                if key.encode() in base64.b64decode(piece + "=" * (-len(piece) % 4)):
                    return True
            except (binascii.Error, ValueError):
                continue
    return False


class Echo(BaseHTTPRequestHandler):
    """Answers every POST with the write key of its body: in the body, the reason and a Location."""

    encoding = "raw"
    status = 302

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        key = json.loads(self.rfile.read(length))["writeKey"]
        encoded = ENCODINGS[self.encoding](key)
        body = f"unknown key {encoded}; Authorization was {self.headers.get('Authorization')}".encode()
        self.send_response(self.status, f"Moved {encoded}")
        self.send_header("Location", f"https://login.example/?writeKey={encoded}&next=%2Fv1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@contextmanager
def echo_server(encoding: str, status: int) -> Iterator[str]:
    handler = type("EchoNow", (Echo,), {"encoding": encoding, "status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize(
    ("encoding", "status"),
    [(encoding, 302) for encoding in sorted(ENCODINGS)]
    + [(encoding, 401) for encoding in ("raw", "base64", "percent")],
)
def test_check_never_prints_the_key_the_server_sends_back(encoding: str, status: int) -> None:
    encryption_key = generate_key()
    token = KeyRing.from_env({ENCRYPTION_KEYS_ENV: encryption_key}).seal({"writeKey": WRITE_KEY}, "w")
    environment = {name: value for name, value in os.environ.items() if not name.lower().endswith("_proxy")} | {
        ENCRYPTION_KEYS_ENV: encryption_key
    }
    with echo_server(encoding, status) as url:
        result = subprocess.run(
            [COMMAND, "credentials", "check", token, "--workspace", "w"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**environment, "QUICKBOT_SEGMENT_ENDPOINT": url},
        )
    assert result.returncode == 1
    printed = result.stdout + result.stderr
    assert f"HTTP {status}" in printed
    if status == 302 and encoding != "html":  # HTML entities in a Location: the whole text is withheld
        assert "the endpoint redirects to https://login.example/" in printed  # the target is still named
    assert not readable(printed, WRITE_KEY), printed


keys = st.from_regex(rf"\A{WRITE_KEY_CHARS}{{12,64}}\Z")


@settings(deadline=None)  # a busy machine is not a failure
@given(key=keys, encoding=st.sampled_from(sorted(ENCODINGS)), before=st.text(max_size=12), after=st.text(max_size=12))
def test_server_text_removes_the_key_in_every_encoding(key: str, encoding: str, before: str, after: str) -> None:
    shown = server_text(before + ENCODINGS[encoding](key) + after, key, limit=10_000)
    assert not readable(shown, key)
    assert shown.isprintable()


@settings(deadline=None)  # a busy machine is not a failure
@given(key=keys, text=st.text(alphabet=st.characters(codec="ascii", categories=("L", "N", "P", "Zs")), max_size=80))
def test_server_text_keeps_text_without_the_key(key: str, text: str) -> None:
    if not readable(text, key):
        assert server_text(text, key, limit=10_000) == " ".join(text.split())
