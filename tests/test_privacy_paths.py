"""`PrivacyGate.screen` against a plain reference of its rule, on generated policies and messages.

The gate does not build each key's path to look it up in the denylist: it remembers, per policy,
which keys cannot be denied anywhere, and it passes over values no detector can match (by type,
length and digit count) without scanning them. Those shortcuts must never skip a key or a value
the rule catches, so the reference below applies the rule as it is written, every key and every
value, and the two must agree on the result, on every action logged, and on copy-on-write (a
host's dict is never modified; unchanged objects come back as the same objects).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import string
import tempfile
from enum import IntEnum
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quickbot_segment_plugin.core.results import ResultLog
from quickbot_segment_plugin.privacy.detectors import DETECTORS, find_spans
from quickbot_segment_plugin.privacy.gate import PrivacyGate
from quickbot_segment_plugin.privacy.policy import DEFAULT_DENY_KEYS, PrivacyPolicy, normal_key, parse_policy

OBJECTS = {
    "identify": ("traits", "context"),
    "group": ("traits", "context"),
    "track": ("properties", "context"),
    "page": ("properties", "context"),
    "screen": ("properties", "context"),
    "alias": ("context",),
}
UNSCANNED_CONTEXT = {"library", "consent", "quickbot"}
PATH_SAFE = re.compile(r"[^\w .\-\[\]]")


class OddKey(str):
    """A key whose `str()` is not its value: the rule judges (and names) it by `str()`."""

    def __str__(self) -> str:
        return "password"


class Text(str):
    pass


class Level(IntEnum):
    HIGH = 4111111111111111  # a Luhn-valid card number, as an int subclass


# Key names close to one another under `normal_key`, to the default denylist, to the scanned
# objects and to the context entries the plugin writes itself.
KEY_NAMES = [
    "pin",
    "PIN",
    "Pin-",
    "pin_code",
    "pinCode",
    "card",
    "Card",
    "email",
    "address",
    "street",
    "city",
    "x",
    "y",
    "items",
    "items[0]",
    "library",
    "consent",
    "quickbot",
    "traits",
    "properties",
    "context",
    "password",
    "pass word",
    "api-key",
    "plan",
    "comment",
]
odd_keys = st.one_of(st.integers(min_value=0, max_value=3), st.just(OddKey("plan")), st.just(OddKey("card")))
texts = st.one_of(
    st.sampled_from(
        [
            "premium",
            "chatbot",
            "please deliver after 6pm",
            "A-20261128-0042",
            "203.0.113.9",
            "my card is 4111 1111 1111 1111 thanks",
            "4111111111111111",
            "4222222222222",  # a 13-digit card: the shortest text the card detector matches
            "refund to DE89 3704 0044 0532 0130 00 please",
            "GB82WEST12345698765432",
            "NO9386011117947",  # a 15-character IBAN: the shortest the IBAN detector matches
            "ssn 219-09-9999 ok",
            "219-09-9999",  # the shortest text the SSN detector matches
            "call +33 6 12 34 56 78 tonight",
            "+12345678",  # the shortest text the phone detector matches
            "(415) 555-2671",
            "2026-11-28T15:20:39.172+00:00",
            "",
        ]
    ),
    st.text(alphabet=string.digits + "ABDEGWxyz -+().", max_size=40),
    st.text(max_size=20),
    st.builds(Text, st.sampled_from(["4111 1111 1111 1111", "plain", "12"])),
)
scalars = st.one_of(
    texts,
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([4111111111111111, -4111111111111111, 10**7, -(10**7), 10**7 - 1, 219099999, Level.HIGH]),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
)

deny_parts = st.one_of(st.sampled_from(KEY_NAMES), st.text(alphabet="abcXY_- ", min_size=1, max_size=5))
deny_entries = st.one_of(
    deny_parts,  # a name, any depth
    st.lists(deny_parts, min_size=1, max_size=3).flatmap(  # a path from traits/properties/context
        lambda parts: st.sampled_from(["traits", "properties", "context"]).map(lambda root: ".".join([root, *parts]))
    ),
    st.lists(deny_parts, min_size=2, max_size=3).map(".".join),  # a path inside any of the three
).filter(lambda entry: all(part.strip() for part in entry.split(".")))
policies = st.fixed_dictionaries(
    {
        "deny_keys": st.lists(deny_entries, max_size=6),
        "keep_keys": st.lists(st.sampled_from(["pin", "password", "api_key", "ssn"]), max_size=2),
        "detectors": st.dictionaries(
            st.sampled_from(list(DETECTORS)), st.sampled_from(["drop", "mask", "refuse", "off"]), max_size=4
        ),
    }
)


@st.composite
def messages_for(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    """Messages whose keys come from a small pool holding the policy's own path parts, with some of
    its denied paths planted: a generated key seldom lands on a denied path by chance."""
    entries = [[part.strip() for part in entry.split(".")] for entry in document["deny_keys"]]
    parts = sorted({part for entry in entries for part in entry})
    pool = draw(st.lists(st.sampled_from(KEY_NAMES), min_size=1, max_size=5)) + parts
    keys = st.one_of(st.sampled_from(pool), st.sampled_from(pool), odd_keys)
    values = st.recursive(
        scalars,
        lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(keys, children, max_size=4)),
        max_leaves=20,
    )
    objects = st.dictionaries(keys, values, max_size=5)
    message: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {"type": st.sampled_from([*OBJECTS, "other"])},
            optional={"traits": objects, "properties": objects, "context": objects, "userId": texts},
        )
    )
    for entry in entries:
        if len(entry) < 2 or not draw(st.booleans()):
            continue
        if entry[0] in ("traits", "properties", "context"):
            path = entry
        else:
            path = [draw(st.sampled_from(["traits", "properties", "context"])), *entry]
        node: dict[Any, Any] = message
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = draw(values)
    # What the plugin writes into context, next to the same names elsewhere: only the former is skipped.
    if draw(st.booleans()):
        written = draw(st.sampled_from(sorted(UNSCANNED_CONTEXT)))
        message.setdefault("context", {})[written] = {"password": "x", "note": "4111 1111 1111 1111"}
        message.setdefault("properties", {})[written] = {"password": "x", "note": "4111 1111 1111 1111"}
    return message


class Refused(Exception):
    def __init__(self, path: str, detector: str) -> None:
        self.path = path
        self.detector = detector


DROP = object()


def dotted(path: tuple[str, ...]) -> str:
    return PATH_SAFE.sub("?", ".".join(path))[:200]


def reference_screen(
    message: dict[str, Any], policy: PrivacyPolicy
) -> tuple[dict[str, Any] | None, list[tuple[str, str, str]]]:
    """The rule as written: every key's full path is looked up, every value with a digit scanned."""
    actions: list[tuple[str, str, str]] = []

    def denied(path: tuple[str, ...]) -> bool:
        return (
            normal_key(path[-1]) in policy.deny_names
            or path in policy.deny_paths
            or path[1:] in policy.deny_any_object_paths
        )

    def text(value: str, path: tuple[str, ...]) -> Any:
        for name, action in policy.detectors:
            detector = DETECTORS[name]
            digits = sum(char in string.digits for char in value)
            spans = detector.find(value) if digits >= detector.needs_digits else []
            if not spans:
                continue
            if action == "refuse":
                raise Refused(dotted(path), name)
            if action == "drop":
                actions.append((dotted(path), "dropped", f"privacy_{name}"))
                return DROP
            for start, end in reversed(spans):
                chunk, keep, masked = value[start:end], 4, []
                for char in reversed(chunk):
                    masked.append(char if not char.isalnum() or keep > 0 else "*")
                    keep -= char.isalnum()
                value = value[:start] + "".join(reversed(masked)) + value[end:]
            actions.append((dotted(path), "masked", f"privacy_{name}"))
        return value

    def walk(value: Any, path: tuple[str, ...]) -> Any:
        if isinstance(value, str):
            return text(value, path) if any(char in string.digits for char in value) else value
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) < 10**7:
                return value
            screened = text(str(value), path)
            return value if screened == str(value) else screened
        if isinstance(value, dict):
            return obj(value, path)
        if isinstance(value, list):
            walked = [walk(element, (*path[:-1], f"{path[-1]}[{index}]")) for index, element in enumerate(value)]
            if all(new is old for new, old in zip(walked, value, strict=True)):
                return value
            return [element for element in walked if element is not DROP]
        return value

    def obj(value: dict[Any, Any], path: tuple[str, ...]) -> dict[Any, Any]:
        result = dict(value)
        changed = False
        for key, item in value.items():
            child = (*path, str(key))
            if path == ("context",) and key in UNSCANNED_CONTEXT:
                continue
            if denied(child):
                del result[key]
                actions.append((dotted(child), "dropped", "privacy_denylist"))
                changed = True
                continue
            screened = walk(item, child)
            if screened is DROP:
                del result[key]
                changed = True
            elif screened is not item:
                result[key] = screened
                changed = True
        return result if changed else value

    screened = dict(message)
    try:
        for name in OBJECTS.get(str(message.get("type")), ("context",)):
            value = message.get(name)
            if isinstance(value, dict) and value:
                screened[name] = obj(value, (name,))
    except Refused as refused:
        return None, [(refused.path, "refused", f"privacy_{refused.detector}")]
    return (screened if actions else message), actions


