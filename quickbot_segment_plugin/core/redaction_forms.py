"""Removing one known secret from text a server wrote, in whatever encoding it came back.

`credentials check` sends the write key to an endpoint an operator typed; whatever answers
(a proxy, a wrong host, a captive portal) may echo it: raw in a body, percent-encoded in a
redirect's `Location` (`?writeKey=...`), base64 in an echoed `Authorization` header (with or
without the `:` Basic auth adds, standard or url-safe alphabet, with or without padding, at
any byte offset inside a longer base64 text). `server_text` takes every such form out, makes
the text one printable line, and withholds it whole if the key can still be read after
percent-, plus- or HTML-decoding it.
"""

from __future__ import annotations

import base64
import html
import json
import urllib.parse
from typing import Final

REDACTED: Final = "[redacted]"
WITHHELD: Final = "[the server's text is withheld: it contained the write key]"
#: Encoded fragments shorter than this are not replaced: they would match ordinary text.
MIN_FORM_CHARS: Final = 8


def encoded_forms(secret: str) -> list[str]:
    """Every text form of `secret` worth looking for, longest first."""
    raw = secret.encode("utf-8")
    forms = {secret, json.dumps(secret)[1:-1]}
    for quoted in (urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret), _every_byte_quoted(raw)):
        twice = urllib.parse.quote(quoted, safe="")  # a URL carried inside another URL's query
        forms.update({quoted, _lower_hex(quoted), twice, _lower_hex(twice)})
    for data in (raw, raw + b":"):
        for text in (base64.b64encode(data).decode("ascii"), base64.urlsafe_b64encode(data).decode("ascii")):
            forms.update({text, text.rstrip("="), urllib.parse.quote(text, safe="")})
    # Inside a longer base64 text the key starts at one of three byte offsets; the groups made
    # only of key bytes read the same whatever surrounds them.
    for offset in range(3):
        padded = b"\x00" * offset + raw
        whole_groups = len(padded) // 3 * 4
        text = base64.b64encode(padded).decode("ascii")[4 if offset else 0 : whole_groups]
        forms.update({text, text.translate(str.maketrans("+/", "-_"))})
    return sorted((form for form in forms if len(form) >= MIN_FORM_CHARS), key=len, reverse=True)


def remove_secret(text: str, secret: str) -> str:
    """`text` with every form of `secret` replaced by `REDACTED`."""
    for form in encoded_forms(secret):
        text = text.replace(form, REDACTED)
    return text


def still_readable(text: str, secret: str) -> bool:
    """Whether `secret` (or a form of it) can still be read from `text` once it is decoded."""
    forms = encoded_forms(secret)
    candidates = {text}
    for _ in range(3):  # double encodings (%2541) too
        candidates |= {decoded for item in candidates for decoded in _decodings(item)}
    return any(form in candidate for candidate in candidates for form in forms)


def server_text(text: str, secret: str, limit: int = 200) -> str:
    """What a server sent, safe to print: one line of printable characters, without the key in
    any form, cut to `limit` characters (after redacting, so no key is cut in half)."""
    printable = "".join(character if character.isprintable() else " " for character in text)
    line = " ".join(remove_secret(printable, secret).split())
    if still_readable(line, secret):
        return WITHHELD
    return line if len(line) <= limit else line[:limit] + "..."


def _decodings(text: str) -> set[str]:
    return {urllib.parse.unquote(text), urllib.parse.unquote_plus(text), html.unescape(text)}


def _every_byte_quoted(raw: bytes) -> str:
    return "".join(f"%{byte:02X}" for byte in raw)


def _lower_hex(quoted: str) -> str:
    parts = quoted.split("%")
    return parts[0] + "".join("%" + part[:2].lower() + part[2:] for part in parts[1:])
