"""The small traps a newcomer met on the command line, each through the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from quickbot_segment_plugin.collector.service import Collector
from quickbot_segment_plugin.credentials.keyring import ENCRYPTION_KEYS_ENV, KeyRing, generate_key

CLI = str(Path(sys.executable).with_name("quickbot-segment"))


def cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, env=env or dict(os.environ), input=stdin, timeout=60
    )


def _batch(url: str, messages: list[dict[str, Any]]) -> None:
    import urllib.request

    body = json.dumps({"batch": messages, "writeKey": "k"}).encode()
    request = urllib.request.Request(f"{url}/v1/batch", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@pytest.fixture
def filled_collector() -> Any:
    with Collector() as collector:
        _batch(
            collector.url,
            [
                {"type": "track", "event": "Lead Qualified", "userId": "u", "messageId": f"track-{uuid.uuid4()}"},
                {"type": "page", "name": "Pricing", "userId": "u", "messageId": f"page-{uuid.uuid4()}-long-id"},
                {"type": "screen", "name": "Checkout", "userId": "u", "messageId": "screen-1"},
            ],
        )
        yield collector


def test_events_type_is_read_without_case(filled_collector: Any) -> None:
    completed = cli("events", "--url", filled_collector.url, "--type", "Track", "--json")
    assert completed.returncode == 0, completed.stderr
    assert [event["type"] for event in json.loads(completed.stdout)] == ["track"]


def test_an_unknown_events_type_is_refused_with_the_valid_list(filled_collector: Any) -> None:
    completed = cli("events", "--url", filled_collector.url, "--type", "bogus")
    assert completed.returncode == 2
    assert "'bogus' is not a Segment call type; use one of identify, track, page, screen, group, alias" in (
        completed.stderr
    )


@pytest.mark.parametrize(("name", "kind"), [("Pricing", "page"), ("Checkout", "screen"), ("Lead Qualified", "track")])
def test_events_event_matches_page_and_screen_names(filled_collector: Any, name: str, kind: str) -> None:
    completed = cli("events", "--url", filled_collector.url, "--event", name, "--json")
    assert completed.returncode == 0, completed.stderr
    assert [event["type"] for event in json.loads(completed.stdout)] == [kind]


def test_message_ids_in_the_table_are_whole_and_paste_into_message_id(filled_collector: Any) -> None:
    table = cli("events", "--url", filled_collector.url)
    assert table.returncode == 0, table.stderr
    stored = [event["message_id"] for event in filled_collector.events()]
    for message_id in stored:
        assert message_id in table.stdout
        again = cli("events", "--url", filled_collector.url, "--message-id", message_id, "--json")
        assert [event["message_id"] for event in json.loads(again.stdout)] == [message_id]


def _flow(tmp_path: Path, variables: dict[str, Any], options: dict[str, Any]) -> Path:
    path = tmp_path / "flow.json"
    path.write_text(
        json.dumps(
            {
                "workspace_id": "w",
                "variables": variables,
                "blocks": [{"id": "b", "type": "segment", "options": options}],
            }
        )
    )
    return path


def test_validate_notices_a_variable_written_with_other_casing(tmp_path: Path) -> None:
    path = _flow(tmp_path, {"Customer ID": "c-1"}, {"action": "identify", "userId": "{{Customer Id}}"})
    completed = cli("validate", str(path))
    assert "{{Customer Id}} is not a variable of this flow; did you mean {{Customer ID}}?" in completed.stdout
    assert "[variable_name_case]" in completed.stdout


def test_a_condition_comparing_text_with_a_number_is_a_sentence_naming_field_and_variable(tmp_path: Path) -> None:
    path = _flow(
        tmp_path,
        {"Score": "8"},
        {"action": "track", "event": "Lead Qualified", "userId": "u", "condition": "{{ Score > 5 }}"},
    )
    completed = cli("run", str(path), "--dry-run")
    assert completed.returncode == 1
    assert (
        "Condition compares text with a number using '>': the variable 'Score' holds the text '8'. "
        "Turn it into a number first with | float, for example {{ Score | float > 5 }}."
    ) in completed.stdout
    assert "not supported between instances" not in completed.stdout


def test_flow_files_and_var_take_json_objects_and_lists(tmp_path: Path) -> None:
    path = _flow(
        tmp_path,
        {"utm": {"source": "ads"}, "Interests": ["api", "pricing"]},
        {
            "action": "track",
            "event": "Lead Qualified",
            "userId": "u",
            "properties": [
                {"key": "source", "value": "{{ utm.source }}"},
                {"key": "interests", "value": "{{ Interests }}"},
                {"key": "campaign", "value": "{{ campaign.name }}"},
            ],
        },
    )
    completed = cli("run", str(path), "--dry-run", "--json", "--var", 'campaign={"name": "spring"}')
    assert completed.returncode == 0, completed.stdout + completed.stderr
    payload = json.loads(completed.stdout)["results"][0]["payload"]
    assert payload["properties"] == {"source": "ads", "interests": ["api", "pricing"], "campaign": "spring"}


def test_every_flow_file_problem_is_listed_in_plain_words(tmp_path: Path) -> None:
    path = tmp_path / "flow.json"
    path.write_text(
        json.dumps(
            {"workspace_id": "", "colour": 1, "blocks": [{"id": "a", "type": 3}, {"type": "segment", "options": []}]}
        )
    )
    completed = cli("validate", str(path))
    assert completed.returncode == 2
    assert f"{path}: 5 problem(s) in the flow file:" in completed.stderr
    for line in (
        "  - 'workspace_id' is empty; it must not be",
        "  - 'blocks[0].type' must be text, not the number 3",
        "  - 'blocks[1].id' is missing; it is required",
        "  - 'blocks[1].options' must be an object, not a list",
        "  - 'colour' is not a flow file key (known: version, workspace_id, bot_id, variables, blocks)",
    ):
        assert line in completed.stderr
    assert "Field required" not in completed.stderr and "Input should be" not in completed.stderr


def test_keygen_tells_a_first_time_user_what_to_set() -> None:
    env = {name: value for name, value in os.environ.items() if name != ENCRYPTION_KEYS_ENV}
    completed = cli("keygen", env=env)
    assert completed.returncode == 0
    assert f"Set {ENCRYPTION_KEYS_ENV} to it in QuickBot's environment" in completed.stderr
    assert "Prepend" not in completed.stderr and "prepend" not in completed.stderr


def test_keygen_with_keys_set_explains_rotation() -> None:
    completed = cli("keygen", env={**os.environ, ENCRYPTION_KEYS_ENV: generate_key()})
    assert f"To rotate: prepend it to {ENCRYPTION_KEYS_ENV}" in completed.stderr


def test_rotate_with_workspace_on_a_workspace_token_file_names_the_format() -> None:
    key = generate_key()
    token = KeyRing.from_env({ENCRYPTION_KEYS_ENV: key}).seal({"writeKey": "k" * 24}, "w")
    completed = cli(
        "credentials", "rotate", "--workspace", "w", env={**os.environ, ENCRYPTION_KEYS_ENV: key}, stdin=f"w\t{token}\n"
    )
    assert completed.returncode == 1
    assert "line 1: this is a WORKSPACE_ID<TAB>TOKEN line; with --workspace each line is a token alone" in (
        completed.stderr
    )


def test_rotate_on_a_space_separated_file_says_to_use_a_tab() -> None:
    key = generate_key()
    token = KeyRing.from_env({ENCRYPTION_KEYS_ENV: key}).seal({"writeKey": "k" * 24}, "w")
    completed = cli("credentials", "rotate", env={**os.environ, ENCRYPTION_KEYS_ENV: key}, stdin=f"w {token}\n")
    assert completed.returncode == 1
    assert "expected WORKSPACE_ID<TAB>TOKEN (separate the two with a TAB, not spaces or a comma)" in completed.stderr