def assert_same_sharing(original: Any, expected: Any, actual: Any) -> None:
    """Where the reference hands back an object of the host's as it is, the gate does too, and vice versa."""
    assert (actual is original) == (expected is original)
    if isinstance(expected, dict) and isinstance(original, dict) and isinstance(actual, dict):
        for key in expected.keys() & original.keys():
            assert_same_sharing(original[key], expected[key], actual[key])
    elif (
        isinstance(expected, list)
        and isinstance(original, list)
        and isinstance(actual, list)
        and len(expected) == len(original)  # nothing dropped: the elements line up
    ):
        for old, new, got in zip(original, expected, actual, strict=True):
            assert_same_sharing(old, new, got)


_POLICY_DIR = tempfile.TemporaryDirectory(prefix="privacy-paths-")
_GATE = PrivacyGate({"QUICKBOT_SEGMENT_PRIVACY_DIR": _POLICY_DIR.name})
_WORKSPACES = itertools.count()


def logged(log: ResultLog) -> list[tuple[str, str, str]]:
    return [(entry["details"]["field"], entry["details"]["action"], entry["details"]["rule"]) for entry in log.entries]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents=st.lists(policies, min_size=1, max_size=2), data=st.data())
def test_screen_agrees_with_the_rule_as_written(documents: list[dict[str, Any]], data: st.DataObject) -> None:
    batch = data.draw(st.lists(messages_for(documents[0]), min_size=1, max_size=4))
    workspaces = []
    for document in documents:
        # A fresh workspace (and file) per policy: the resolver caches by path, size and mtime.
        workspace = f"ws-{next(_WORKSPACES)}"
        Path(_POLICY_DIR.name, f"{workspace}.privacy.json").write_text(json.dumps(document), encoding="utf-8")
        workspaces.append((workspace, parse_policy(document, "reference")))
    # Several messages per policy, and policies taking turns: what the gate remembers of a policy from
    # one message must not change the verdicts on the next, nor on another policy's.
    for message in batch:
        for workspace, policy in workspaces:
            before = copy.deepcopy(message)
            log = ResultLog()
            actual = _GATE.screen(message, workspace, log)
            expected, actions = reference_screen(message, policy)
            assert message == before  # the host's dict is never modified
            assert logged(log) == actions
            assert actual == expected
            if expected is not None:
                assert_same_sharing(message, expected, actual)


