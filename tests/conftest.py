"""Shared fixtures: an isolated environment per test, so no test depends on the machine's
settings or on another test's keys, endpoints or clients."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import WORKSPACE, WRITE_KEY

OPERATOR_VARIABLES = [name for name in os.environ if name.startswith("QUICKBOT_") and name != "QUICKBOT_TEST_INSTALLED"]


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in OPERATOR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # Never the developer's own dead-letter store.
    monkeypatch.setenv("QUICKBOT_SEGMENT_DEAD_LETTER_PATH", str(tmp_path / "dead-letters.sqlite3"))
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
