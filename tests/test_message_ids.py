"""The message id and the current time, which `execute` makes for every event without its own.

Both are written by hand for speed (messages.py); these check they are exactly what the
standard library would have made.
"""

from __future__ import annotations

import os
import re
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quickbot_segment_plugin.core import message as messages
from quickbot_segment_plugin.core.message import message_id_for
from quickbot_segment_plugin.core.timestamps import utc_now_text


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_a_random_message_id_is_the_uuid4_of_the_same_bits(bits: int) -> None:
    original = messages._random_bits
    messages._random_bits = lambda _: bits
    try:
        made = message_id_for("ws", None)
    finally:
        messages._random_bits = original
    expected = uuid.UUID(int=bits, version=4)
    assert made == str(expected)
    assert uuid.UUID(made).version == 4 and uuid.UUID(made).variant == uuid.RFC_4122


def test_random_message_ids_differ_and_execution_ids_are_stable() -> None:
    made = {message_id_for("ws", None) for _ in range(10_000)}
    assert len(made) == 10_000
    assert message_id_for("ws", "exec-1") == message_id_for("ws", "exec-1") != message_id_for("ws2", "exec-1")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    """`random` is reseeded in a forked child (CPython registers it at fork); uuid4-by-hand relies on it."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then gone without running the parent's cleanups
        os.close(read)
        os.write(write, message_id_for("ws", None).encode())
        os._exit(0)
    os.close(write)
    parent_id = message_id_for("ws", None)
    with os.fdopen(read, "rb") as pipe:
        child_id = pipe.read().decode()
    os.waitpid(pid, 0)
    assert uuid.UUID(child_id).version == 4
    assert child_id != parent_id


def test_the_current_time_is_isoformat_with_milliseconds_in_utc() -> None:
    for _ in range(2_000):
        before = datetime.now(UTC).replace(microsecond=0)
        text = utc_now_text()
        after = datetime.now(UTC)
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+00:00", text)
        parsed = datetime.fromisoformat(text)
        assert before <= parsed <= after
        assert parsed.isoformat(timespec="milliseconds") == text