@settings(max_examples=200)
@given(st.data())
def test_no_detector_matches_a_text_shorter_than_its_min_length(data: st.DataObject) -> None:
    """`find_spans` does not run a detector on a text shorter than its `min_length`: none can match."""
    for detector in DETECTORS.values():
        text = data.draw(st.text(alphabet=string.digits + "ABDEGWxyz -+().", max_size=detector.min_length - 1))
        assert detector.find(text) == [], detector.name


# For each detector, a text that is one of its shortest matches (Norway's IBANs are the shortest).
SHORTEST_MATCHES = {"iban": "NO9386011117947", "card": "4222222222222", "ssn": "123-45-6789", "phone": "+33612345"}


def test_each_detector_min_length_is_the_length_of_a_match() -> None:
    """`min_length` is no larger than a real match (`find_spans` must not skip a text it would catch), and no
    smaller than these shortest matches either, so the length pre-check skips every shorter text."""
    assert SHORTEST_MATCHES.keys() == DETECTORS.keys()
    for name, text in SHORTEST_MATCHES.items():
        detector = DETECTORS[name]
        assert find_spans(detector, text, sum(char.isdigit() for char in text)) == [(0, len(text))], name
        assert len(text) == detector.min_length, name


def test_the_key_memory_is_bounded_and_forgetting_changes_nothing() -> None:
    gate = PrivacyGate({})
    many = {f"key{index}": "premium" for index in range(10_000)}
    message = {"type": "track", "properties": {**many, "Credit Card": "x"}}
    log = ResultLog()
    screened = gate.screen(message, "ws", log)
    assert screened is not None
    assert screened["properties"] == many
    assert logged(log) == [("properties.Credit Card", "dropped", "privacy_denylist")]
    again = ResultLog()
    assert gate.screen({"type": "track", "properties": many}, "ws", again) is not None
    assert again.entries == []


def test_default_deny_keys_are_dropped_at_any_depth_once_remembered_as_clean_elsewhere() -> None:
    gate = PrivacyGate({})
    name = DEFAULT_DENY_KEYS[0]
    nested = {"type": "track", "properties": {"a": {"b": [{name: "x", "plan": "premium"}]}}}
    for _ in range(2):
        log = ResultLog()
        screened = gate.screen(nested, "ws", log)
        assert screened == {"type": "track", "properties": {"a": {"b": [{"plan": "premium"}]}}}
        assert logged(log) == [(f"properties.a.b[0].{name}", "dropped", "privacy_denylist")]
