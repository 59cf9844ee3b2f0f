"""`validate`: the exact path and a sentence a bot builder understands, for every mistake."""

from __future__ import annotations

from typing import Any

import pytest

from quickbot_segment_plugin.block import SegmentBlock

BLOCK = SegmentBlock()


def problems(options: Any) -> list[dict[str, str]]:
    return BLOCK.validate(options)


@pytest.mark.parametrize(
    "options",
    [
        {"action": "identify", "userId": "{{User ID}}", "email": "{{Email}}"},
        {"action": "identify", "anonymousId": "{{Session ID}}", "email": "a@b.co", "traits": []},
        {"action": "alias", "userId": "new", "previousId": "old"},
        {
            "action": "track",
            "event": "Order Completed",
            "userId": "u1",
            "properties": [{"key": "n", "value": "1"}],
        },
        {"action": "page", "name": "Pricing", "anonymousId": "a", "category": "Docs"},
        {"action": "group", "groupId": "acme", "userId": "u"},
        {"action": "screen", "name": "Home", "userId": "u", "timestamp": "2026-01-31T12:00:00Z"},
        {"action": "track", "event": "E", "userId": "u", "integrations": {"All": False, "Mixpanel": True}},
    ],
)
def test_valid_options_have_no_problems(options: dict[str, Any]) -> None:
    assert problems(options) == []


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"action": "track", "userId": "u"}, [{"path": "event", "message": "Event Name is required."}]),
        (
            {"action": "track", "event": "  ", "userId": "u"},
            [{"path": "event", "message": "Event Name cannot be empty."}],
        ),
        (
            {"action": "track", "event": "E", "userId": "u", "properties": [{"key": "", "value": "x"}]},
            [{"path": "properties/0/key", "message": "Key of property 1 cannot be empty."}],
        ),
        (
            {"action": "track", "event": "E", "userId": "u", "properties": [{"key": "a"}, {"key": " "}]},
            [{"path": "properties/1/key", "message": "Key of property 2 cannot be empty."}],
        ),
        (
            {"action": "launch", "event": "E"},
            [
                {
                    "path": "",
                    "message": "Action 'launch' is not a Segment action; choose one of identify (Identify User), "
                    "alias (Alias), track (Track Event), page (Page View), group (Group), screen (Screen).",
                }
            ],
        ),
        (
            {"event": "E"},
            [
                {
                    "path": "",
                    "message": "Action is required: choose one of identify (Identify User), alias (Alias), "
                    "track (Track Event), page (Page View), group (Group), screen (Screen).",
                }
            ],
        ),
        (
            {"action": "track", "event": 42, "userId": "u"},
            [{"path": "event", "message": "Event Name must be text, not a number."}],
        ),
        (
            {"action": "track", "event": "E", "userId": "u", "properties": "plan=gold"},
            [{"path": "properties", "message": "Properties must be a list of key/value items, not text."}],
        ),
        (
            {"action": "track", "event": "E", "userId": "u", "integrations": {"Mixpanel": "no"}},
            [
                {
                    "path": "integrations/Mixpanel",
                    "message": "Integration 'Mixpanel' must be true or false, not text.",
                }
            ],
        ),
        (
            {"action": "track", "event": "E", "userId": "u", "traits": []},
            [
                {
                    "path": "traits",
                    "message": "'traits' is not a setting of the Track Event action; remove it.",
                }
            ],
        ),
        (
            {"action": "track", "event": "E"},
            [
                {
                    "path": "userId",
                    "message": "User ID or Anonymous ID is required: fill in one of them (either can be a {{variable}}).",
                }
            ],
        ),
        (
            {"action": "alias", "userId": "u"},
            [{"path": "previousId", "message": "Previous ID is required."}],
        ),
        (
            {"action": "identify", "userId": "u"},
            [{"path": "email", "message": "Email is required."}],
        ),
        (
            {
                "action": "track",
                "event": "E",
                "userId": "u",
                "properties": [{"key": "n", "value": "x", "type": "int"}],
            },
            [
                {
                    "path": "properties/0/type",
                    "message": "Type of property 1 must be one of 'string', 'number', 'boolean', 'datetime' or "
                    "'json', not 'int'.",
                }
            ],
        ),
        (
            {
                "action": "track",
                "event": "E",
                "userId": "u",
                "properties": [{"key": "n", "value": "x", "type": "number"}],
            },
            [{"path": "properties/0/value", "message": "Value of property 1 ('n'): 'x' is not a number."}],
        ),
        (
            {"action": "track", "event": "E", "userId": "u", "timestamp": "yesterday"},
            [
                {
                    "path": "timestamp",
                    "message": "Timestamp: 'yesterday' is not an ISO-8601 date-time (for example 2026-01-31T12:00:00Z).",
                }
            ],
        ),
        (
            {
                "action": "track",
                "event": "E",
                "userId": "u",
                "properties": [{"key": "a", "value": "1"}, {"key": "a"}],
            },
            [
                {
                    "path": "properties/1/key",
                    "message": "Key of property 2 ('a') repeats property 1; only one value can be sent per key.",
                }
            ],
        ),
        (
            {
                "action": "track",
                "event": "E",
                "userId": "u",
                "context": [{"key": "locale", "value": "fr"}, {"key": "quickbot.note", "value": "{{Answer}}"}],
                "properties": [{"key": "quickbot", "value": "fine outside context"}],
            },
            [
                {
                    "path": "context/1/key",
                    "message": "Key of context item 2 ('quickbot.note'): context.quickbot is written by the plugin "
                    "itself (context.consent, context.library, context.quickbot); choose another key.",
                }
            ],
        ),
        ("track", [{"path": "", "message": "Options must be an object, got text."}]),
    ],
)
def test_broken_options_get_the_exact_path_and_a_sentence(options: Any, expected: list[dict[str, str]]) -> None:
    assert problems(options) == expected


