"""The tests exercise what operators install: the wheel, not the source tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import quickbot_segment_plugin


def test_tests_run_against_the_installed_package() -> None:
    """CI sets QUICKBOT_TEST_INSTALLED=1: the package under test must come from the wheel."""
    if os.environ.get("QUICKBOT_TEST_INSTALLED") != "1":
        pytest.skip("not a CI run (QUICKBOT_TEST_INSTALLED unset)")
    package_dir = Path(quickbot_segment_plugin.__file__).resolve().parent
    assert "site-packages" in package_dir.parts
    assert (package_dir / "block_schemas" / "segment.schema.json").is_file()
