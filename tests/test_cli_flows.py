"""The main job from the command line: `quickbot-segment run` and `validate` on flow files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from quickbot_segment_plugin.cli import main

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_run_sends_every_action_of_the_sample_flow_to_the_local_collector(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "run", str(EXAMPLES / "onboarding-flow.json"), "--json")
    assert status == 0
    report = json.loads(out)
    statuses = {result["block"]: result["status"] for result in report["results"]}
    assert statuses == {
        "link-anonymous-session": "queued",
        "identify-user": "queued",
        "join-company": "queued",
        "view-pricing": "queued",
        "open-checkout-screen": "queued",
        "qualified-lead": "queued",
        "unqualified-lead": "skipped",
    }
    received = {message["type"]: message for message in report["received"]}
    assert set(received) == {"alias", "identify", "group", "page", "screen", "track"}
    identify = received["identify"]
    assert identify["traits"] == {
        "firstName": "Zoë",
        "age": 34,
        "plan": "PREMIUM",
        "address": {"city": "Lyon"},
        "interests": ["pricing", "api"],
        "newsletter": True,
        "email": "zoe@example.com",
    }
    assert identify["context"]["locale"] == "fr-FR"
    assert identify["context"]["quickbot"]["blockId"] == "identify-user"
    assert received["track"]["event"] == "Lead Qualified"
    assert received["track"]["properties"] == {"score": 8, "plan": "premium", "source": "chatbot"}
    assert received["track"]["integrations"] == {"All": True, "Mixpanel": False}
    by_block = {result["block"]: result for result in report["results"]}
    assert {message["messageId"] for message in report["received"]} == {
        result["message_id"] for result in by_block.values() if result["status"] == "queued"
    }


def test_run_prints_a_readable_report(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "run", str(EXAMPLES / "onboarding-flow.json"), "--var", "Score=2")
    assert status == 0
    assert "== block qualified-lead: skipped" in out
    assert "== block unqualified-lead: delivered" in out
    assert "Delivered 6 of 6 event(s) to a temporary collector at http://127.0.0.1:" in out
    assert "The temporary collector received 6 event(s):" in out


def test_run_accepts_typebot_style_flows(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "run", str(EXAMPLES / "typebot-style-flow.json"), "--json")
    assert status == 0
    report = json.loads(out)
    assert [message["type"] for message in report["received"]] == ["identify", "track", "page"]
    assert report["received"][1]["event"] == "Plan Viewed"
    assert report["received"][2]["properties"] == {"category": "Docs"}


def test_dry_run_sends_nothing_and_needs_no_key(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "run", str(EXAMPLES / "onboarding-flow.json"), "--dry-run", "--json")
    assert status == 0
    report = json.loads(out)
    assert report["received"] is None
    assert {result["status"] for result in report["results"]} == {"dry_run", "skipped"}


def test_a_failing_block_makes_run_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    flow = _flow(tmp_path, [{"action": "track", "event": "E", "userId": "{{Nobody}}"}])
    status, out, _ = run_cli(capsys, "run", str(flow))
    assert status == 1
    assert "User ID is empty because the variable 'Nobody' is not set" in out


@pytest.mark.parametrize("example", sorted(path.name for path in EXAMPLES.glob("*.json")))
def test_every_shipped_example_is_valid(capsys: pytest.CaptureFixture[str], example: str) -> None:
    status, _, err = run_cli(capsys, "validate", str(EXAMPLES / example))
    assert status == 0
    assert "Segment block(s) valid" in err


def test_validate_reports_block_id_and_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    flow = _flow(
        tmp_path,
        [
            {"action": "track", "userId": "u"},
            {"action": "identify", "userId": "u", "email": "e@x.io", "traits": [{"key": "", "value": "1"}]},
            {"action": "page", "name": "P", "userId": "u"},
        ],
    )
    status, out, err = run_cli(capsys, "validate", str(flow))
    assert status == 1
    assert out.splitlines() == [
        f"{flow}: block b0/event: Event Name is required.",
        f"{flow}: block b1/traits/0/key: Key of trait 1 cannot be empty.",
    ]
    assert "1 of 3 Segment block(s) valid." in err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON (line 1, column 2"),
        ('{"workspace_id": "w"}', "'blocks' is missing; it is required"),
    ],
)
def test_a_broken_flow_file_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "flow.json"
    path.write_text(content)
    status, _, err = run_cli(capsys, "validate", str(path))
    assert status == 2
    assert expected in err
    assert "Traceback" not in err


def test_the_console_script_is_installed() -> None:
    completed = subprocess.run(
        [str(Path(sys.executable).with_name("quickbot-segment")), "plugins"], capture_output=True, text=True, check=True
    )
    assert "segment" in completed.stdout
    assert "quickbot_block_types, quickbot_shutdown" in completed.stdout


def test_schema_command_prints_the_committed_schema(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "schema")
    assert status == 0
    committed = (Path(__file__).resolve().parent.parent / "block_schemas" / "segment.schema.json").read_text()
    assert out == committed


def _flow(tmp_path: Path, options: list[dict[str, Any]]) -> Path:
    path = tmp_path / "flow.json"
    blocks = [{"id": f"b{index}", "type": "segment", "options": value} for index, value in enumerate(options)]
    path.write_text(json.dumps({"workspace_id": "w", "blocks": blocks}))
    return path
