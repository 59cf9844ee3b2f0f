"""Shared fixtures: an isolated environment per test, so no test depends on the machine's
settings or on another test's keys, endpoints or clients."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import WORKSPACE, WRITE_KEY

# QUICKBOT_TEST_* configure the test run itself (the installed wheel, the PostgreSQL server), not the plugin.
OPERATOR_VARIABLES = [
    name for name in os.environ if name.startswith("QUICKBOT_") and not name.startswith("QUICKBOT_TEST_")
]


@pytest.fixture(autouse=True)
def forgets_the_secrets_it_opened() -> Iterator[None]:
    """Keys a test opened (hypothesis invents many, some as plain as "variable") are scrubbed from
    every later log line of the process; a later test must not find its text redacted by them."""
    from quickbot_segment_plugin.core.redaction import known_secrets

    before = set(known_secrets._names)
    yield
    for secret in set(known_secrets._names) - before:
        known_secrets.discard(secret)


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in OPERATOR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # Never the developer's own dead-letter store.
    monkeypatch.setenv("QUICKBOT_SEGMENT_DEAD_LETTER_PATH", str(tmp_path / "dead-letters.sqlite3"))
    # Tests edit policy and plan files and look at the very next event; the recheck interval
    # has its own tests (test_workspace_files.py).
    monkeypatch.setenv("QUICKBOT_SEGMENT_WORKSPACE_FILES_RECHECK_MS", "0")
    yield
    # The process-wide block (what a host gets from the hooks) keeps its key ring and clients;
    # a test that used it must not hand them, built from its own environment, to the next test.
    from quickbot_segment_plugin import block

    used, block._current = block._current, None
    if used is not None:
        used.shutdown(5.0)


@pytest.fixture
def encryption_key(monkeypatch: pytest.MonkeyPatch) -> str:
    from quickbot_segment_plugin.credentials.keyring import ENCRYPTION_KEYS_ENV, generate_key

    key = generate_key()
    monkeypatch.setenv(ENCRYPTION_KEYS_ENV, key)
    return key


@pytest.fixture
def collector() -> Iterator[Any]:
    from quickbot_segment_plugin.collector.service import Collector

    with Collector() as running:
        yield running


@pytest.fixture
def local_segment(collector: Any, encryption_key: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Delivery pointed at the embedded collector, with a short flush interval for quick tests."""
    monkeypatch.setenv("QUICKBOT_SEGMENT_ENDPOINT", collector.url)
    monkeypatch.setenv("QUICKBOT_SEGMENT_FLUSH_INTERVAL", "0.05")
    monkeypatch.setenv("QUICKBOT_SEGMENT_MAX_RETRIES", "2")
    return collector


@pytest.fixture
def block(local_segment: Any) -> Iterator[Any]:
    from quickbot_segment_plugin.block import SegmentBlock

    fresh = SegmentBlock()
    yield fresh
    fresh.shutdown(5.0)


@pytest.fixture
def token(block: Any) -> str:
    sealed: str = block.seal_credentials({"writeKey": WRITE_KEY, "region": "us"}, workspace_id=WORKSPACE)
    return sealed


# --- the dead-letter store's backends -------------------------------------------------------

POSTGRES_URL_ENV = "QUICKBOT_TEST_POSTGRES_URL"  # set by `.ci/postgres.sh start` (.ci/run calls it)


def postgres_admin_url() -> str | None:
    """The test server's URL, or None (a skip); in CI (CI=true) its absence fails the test."""
    url = os.environ.get(POSTGRES_URL_ENV, "").strip()
    if url:
        return url
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{POSTGRES_URL_ENV} is not set in CI: .ci/run starts PostgreSQL with .ci/postgres.sh")
    return None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty database on the test server, dropped afterwards (so migrations start from nothing)."""
    admin = postgres_admin_url()
    if admin is None:
        pytest.skip(f'no PostgreSQL: set {POSTGRES_URL_ENV} (eval "$(.ci/postgres.sh start)")')
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = f"qb_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin)
    yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a dead-letter store lives, once per backend: an SQLite file, then a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite3")
    url: str = request.getfixturevalue("postgres_url")
    return url
