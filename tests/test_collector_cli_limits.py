"""The collector's limits as an operator sets them: flags, environment variables, and the
errors a typo gets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import requests

from quickbot_segment_plugin.cli import main

WRITE_KEY = "wk_test_cli_limits_V6n3"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("QUICKBOT_SEGMENT_COLLECTOR_MAX_STORED_EVENTS", "lots"),
        ("QUICKBOT_SEGMENT_COLLECTOR_MAX_STORED_EVENTS", "0"),
        ("QUICKBOT_SEGMENT_COLLECTOR_MAX_STORED_MB", "1GB"),
        ("QUICKBOT_SEGMENT_COLLECTOR_MAX_CONNECTIONS", "0"),
    ],
)
def test_a_malformed_limit_variable_is_named(
    variable: str, value: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["collector", "--port", "0"]) == 2
    assert variable in capsys.readouterr().err


def test_an_allowed_origin_that_is_not_an_origin_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["collector", "--port", "0", "--allow-origin", "localhost:3000"]) == 2
    error = capsys.readouterr().err
    assert "--allow-origin: 'localhost:3000' is not a web origin" in error
    assert "http://localhost:3000" in error  # how to write it
    monkeypatch.setenv("QUICKBOT_SEGMENT_COLLECTOR_ALLOWED_ORIGINS", "http://ok:1,ftp://x")
    assert main(["collector", "--port", "0"]) == 2
    assert "$QUICKBOT_SEGMENT_COLLECTOR_ALLOWED_ORIGINS: 'ftp://x'" in capsys.readouterr().err
    monkeypatch.delenv("QUICKBOT_SEGMENT_COLLECTOR_ALLOWED_ORIGINS")
    assert main(["collector", "--port", "0", "--max-stored-events", "0"]) == 2
    assert "--max-stored-events must be from 1" in capsys.readouterr().err


def test_flags_and_variables_set_the_caps_and_the_allowed_origins() -> None:
    environment = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "QUICKBOT_SEGMENT_COLLECTOR_ALLOWED_ORIGINS": "http://localhost:3000, http://localhost:5173",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "quickbot_segment_plugin.cli", "collector", "--port", "0", "--max-stored-events", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        url = banner.rsplit(" ", 1)[1].strip()
        for n in range(6):
            origin = "http://localhost:5173" if n % 2 else "http://localhost:3000"
            body = {"writeKey": WRITE_KEY, "userId": "u", "event": "E", "messageId": f"m-{n}"}
            answer = requests.post(url + "/v1/track", json=body, headers={"Origin": origin}, timeout=5)
            assert answer.status_code == 200
        refused = requests.post(url + "/v1/track", json=body, headers={"Origin": "http://localhost:8080"}, timeout=5)
        summary = requests.get(url + "/summary", timeout=5).json()
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)
    assert refused.status_code == 403
    assert summary["max_events"] == 3
    assert summary["total"] <= 3
    assert summary["dropped"] == 6 - summary["total"]
