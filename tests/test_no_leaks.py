"""A write key never appears in a log, an exception, a result, CLI output or a stored row.

One recognisable key goes through every path of the block that can print, log, raise or
store: sealing, validate, a queued event, a dry run, a rejected batch (dead letter), bad and
foreign tokens, the CLI, and the library's own DEBUG request logging. Everything captured is
scanned for it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from support import WORKSPACE, WRITE_KEY

from quickbot_segment_plugin.block import SegmentBlock
from quickbot_segment_plugin.cli import main
from quickbot_segment_plugin.collector.service import Fault

TRACK = {"action": "track", "event": "Signed Up", "userId": "{{User ID}}"}


def _every_file_below(path: Path) -> bytes:
    return b"".join(file.read_bytes() for file in path.parent.glob(path.name + "*") if file.is_file())


def test_no_path_leaks_the_write_key(
    block: SegmentBlock,
    token: str,
    local_segment: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)  # includes the library's "making request: {...writeKey...}"
    seen: list[str] = []
    context = {"workspace_id": WORKSPACE, "credentials": token, "variables": {"User ID": "u-1"}}

    seen.append(json.dumps(block.validate(TRACK)))
    seen.append(json.dumps(block.execute(TRACK, context)))
    seen.append(json.dumps(block.execute(TRACK, {**context, "dry_run": True})))
    seen.append(json.dumps(block.execute(TRACK, {**context, "credentials": token[:-3] + "AAA"})))
    seen.append(json.dumps(block.execute(TRACK, {**context, "workspace_id": "someone-else"})))
    seen.append(repr(block) + repr(block.keyring()) + repr(block.keyring().open(token, WORKSPACE)))
    for bad_values in ({"writeKey": WRITE_KEY + " x"}, {"writeKey": WRITE_KEY, "region": "mars"}, {"writeKey": 5}):
        with pytest.raises(Exception) as raised:
            block.seal_credentials(bad_values, workspace_id=WORKSPACE)
        seen.append(f"{raised.value!s} {raised.value!r} {raised.value.__cause__!r} {raised.value.__context__!r}")

    # A batch Segment rejects: it is logged once and dead-lettered.
    local_segment.inject_faults([Fault(status=400)])
    seen.append(json.dumps(block.execute(TRACK, {**context, "execution_id": "rejected"})))
    block.shutdown(5.0)
    seen.append(json.dumps(block.stats()))

    # The CLI: run with real credentials against the collector, then the operator commands.
    monkeypatch.setenv("QUICKBOT_SEGMENT_ENDPOINT", local_segment.url)
    flow = tmp_path / "flow.json"
    flow.write_text(
        json.dumps({"workspace_id": WORKSPACE, "blocks": [{"id": "t", "type": "segment", "options": TRACK}]})
    )
    main(["run", str(flow), "--credentials", token, "--var", "User ID=u-2"])
    main(["dead-letters", "list", "--json"])
    main(["stats", "--json"])
    main(["events", "--url", local_segment.url, "--json"])
    out, err = capsys.readouterr()
    seen += [out, err, caplog.text]
    assert "dead" in out  # the dead-letter commands printed something to scan

    for text in seen:
        assert WRITE_KEY not in text
    assert "making request" in caplog.text  # the library's debug logging did run, redacted
    dead_letters = Path(block.dead_letters().store.path)
    assert WRITE_KEY.encode() not in _every_file_below(dead_letters)
    assert local_segment.count() >= 1  # the CLI run arrived; the first batch was rejected on purpose
