"""The file name stem of a workspace's policy and plan files, for any workspace id.

A workspace id comes from the host (`team:acme`, `Acme Corp`, `acme@corp`, `ténant`, ...);
a per-workspace file must exist for every one of them, or a policy an operator wrote would
be silently skipped and the event sent with the default. The encoding:

- `A-Z a-z 0-9 _ -` and `.` are kept as they are, except a leading `.` (no hidden files,
  never `.` or `..`);
- every other character is percent-encoded as its UTF-8 bytes, `%XX` with upper-case hex
  (so `team:acme` -> `team%3Aacme`, `Acme Corp` -> `Acme%20Corp`, `ténant` -> `t%C3%A9nant`,
  `%` itself -> `%25`);
- when that is longer than `MAX_STEM` characters (file names are limited to 255 bytes), the
  stem is `~` followed by the SHA-256 of the id's UTF-8 bytes in hex: `~` never appears in an
  encoded stem (it would be `%7E`), so the two forms cannot collide.

The percent form is reversible (`workspace_of`) and names every id that was usable before
(`[A-Za-z0-9][A-Za-z0-9._-]*` up to 200 characters) exactly as before. The empty id has no
file. Names differ only in case for ids that differ only in case: on a case-insensitive file
system (macOS by default) such workspaces would share a file.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Final

MAX_STEM: Final = 200
HASHED_PREFIX: Final = "~"
_KEPT: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")
_PERCENT: Final = re.compile(r"%([0-9A-F]{2})")


@functools.lru_cache(maxsize=4096)  # looked up for every event: a dict read instead of a loop
def file_stem(workspace_id: str) -> str | None:
    """The stem of the workspace's files (`<stem>.json`, `<stem>.privacy.json`); None for the empty id."""
    if not workspace_id:
        return None
    parts: list[str] = []
    for position, character in enumerate(workspace_id):
        if character in _KEPT and not (position == 0 and character == "."):
            parts.append(character)
        else:
            # surrogatepass: a lone surrogate (from a JSON "\ud800" escape) still gets a file of its own.
            parts.extend(f"%{byte:02X}" for byte in character.encode("utf-8", "surrogatepass"))
    stem = "".join(parts)
    if len(stem) > MAX_STEM:
        digest = hashlib.sha256(workspace_id.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{HASHED_PREFIX}{digest}"
    return stem


def workspace_of(stem: str) -> str | None:
    """The workspace id a percent-form stem names; None for a hashed stem or a name `file_stem` never makes."""
    if stem.startswith(HASHED_PREFIX):
        return None
    try:
        raw = bytearray()
        position = 0
        while position < len(stem):
            if stem[position] == "%":
                match = _PERCENT.match(stem, position)
                if match is None:
                    return None
                raw.append(int(match.group(1), 16))
                position = match.end()
            else:
                raw.extend(stem[position].encode("ascii"))
                position += 1
        workspace_id = raw.decode("utf-8", "surrogatepass")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None
    return workspace_id if file_stem(workspace_id) == stem else None
