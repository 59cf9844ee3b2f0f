"""Cleaning's read-only pre-check may only skip objects the full walk would leave alone.

`clean_message` first asks `_untouched_members` whether an object needs anything; only when it
cannot vouch for it does the copy-on-write walk run. If the pre-check ever said "untouched"
about an object the walk would change or report, an event would be sent uncleaned without a
word. These properties pit the two against each other on awkward input: every Unicode
whitespace character, str/int/float subclasses, tuples, NaN, non-str keys, empty values and
nesting around the depth limit.
"""

from __future__ import annotations

import enum
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from quickbot_segment_plugin.quality.cleaning import MAX_DEPTH, _untouched_members, _Walker, clean_message


class Text(str):
    pass


class Level(enum.IntEnum):
    HIGH = 1


class Ratio(float):
    pass


WHITESPACE = [" ", "\t", "\n", "\x0b", "\x0c", "\r", "\x1c", "\x1f", "\x85", "\xa0", "\u1680", "\u2000", "\u2028"]
WHITESPACE += ["\u202f", "\u3000", "\u200b", "\ufeff", "\u180e"]  # the last three are not whitespace to str.strip
texts = st.one_of(
    st.text(st.sampled_from([*"aZ@.-_é1", *WHITESPACE]), max_size=6),
    st.sampled_from(["", " ", "Lyon", " Lyon", "a@b.io", "12", "library", "quickbot"]),
    st.text(max_size=4).map(Text),
)
keys = st.one_of(texts, st.integers(0, 3), st.none(), st.booleans())
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 40),
    st.floats(),
    texts,
    st.just(Level.HIGH),
    st.just(Ratio(1.5)),
    st.just(b"x"),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.tuples(inner, inner), st.dictionaries(keys, inner, max_size=4)
    ),
    max_leaves=14,
)


def nested(depth: int, leaf: Any) -> dict[str, Any]:
    value = leaf
    for _ in range(depth):
        value = {"k": value}
    return {"d": value}


objects = st.one_of(
    st.dictionaries(keys, values, max_size=6),
    st.tuples(st.integers(MAX_DEPTH - 3, MAX_DEPTH + 3), st.sampled_from(["v", {}, [1], {"a": 1}])).map(
        lambda args: nested(*args)
    ),
)


@settings(max_examples=1500, deadline=None)
@given(objects, st.sampled_from([frozenset(), frozenset({"library", "quickbot"})]))
def test_an_object_the_precheck_vouches_for_is_one_the_walk_leaves_alone(
    obj: dict[Any, Any], kept: frozenset[str]
) -> None:
    if not _untouched_members(obj, 1, kept):
        return
    findings: list[Any] = []
    walked = _Walker(findings, True)
    walked.noun = "property"
    assert walked.members(obj, ("properties",), 1, kept) is obj
    assert findings == []


@settings(max_examples=500, deadline=None)
@given(objects)
def test_the_walk_still_runs_when_the_precheck_declines(obj: dict[Any, Any]) -> None:
    """A value the walk cleans is cleaned, whichever way it was reached."""
    message = {"type": "track", "event": "E", "properties": obj}
    findings: list[Any] = []
    walker = _Walker(findings, True)
    walker.noun = "property"
    expected = walker.members(obj, ("properties",), 1)
    cleaned, cleaned_findings = clean_message(message)
    assert cleaned.get("properties") == expected or (not expected and "properties" not in cleaned)
    assert [finding.message for finding in cleaned_findings if finding.path[0] == "properties"] == [
        finding.message for finding in findings
    ]
