"""Every workspace id finds its privacy policy and tracking plan file, and a configured directory
that cannot say which file applies refuses the event instead of sending it with the default."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from quickbot_segment_plugin.block import SegmentBlock
from quickbot_segment_plugin.collector.service import Collector
from quickbot_segment_plugin.core.file_checks import FileChecks
from quickbot_segment_plugin.core.workspace_files import MAX_STEM, file_stem, workspace_of

COMMAND = str(Path(sys.executable).with_name("quickbot-segment"))
EMAIL = "zoe.martin@example.com"
HASHED = hashlib.sha256(EMAIL.encode()).hexdigest()
AWKWARD_IDS = ["team:acme", "Acme Corp", "acme@corp", "ténant", "t" * 300, "../../etc/passwd", ".hidden", "50%"]

ids = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=80) | st.text(min_size=190, max_size=320)


@settings(deadline=None)  # a busy machine is not a failure
@given(ids)
@example(".")
@example("..")
@example(".hidden")
@example("a/../b")
@example("\ud800")
@example("é" * 70)
def test_file_stems_are_reversible_and_never_leave_the_directory(workspace_id: str) -> None:
    stem = file_stem(workspace_id)
    assert stem is not None
    assert "/" not in stem and "\\" not in stem and "\x00" not in stem
    assert not stem.startswith(".")  # never ".", "..", nor a hidden file
    assert len(stem) <= MAX_STEM and len((stem + ".privacy.json").encode()) <= 255
    decoded = workspace_of(stem)
    assert decoded == workspace_id or (decoded is None and stem.startswith("~"))


@settings(deadline=None)  # a busy machine is not a failure
@given(ids, ids)
def test_two_workspaces_never_share_a_file(first: str, second: str) -> None:
    if first != second:
        assert file_stem(first) != file_stem(second)


@settings(deadline=None)  # a busy machine is not a failure
@given(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,199}\Z"))
def test_ids_that_had_a_file_before_keep_its_name(workspace_id: str) -> None:
    assert file_stem(workspace_id) == workspace_id


def hash_email_policy(directory: Path, workspace_id: str) -> Path:
    stem = file_stem(workspace_id)
    assert stem is not None
    path = directory / f"{stem}.privacy.json"
    path.write_text(json.dumps({"hash": [{"path": "traits.email", "method": "sha256"}]}), encoding="utf-8")
    return path


def identify(block: SegmentBlock, workspace_id: str, token: str | None, **context: Any) -> dict[str, Any]:
    options = {"action": "identify", "userId": "u-1", "email": EMAIL}
    result: dict[str, Any] = block.execute(
        options, {"workspace_id": workspace_id, "credentials": token, "variables": {}, **context}
    )
    return result


@pytest.mark.parametrize("workspace_id", AWKWARD_IDS)
def test_a_policy_for_any_workspace_id_is_applied_on_the_wire(
    workspace_id: str, local_segment: Collector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "policies"
    directory.mkdir()
    hash_email_policy(directory, workspace_id)
    monkeypatch.setenv("QUICKBOT_SEGMENT_PRIVACY_DIR", str(directory))
    block = SegmentBlock()
    try:
        token = block.seal_credentials({"writeKey": "wk_workspace_files_0001"}, workspace_id=workspace_id)
        result = identify(block, workspace_id, token)
        assert result["status"] == "queued", result
        block.shutdown(10.0)
    finally:
        block.shutdown(5.0)
    assert local_segment.wait_for(1, timeout=10.0, distinct=False)
    [stored] = local_segment.messages()
    assert stored["traits"]["email"] == HASHED
    assert EMAIL not in json.dumps(local_segment.events())


def test_an_unusable_policy_file_or_directory_refuses_the_event_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "policies"
    directory.mkdir()
    broken = directory / "team%3Aacme.privacy.json"
    broken.write_text("{not json", encoding="utf-8")
    unreadable = directory / "acme%40corp.privacy.json"
    unreadable.mkdir()  # not a file: cannot be read
    monkeypatch.setenv("QUICKBOT_SEGMENT_PRIVACY_DIR", str(directory))
    block = SegmentBlock()
    try:
        for workspace_id, path in (("team:acme", broken), ("acme@corp", unreadable)):
            result = identify(block, workspace_id, None, dry_run=True)
            assert result["status"] == "failed", result
            assert str(path) in json.dumps(result["logs"])
        assert str(broken) in caplog.text
    finally:
        block.shutdown(5.0)
    monkeypatch.setenv("QUICKBOT_SEGMENT_PRIVACY_DIR", str(tmp_path / "policys"))  # a typo in the directory
    block = SegmentBlock()
    try:
        result = identify(block, "acme", None, dry_run=True)
        assert result["status"] == "failed"
        assert "policys does not exist" in json.dumps(result["logs"])
    finally:
        block.shutdown(5.0)


def test_a_tracking_plan_for_an_awkward_workspace_id_applies_and_a_broken_one_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "plans"
    directory.mkdir()
    demo = Path(__file__).resolve().parent.parent / "examples" / "tracking-plans" / "demo-workspace.json"
    (directory / "team%3Aacme.json").write_text(demo.read_text(encoding="utf-8"), encoding="utf-8")  # blocks unplanned
    (directory / "Acme%20Corp.json").write_text("{broken", encoding="utf-8")
    monkeypatch.setenv("QUICKBOT_SEGMENT_TRACKING_PLAN_DIR", str(directory))
    monkeypatch.setenv("QUICKBOT_SEGMENT_PRIVACY", "off")
    options = {"action": "track", "event": "Order Completed", "userId": "u-1"}
    block = SegmentBlock()
    try:
        for workspace_id, needle in (("team:acme", "not in the tracking plan"), ("Acme Corp", "Acme%20Corp.json")):
            result = block.execute(
                options, {"workspace_id": workspace_id, "credentials": None, "variables": {}, "dry_run": True}
            )
            assert result["status"] == "failed", result
            assert needle in json.dumps(result["logs"])
    finally:
        block.shutdown(5.0)


def cli(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMAND, *argv], capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **env}
    )


def test_privacy_check_and_validate_say_which_file_applies(tmp_path: Path) -> None:
    directory = tmp_path / "policies"
    directory.mkdir()
    path = hash_email_policy(directory, "team:acme")
    checked = cli("privacy", "check", "--workspace", "team:acme", "--json", QUICKBOT_SEGMENT_PRIVACY_DIR=str(directory))
    assert checked.returncode == 0, checked.stderr
    described = json.loads(checked.stdout)
    assert described["file"] == str(path)
    assert described["applies"] == f"{path} applies"
    assert [rule["path"] for rule in described["hash"]] == ["traits.email"]

    (directory / "Acme%20Corp.privacy.json").write_text("{", encoding="utf-8")
    refused = cli("privacy", "check", "--workspace", "Acme Corp", QUICKBOT_SEGMENT_PRIVACY_DIR=str(directory))
    assert refused.returncode == 2
    assert "Acme%20Corp.privacy.json" in refused.stderr and "refused" in refused.stderr

    flow = tmp_path / "flow.json"
    flow.write_text(
        json.dumps(
            {
                "workspace_id": "team:acme",
                "blocks": [{"id": "b1", "type": "segment", "options": {"action": "track", "event": "Signed Up"}}],
            }
        ),
        encoding="utf-8",
    )
    validated = cli("validate", str(flow), QUICKBOT_SEGMENT_PRIVACY_DIR=str(directory))
    assert f"privacy policy: {path} applies" in validated.stderr, validated.stderr
    assert "tracking plan: no tracking plan" in validated.stderr


# --- the recheck interval (core/file_checks.py) --------------------------------------------------


def test_file_checks_keep_each_answer_for_the_interval_then_look_again(tmp_path: Path) -> None:
    path = tmp_path / "ws.json"
    kept = FileChecks(60.0)
    with pytest.raises(FileNotFoundError):
        kept.stat(str(path))
    path.write_text("{}")
    with pytest.raises(FileNotFoundError):  # within the interval, the earlier answer stands
        kept.stat(str(path))
    assert FileChecks(0).stat(str(path)).st_size == 2  # 0: every call looks
    brief = FileChecks(0.01)
    size = brief.stat(str(path)).st_size
    path.write_text("{}   ")
    time.sleep(0.02)  # past the interval: `time.monotonic` never runs backwards
    assert (size, brief.stat(str(path)).st_size) == (2, 5)
    assert brief.is_dir(str(tmp_path)) and not brief.is_dir(str(path))


def test_what_is_concluded_from_the_files_is_kept_for_the_interval_then_worked_out_again() -> None:
    calls: list[str] = []

    def conclude(workspace: str) -> str:
        calls.append(workspace)
        return f"{workspace}:{len(calls)}"

    kept = FileChecks(60.0)
    assert [kept.concluded(conclude, "a"), kept.concluded(conclude, "a"), kept.concluded(conclude, "b")] == [
        "a:1",
        "a:1",
        "b:2",
    ]
    every = FileChecks(0)
    assert every.concluded(conclude, "a") != every.concluded(conclude, "a")  # 0: worked out each time
    brief = FileChecks(0.01)
    first = brief.concluded(conclude, "a")
    time.sleep(0.02)
    assert brief.concluded(conclude, "a") != first


def test_a_policy_edit_applies_after_the_recheck_interval_not_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "policies"
    directory.mkdir()
    policy = directory / "ws-recheck.privacy.json"
    policy.write_text(json.dumps({"deny_keys": ["birthday"]}))
    monkeypatch.setenv("QUICKBOT_SEGMENT_PRIVACY_DIR", str(directory))
    monkeypatch.setenv("QUICKBOT_SEGMENT_WORKSPACE_FILES_RECHECK_MS", "60000")
    block = SegmentBlock()
    options = {
        "action": "track",
        "event": "Signed Up",
        "userId": "u",
        "properties": [{"key": "birthday", "value": "1990-01-01"}, {"key": "city", "value": "Lyon"}],
    }

    def sent_properties() -> dict[str, Any]:
        result = block.execute(options, {"workspace_id": "ws-recheck", "variables": {}, "dry_run": True})
        assert result["status"] == "dry_run", result["logs"]
        return dict(result["payload"]["properties"])

    assert sent_properties() == {"city": "Lyon"}
    policy.write_text(json.dumps({"deny_keys": ["birthday", "city"]}))
    assert sent_properties() == {"city": "Lyon"}, "an edit within the interval waits for the next look"
    monkeypatch.setenv("QUICKBOT_SEGMENT_WORKSPACE_FILES_RECHECK_MS", "0")
    assert (
        SegmentBlock().execute(options, {"workspace_id": "ws-recheck", "variables": {}, "dry_run": True})["payload"][
            "properties"
        ]
        == {}
    )