def test_template_syntax_errors_name_the_field_and_position() -> None:
    [problem] = problems({"action": "track", "event": "Signed {{ Plan ", "userId": "u"})
    assert problem["path"] == "event"
    assert problem["message"].startswith("Event Name: ")
    assert "line 1" in problem["message"]


def test_template_syntax_error_in_an_item_value() -> None:
    [problem] = problems(
        {
            "action": "identify",
            "userId": "u",
            "email": "e@x.io",
            "traits": [{"key": "k", "value": "{{ a | }}"}],
        }
    )
    assert problem["path"] == "traits/0/value"
    assert problem["message"].startswith("Value of trait 1 ('k'): ")


class TestTypebotStyleOptions:
    def test_old_track_options_are_accepted(self) -> None:
        options = {
            "action": "Track",
            "eventName": "Plan Viewed",
            "userId": "{{User ID}}",
            "properties": [{"id": "x1", "key": "plan", "value": "{{Plan}}"}],
        }
        assert problems(options) == []

    @pytest.mark.parametrize("label", ["Alias", "Identify User", "Page", "Page View", "Track", "Track Event"])
    def test_every_old_action_label_is_understood(self, label: str) -> None:
        result = problems({"action": label})
        assert result and all("not a Segment action" not in problem["message"] for problem in result)

    def test_a_missing_event_name_is_reported_at_the_old_path(self) -> None:
        options = {
            "action": "Track Event",
            "userId": "u",
            "properties": [{"id": "a", "key": "k", "value": "v"}],
        }
        assert problems(options) == [{"path": "eventName", "message": "Event Name is required."}]

    def test_errors_inside_renamed_fields_point_at_the_given_name(self) -> None:
        options = {"action": "Track", "eventName": "", "userId": "u"}
        assert problems(options) == [{"path": "eventName", "message": "Event Name cannot be empty."}]

    def test_an_item_with_an_empty_key_keeps_its_index(self) -> None:
        options = {
            "action": "Identify User",
            "userId": "u",
            "email": "e@x.io",
            "traits": [{"id": "t", "key": ""}],
        }
        assert problems(options) == [{"path": "traits/0/key", "message": "Key of trait 1 cannot be empty."}]


@pytest.mark.parametrize("key", ["consent", "consent.note", "library.name", "quickbot", " quickbot.botId"])
def test_no_context_item_can_write_where_the_plugin_writes(key: str) -> None:
    """Cleaning and privacy pass over those members: end-user data must not be able to hide there."""
    options = {"action": "track", "event": "E", "userId": "u", "context": [{"key": key, "value": "{{Answer}}"}]}
    assert [problem["path"] for problem in problems(options)] == ["context/0/key"]
