"""One table of yes/no words: a condition, a boolean item and a setting read "n" the same way."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quickbot_segment_plugin.core.errors import ConfigurationError
from quickbot_segment_plugin.core.truth import (
    FALSE_WORDS,
    NO_VALUE_WORDS,
    TRUE_WORDS,
    Truth,
    condition_is_true,
    truth_of,
)
from quickbot_segment_plugin.delivery import DeliverySettings
from quickbot_segment_plugin.options.values import to_boolean


def setting(word: str) -> bool:
    """A yes/no operator setting (QUICKBOT_SEGMENT_GZIP, default true) read through its settings model."""
    return DeliverySettings.from_env({"QUICKBOT_SEGMENT_GZIP": word}).gzip


TABLE = [(word, True) for word in TRUE_WORDS] + [(word, False) for word in FALSE_WORDS]


def _cases(word: str) -> st.SearchStrategy[str]:
    """The word in any case, with spaces around it, as a chat variable may hold it."""
    return st.tuples(
        st.text(" \t", max_size=2), st.sampled_from([word, word.upper(), word.title()]), st.text(" ", max_size=2)
    ).map("".join)


@settings(deadline=None)  # a busy shared machine; the property is about words, not speed
@given(st.sampled_from(TABLE).flatmap(lambda pair: st.tuples(_cases(pair[0]), st.just(pair[1]))))
def test_condition_boolean_item_and_setting_agree_on_every_word(case: tuple[str, bool]) -> None:
    word, meaning = case
    assert condition_is_true(word) is meaning
    assert setting(word) is meaning
    assert to_boolean(word) is meaning


@pytest.mark.parametrize("word", sorted(NO_VALUE_WORDS))
def test_no_value_is_false_in_a_condition_and_the_default_in_a_setting(word: str) -> None:
    assert condition_is_true(word) is False
    assert setting(word) is True  # the default stays


@pytest.mark.parametrize(("value", "expected"), [("Lyon", True), (2, True), (0, False), ([], False), ({"a": 1}, True)])
def test_any_other_value_in_a_condition_follows_the_documented_rule(value: Any, expected: bool) -> None:
    assert truth_of(value) in (Truth.OTHER, Truth.FALSE)
    assert condition_is_true(value) is expected


def test_a_setting_with_an_unknown_word_names_the_variable_and_the_table() -> None:
    with pytest.raises(ConfigurationError) as raised:
        setting("maybe")
    assert (
        "QUICKBOT_SEGMENT_GZIP='maybe': must be a yes/no word (true: true, yes, y, on, 1; false: false, no, n, off, 0)"
        in (str(raised.value))
    )


def _flow_block(block: Any, token: str, variables: dict[str, Any], **options: Any) -> dict[str, Any]:
    result: dict[str, Any] = block.execute(
        {"action": "track", "event": "Lead Qualified", "userId": "u-1", **options},
        {"workspace_id": "ws-test", "credentials": token, "variables": variables, "dry_run": True},
    )
    return result


def test_a_condition_on_n_and_a_boolean_item_holding_n_agree(block: Any, token: str) -> None:
    skipped = _flow_block(block, token, {"Answer": "n"}, condition="{{ Answer }}")
    assert skipped["status"] == "skipped"
    sent = _flow_block(
        block, token, {"Answer": "n"}, properties=[{"key": "ok", "value": "{{Answer}}", "type": "boolean"}]
    )
    assert sent["payload"]["properties"] == {"ok": False}


def test_a_boolean_item_holding_null_is_left_out_with_a_warning(block: Any, token: str) -> None:
    result = _flow_block(
        block, token, {"Answer": "null"}, properties=[{"key": "ok", "value": "{{Answer}}", "type": "boolean"}]
    )
    assert "ok" not in result["payload"].get("properties", {})
    assert any("holds 'null', which means no value; it was not sent" in entry["message"] for entry in result["logs"])


def test_an_unknown_word_in_a_boolean_item_is_an_error_naming_the_item(block: Any, token: str) -> None:
    result = _flow_block(
        block, token, {"Answer": "perhaps"}, properties=[{"key": "ok", "value": "{{Answer}}", "type": "boolean"}]
    )
    assert result["status"] == "failed"
    message = result["logs"][0]["message"]
    assert "property 'ok'" in message and "'perhaps' is not a yes/no word" in message
