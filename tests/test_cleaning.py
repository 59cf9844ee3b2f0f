"""Cleaning and Segment's reserved fields: for each rule a value that passes, one that is cleaned
or refused, and the exact sentence a bot builder reads; then the same through execute and the
collector, and arbitrary property maps through the cleaner."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import WORKSPACE

from quickbot_segment_plugin.block import SegmentBlock
from quickbot_segment_plugin.quality.cleaning import clean_message, first_refusal

LIBRARY = {"library": {"name": "analytics-python", "version": "2.4.0"}}
REFUSED = object()


def message(action: str, **objects: Any) -> dict[str, Any]:
    return {"type": action, "messageId": "m-1", "userId": "u", **objects, "context": dict(LIBRARY)}


# (rule, action, object, given value, expected value or REFUSED, the log lines)
CASES: list[tuple[str, str, str, dict[str, Any], Any, list[str]]] = [
    # trim: keys and text values
    ("trim", "track", "properties", {"city": "Lyon"}, {"city": "Lyon"}, []),
    (
        "trim",
        "track",
        "properties",
        {"city": " Lyon\n", "prefs": {" lang ": "fr"}},
        {"city": "Lyon", "prefs": {"lang": "fr"}},
        [
            "Property 'city' had spaces around its value; they were removed.",
            "Property 'prefs.lang' had spaces around its key; they were removed.",
        ],
    ),
    # empty values are dropped, with a warning
    ("empty_value", "track", "properties", {"tags": ["a", "b"]}, {"tags": ["a", "b"]}, []),
    (
        "empty_value",
        "track",
        "properties",
        {"tags": ["a", " "], "prefs": {"lang": None}, "notes": {}, "kept": 0},
        {"tags": ["a"], "kept": 0},
        [
            "Property 'tags[1]' is empty; it was not sent.",
            "Property 'prefs.lang' is empty; it was not sent.",
            "Property 'notes' is empty; it was not sent.",
        ],
    ),
    # email: normalised (domain in lower case), refused when it is not an address
    ("email", "identify", "traits", {"email": "Zoe@example.com"}, {"email": "Zoe@example.com"}, []),
    (
        "email",
        "identify",
        "traits",
        {"email": " Zoe@Example.COM"},
        {"email": "Zoe@example.com"},
        [
            "Trait 'email' had spaces around its value; they were removed.",
            "Trait 'email' was sent as 'Zoe@example.com': its domain in lower case.",
        ],
    ),
    (
        "email",
        "identify",
        "traits",
        {"email": "no thanks"},
        REFUSED,
        ["Trait 'email' must be an email address (Segment's reserved trait), got 'no thanks'; the event was not sent."],
    ),
    (
        "email",
        "group",
        "traits",
        {"email": "billing@acme"},
        REFUSED,
        [
            "Trait 'email' must be an email address (Segment's reserved trait), got 'billing@acme'; the event was not sent."
        ],
    ),
    # reserved numbers: age (identify), revenue (track)
    ("number", "identify", "traits", {"email": "a@b.io", "age": 34}, {"email": "a@b.io", "age": 34}, []),
    (
        "number",
        "identify",
        "traits",
        {"email": "a@b.io", "age": "34"},
        {"email": "a@b.io", "age": 34},
        ["Trait 'age' was sent as the number 34, not the text '34'."],
    ),
    (
        "number",
        "identify",
        "traits",
        {"email": "a@b.io", "age": "thirty"},
        REFUSED,
        ["Trait 'age' must be a number (Segment's reserved trait), got 'thirty'; the event was not sent."],
    ),
    (
        "number",
        "track",
        "properties",
        {"revenue": True},
        REFUSED,
        [
            "Property 'revenue' must be a number (Segment's reserved property), got the yes/no value true; the event was not sent."
        ],
    ),
    # reserved dates: createdAt, birthday
    (
        "date",
        "identify",
        "traits",
        {"email": "a@b.io", "createdAt": "2026-01-31T12:00:00+00:00", "birthday": "1990-01-31"},
        {"email": "a@b.io", "createdAt": "2026-01-31T12:00:00+00:00", "birthday": "1990-01-31"},
        [],
    ),
    (
        "date",
        "identify",
        "traits",
        {"email": "a@b.io", "birthday": "31/01/1990"},
        REFUSED,
        [
            "Trait 'birthday' must be an ISO-8601 date such as '1990-01-31' or '2026-01-31T12:00:00Z' "
            "(Segment's reserved trait), got '31/01/1990'; the event was not sent."
        ],
    ),
    (
        "date",
        "group",
        "traits",
        {"createdAt": "2026-02-30"},
        REFUSED,
        [
            "Trait 'createdAt' must be an ISO-8601 date such as '1990-01-31' or '2026-01-31T12:00:00Z' "
            "(Segment's reserved trait), got '2026-02-30'; the event was not sent."
        ],
    ),
    # reserved objects: address, company; address members are text
    (
        "object",
        "identify",
        "traits",
        {"email": "a@b.io", "address": {"city": "Lyon", "postalCode": "69001"}, "company": {"name": "Acme"}},
        {"email": "a@b.io", "address": {"city": "Lyon", "postalCode": "69001"}, "company": {"name": "Acme"}},
        [],
    ),
    (
        "object",
        "identify",
        "traits",
        {"email": "a@b.io", "address": "12 rue de la Paix"},
        REFUSED,
        [
            "Trait 'address' must be an object (Segment's reserved trait), got '12 rue de la Paix'; set it with keys "
            "such as address.city and address.country; the event was not sent."
        ],
    ),
    (
        "object",
        "identify",
        "traits",
        {"email": "a@b.io", "address": {"postalCode": 69001}, "company": {"employee_count": "12"}},
        {"email": "a@b.io", "address": {"postalCode": "69001"}, "company": {"employee_count": 12}},
        [
            "Trait 'company.employee_count' was sent as the number 12, not the text '12'.",
            "Trait 'address.postalCode' was sent as the text '69001', not a number.",
        ],
    ),
    # currency: an ISO 4217 code
    ("currency", "track", "properties", {"currency": "EUR"}, {"currency": "EUR"}, []),
    (
        "currency",
        "track",
        "properties",
        {"currency": "eur"},
        {"currency": "EUR"},
        ["Property 'currency' was sent as 'EUR': ISO 4217 codes are upper case."],
    ),
    (
        "currency",
        "track",
        "properties",
        {"currency": "euros"},
        REFUSED,
        [
            "Property 'currency' must be an ISO 4217 currency code such as 'USD' or 'EUR' (Segment's reserved "
            "property), got 'euros'; the event was not sent."
        ],
    ),
    # values JSON cannot carry are refused by name, not dropped by the library
    ("json", "track", "properties", {"ratio": 0.5}, {"ratio": 0.5}, []),
    (
        "json",
        "track",
        "properties",
        {"ratio": math.nan, "scores": [1, math.inf], "ids": {1, 2}, "raw": {3: "x"}},
        REFUSED,
        [
            "Property 'ratio' is NaN (not a number), a value JSON cannot carry; the event was not sent.",
            "Property 'scores[1]' is Infinity, a value JSON cannot carry; the event was not sent.",
            "Property 'ids' is a set, which cannot be sent as JSON; the event was not sent.",
            "Property 'raw' has a key 3 that is not text, as JSON needs; the event was not sent.",
        ],
    ),
    # keys that become the same once trimmed
    (
        "duplicate_key",
        "track",
        "properties",
        {"prefs": {"lang": "fr", "lang ": "en"}},
        REFUSED,
        [
            "Property 'prefs.lang' had spaces around its key; they were removed.",
            "Property 'prefs.lang' is set twice (keys that differ only by spaces around them); keep one of them; "
            "the event was not sent.",
        ],
    ),
]


@pytest.mark.parametrize(
    ("rule", "action", "name", "given", "expected", "logs"),
    CASES,
    ids=[f"{case[0]}-{'refused' if case[4] is REFUSED else ('clean' if case[5] else 'pass')}" for case in CASES],
)
def test_each_rule(rule: str, action: str, name: str, given: dict[str, Any], expected: Any, logs: list[str]) -> None:
    original = message(action, **{name: given})
    cleaned, findings = clean_message(original)
    assert [finding.message for finding in findings] == logs
    assert (first_refusal(findings) is not None) is (expected is REFUSED)
    if expected is not REFUSED:
        assert cleaned[name] == expected
        json.dumps(cleaned, allow_nan=False)
    if not logs:
        assert cleaned is original  # nothing to clean: the very same message, byte for byte


def test_refusals_and_drops_have_their_levels() -> None:
    _, findings = clean_message(message("identify", traits={"email": "nope", "nickname": "", "city": " Lyon"}))
    assert [(finding.rule, finding.level, finding.outcome) for finding in findings] == [
        ("empty_value", "warning", "dropped"),
        ("trim", "info", "cleaned"),
        ("email_format", "error", "refused"),
    ]


def test_reserved_fields_are_reserved_only_where_segment_reserves_them() -> None:
    # `age` is a reserved identify trait, not a reserved track property; `currency` only in track.
    assert clean_message(message("track", properties={"age": "thirty"}))[1] == []
    assert clean_message(message("identify", traits={"email": "a@b.io", "currency": "euros"}))[1] == []
    assert clean_message(message("page", properties={"revenue": "lots"}))[1] == []


def test_context_items_are_cleaned_but_not_what_the_plugin_writes_there() -> None:
    host = {"botId": " bot 1 ", "sessionId": ""}  # the host's ids, sent as given
    original = {
        "type": "track",
        "event": "E",
        "properties": {},
        "context": {"locale": " fr-FR", "quickbot": host, **LIBRARY},
    }
    cleaned, findings = clean_message(original)
    assert [finding.message for finding in findings] == [
        "Context item 'locale' had spaces around its value; they were removed."
    ]
    assert cleaned["context"] == {"locale": "fr-FR", "quickbot": host, **LIBRARY}


def test_cleaning_off_changes_nothing_but_still_refuses_what_json_cannot_carry() -> None:
    untouched = message("identify", traits={"email": " Not An Email ", "age": "thirty", "notes": ""})
    sent, findings = clean_message(untouched, normalise=False)
    assert sent is untouched
    assert findings == []
    _, broken = clean_message(message("track", properties={"ratio": math.nan}), normalise=False)
    assert first_refusal(broken) is not None


# --- through execute and the collector ---------------------------------------------------------


def test_cleaned_values_arrive_cleaned_and_the_logs_name_the_item(
    block: SegmentBlock, token: str, local_segment: Any
) -> None:
    options = {
        "action": "identify",
        "userId": "u-1",
        "email": "{{Email}}",
        "traits": [
            {"key": "age", "value": "{{Age}}"},
            {"key": "address.city", "value": "{{City}}"},
            {"key": "prefs", "value": '{"lang": "fr", "theme": ""}', "type": "json"},
        ],
    }
    variables = {"Email": "Zoe@Example.com", "Age": "34", "City": "Lyon "}
    result = block.execute(options, {"workspace_id": WORKSPACE, "credentials": token, "variables": variables})
    assert result["status"] == "queued"
    assert [(entry["level"], entry["message"], entry["details"]) for entry in result["logs"]] == [
        (
            "info",
            "Trait 'address.city' had spaces around its value; they were removed.",
            {"field": "traits/1/value", "rule": "trim"},
        ),
        (
            "warning",
            "Trait 'prefs.theme' is empty; it was not sent.",
            {"field": "traits/2/value", "rule": "empty_value"},
        ),
        (
            "info",
            "Trait 'email' was sent as 'Zoe@example.com': its domain in lower case.",
            {"field": "email", "rule": "email_normalised"},
        ),
        (
            "info",
            "Trait 'age' was sent as the number 34, not the text '34'.",
            {"field": "traits/0/value", "rule": "reserved_type"},
        ),
    ]
    block.shutdown(10.0)
    assert local_segment.wait_for(1, timeout=10.0)
    [stored] = local_segment.messages()
    assert stored["traits"] == {
        "age": 34,
        "address": {"city": "Lyon"},
        "prefs": {"lang": "fr"},
        "email": "Zoe@example.com",
    }
    assert stored["traits"] == result["payload"]["traits"]


def test_a_refused_event_never_reaches_segment_and_is_counted(
    block: SegmentBlock, token: str, local_segment: Any
) -> None:
    name = "quality:refused:reserved_type:identify"
    before = block.counters.get(WORKSPACE, name)
    options = {
        "action": "identify",
        "userId": "u-1",
        "email": "zoe@example.com",
        "traits": [{"key": "age", "value": "{{Age}}"}],
    }
    result = block.execute(options, {"workspace_id": WORKSPACE, "credentials": token, "variables": {"Age": "thirty"}})
    assert result["status"] == "failed"
    assert result["logs"] == [
        {
            "level": "error",
            "message": "Trait 'age' must be a number (Segment's reserved trait), got 'thirty'; the event was not sent.",
            "details": {"field": "traits/0/value", "rule": "reserved_type"},
        }
    ]
    assert block.counters.get(WORKSPACE, name) == before + 1
    block.shutdown(5.0)
    assert local_segment.count() == 0


def test_dry_run_returns_the_cleaned_payload(block: SegmentBlock) -> None:
    options = {
        "action": "track",
        "event": "Order Completed",
        "userId": "u",
        "properties": [{"key": "currency", "value": "eur"}],
    }
    result = block.execute(options, {"workspace_id": WORKSPACE, "variables": {}, "dry_run": True})
    assert result["status"] == "dry_run"
    assert result["payload"]["properties"] == {"currency": "EUR"}
    assert result["logs"][0]["message"] == "Property 'currency' was sent as 'EUR': ISO 4217 codes are upper case."


def test_cleaning_can_be_turned_off(block: SegmentBlock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUICKBOT_SEGMENT_CLEANING", "off")
    options = {
        "action": "track",
        "event": "Order Completed",
        "userId": "u",
        "properties": [{"key": "currency", "value": "eur"}],
    }
    result = block.execute(options, {"workspace_id": WORKSPACE, "variables": {}, "dry_run": True})
    assert result["payload"]["properties"] == {"currency": "eur"}
    assert result["logs"][-1]["message"] == "Dry run: the message was built and checked, and not sent."


def test_a_bad_cleaning_setting_fails_the_block_naming_the_variable(
    block: SegmentBlock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUICKBOT_SEGMENT_CLEANING", "sometimes")
    result = block.execute(
        {"action": "track", "event": "E", "userId": "u"}, {"workspace_id": WORKSPACE, "dry_run": True}
    )
    assert result["status"] == "failed"
    assert result["logs"][-1]["message"] == "QUICKBOT_SEGMENT_CLEANING must be true or false, got 'sometimes'."


# --- arbitrary property maps -----------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
python_values = st.recursive(
    json_scalars | st.binary(max_size=4) | st.builds(set, st.lists(st.integers(), max_size=2)),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=6) | st.integers() | st.none(), inner, max_size=3)
    ),
    max_leaves=12,
)
reserved_keys = st.sampled_from(["email", "age", "birthday", "createdAt", "address", "company", "revenue", "currency"])


@settings(max_examples=400, deadline=None)
@given(
    action=st.sampled_from(["identify", "group", "track", "page", "screen"]),
    objects=st.dictionaries(reserved_keys | st.text(max_size=8), python_values, max_size=6),
    normalise=st.booleans(),
)
def test_any_property_map_is_cleaned_into_json_or_refused_by_name(
    action: str, objects: dict[Any, Any], normalise: bool
) -> None:
    name = "traits" if action in {"identify", "group"} else "properties"
    cleaned, findings = clean_message(message(action, **{name: objects}), normalise=normalise)  # never raises
    for finding in findings:
        assert finding.message and finding.rule and finding.path[0] == name
    if first_refusal(findings) is not None:
        assert all(f.message.endswith("the event was not sent.") for f in findings if f.outcome == "refused")
        return
    text = json.dumps(cleaned, allow_nan=False)  # always sendable when not refused
    if normalise:
        for key, value in json.loads(text)[name].items():  # the object itself may end up empty
            assert key == key.strip() and key
            _assert_clean(value)


def _assert_clean(value: Any) -> None:
    if isinstance(value, dict):
        assert value, "an empty object is dropped"
        for key, inner in value.items():
            assert key == key.strip() and key
            _assert_clean(inner)
    elif isinstance(value, list):
        assert value, "an empty list is dropped"
        for inner in value:
            _assert_clean(inner)
    else:
        assert value is not None
        if isinstance(value, str):
            assert value == value.strip() and value
