"""Where `quickbot-segment run` sends, and where its dead letters go, set up for one run.

- `--credentials TOKEN`: Segment (or `--endpoint` / QUICKBOT_SEGMENT_ENDPOINT), with that key.
- An endpoint on this machine (a `quickbot-segment collector` the user started): sent there
  with a throw-away local key, no key ceremony; the collector accepts any key.
- No endpoint: a temporary collector of the run's own, and the output says so.
- Another endpoint without credentials: refused, since a real server needs a real key.

Dead letters go to `--db`, else QUICKBOT_SEGMENT_DEAD_LETTER_PATH, else a scratch file that
is removed after the run unless something was dead-lettered into it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import ENDPOINT_ENV, ConfigurationError, EndpointSettings, parse_endpoint
from ..credentials import ENCRYPTION_KEYS_ENV, generate_key
from ..deadletters import PATH_ENV as DEAD_LETTER_PATH_ENV
from ..deadletters import DeadLetterSettings

LOCAL_WRITE_KEY = "localDemoWriteKey0123456789"


@dataclass
class RunTarget:
    where: str  # "the collector at http://127.0.0.1:8787", for the report
    local_key: bool  # seal LOCAL_WRITE_KEY: the endpoint is a collector on this machine
    collector: Any  # the run's own temporary Collector, or None
    dead_letter_path: Path
    scratch_dead_letters: bool
    notes: list[str]


@contextlib.contextmanager
def run_target(*, endpoint: str | None, credentials: str | None, db: str | None) -> Iterator[RunTarget]:
    """Set the environment the block reads (endpoint, key ring, dead-letter path); restored afterwards."""
    saved = {name: os.environ.get(name) for name in (ENDPOINT_ENV, ENCRYPTION_KEYS_ENV, DEAD_LETTER_PATH_ENV)}
    scratch_dir: str | None = None
    try:
        with _endpoint(endpoint, credentials) as (where, local_key, collector, notes):
            if local_key and not os.environ.get(ENCRYPTION_KEYS_ENV):
                # A throw-away key: the token it seals lives only as long as this run.
                os.environ[ENCRYPTION_KEYS_ENV] = generate_key()
            chosen = db or DeadLetterSettings.from_env().dead_letter_path
            if chosen:
                path = Path(chosen).expanduser()
            else:
                scratch_dir = tempfile.mkdtemp(prefix="quickbot-segment-run-")
                path = Path(scratch_dir) / "dead-letters.sqlite3"
            os.environ[DEAD_LETTER_PATH_ENV] = str(path)
            yield RunTarget(where, local_key, collector, path, scratch_dir is not None, notes)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if scratch_dir is not None and not _has_rows(Path(scratch_dir) / "dead-letters.sqlite3"):
            shutil.rmtree(scratch_dir, ignore_errors=True)


@contextlib.contextmanager
def _endpoint(endpoint: str | None, credentials: str | None) -> Iterator[tuple[str, bool, Any, list[str]]]:
    source = "--endpoint" if endpoint else ENDPOINT_ENV
    raw = endpoint or EndpointSettings.from_env().endpoint
    notes: list[str] = []
    parsed = parse_endpoint(raw, source) if raw else None
    if parsed is not None:
        os.environ[ENDPOINT_ENV] = parsed.url
        if parsed.removed_suffix:
            notes.append(
                f"{source} ends in {parsed.removed_suffix}; sending to {parsed.url} (the plugin adds /v1/batch)."
            )
    if credentials:
        yield (parsed.url if parsed else "Segment (the region sealed in the credentials)"), False, None, notes
        return
    if parsed is not None:
        if not parsed.is_loopback:
            raise ConfigurationError(
                f"{source} is {parsed.url}, which is not on this machine, and no --credentials were given. "
                "A local collector accepts any key, but another server needs a real write key: seal one with "
                "`quickbot-segment credentials seal` and pass --credentials TOKEN, or point "
                f"{source} at a collector on 127.0.0.1.",
                field=source,
            )
        yield f"the collector at {parsed.url}", True, None, notes
        return
    # Imported here: `--credentials` runs need no collector.
    from ..collector import Collector

    with Collector() as collector:
        os.environ[ENDPOINT_ENV] = collector.url
        notes.append(
            f"No endpoint given ({ENDPOINT_ENV} or --endpoint): using a temporary collector at {collector.url}, "
            "gone when this run ends. To watch events in the debugger, start `quickbot-segment collector` "
            f"and run with {ENDPOINT_ENV}=<its URL>."
        )
        yield f"a temporary collector at {collector.url}", True, collector, notes


def _has_rows(path: Path) -> bool:
    """Whether the scratch store holds dead letters (then it is kept and its path printed)."""
    if not path.exists():
        return False
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
            row = connection.execute("SELECT COUNT(*) FROM dead_letters").fetchone()
    except sqlite3.Error:
        return True  # unreadable: keep it rather than delete what may be events
    return bool(row and row[0])
