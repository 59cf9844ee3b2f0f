"""Shared fixtures: an isolated environment per test, so no test depends on the machine's
settings or on another test's keys, endpoints or clients."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

OPERATOR_VARIABLES = [name for name in os.environ if name.startswith("QUICKBOT_") and name != "QUICKBOT_TEST_INSTALLED"]


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in OPERATOR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield

