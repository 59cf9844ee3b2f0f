"""The value detectors on their own: what they find in free text, and what they must leave alone.

The end-to-end behaviour (actions, logs, the collector) is in test_privacy.py; here the input
space is large, so hypothesis generates it."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quickbot_segment_plugin.privacy.detectors import DETECTORS, find_spans, iban_valid, luhn_valid, mask_span


def spans(name: str, text: str) -> list[tuple[int, int]]:
    return find_spans(DETECTORS[name], text, sum(char.isdigit() for char in text))


def luhn_complete(body: str) -> str:
    """`body` plus the check digit that makes it Luhn-valid."""
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always fits")


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    length = draw(st.integers(min_value=13, max_value=19))
    body = draw(st.text(alphabet=string.digits, min_size=length - 1, max_size=length - 1))
    number = luhn_complete(body)
    style = draw(st.sampled_from(["plain", "spaces", "dashes"]))
    if style == "plain":
        return number
    separator = " " if style == "spaces" else "-"
    return separator.join(number[index : index + 4] for index in range(0, len(number), 4))


no_digit_text = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Nd", "No", "Nl"), exclude_characters="0123456789"),
    max_size=200,
)
words = st.text(alphabet=string.ascii_letters + " .,!?'é", max_size=40)


@settings(max_examples=300)
@given(card_numbers(), words, words)
def test_a_luhn_valid_card_number_in_free_text_is_always_found(card: str, before: str, after: str) -> None:
    text = f"{before} {card} {after}"
    assert spans("card", text) == [(len(before) + 1, len(before) + 1 + len(card))]
    masked = mask_span(text, (len(before) + 1, len(before) + 1 + len(card)))
    digits = "".join(char for char in card if char.isdigit())
    assert "".join(char for char in masked if char.isdigit()) == digits[-4:]
    assert masked.count("*") == len(digits) - 4


@settings(max_examples=300)
@given(no_digit_text)
def test_text_without_digits_is_never_flagged_by_any_detector(text: str) -> None:
    for name in DETECTORS:
        assert spans(name, text) == [], name


@settings(max_examples=200)
@given(st.text(alphabet=string.digits, min_size=13, max_size=19))
def test_an_unseparated_digit_run_is_a_card_exactly_when_luhn_says_so(digits: str) -> None:
    assert bool(spans("card", f"order {digits} shipped")) == luhn_valid(digits)


@pytest.mark.parametrize(
    ("name", "text", "found"),
    [
        ("card", "my card is 4111 1111 1111 1111 thanks", "4111 1111 1111 1111"),
        ("card", "5500-0000-0000-0004", "5500-0000-0000-0004"),
        ("card", "order 4111111111111112 shipped", None),  # Luhn fails
        ("card", "call 0612345678", None),  # too short for a card
        ("card", "4111 1111 1111 1111 2", "4111 1111 1111 1111"),  # a stray digit after the card
        ("card", "ref 41111111111111110000", None),  # 22 digits, no separators: not a typed card
        ("iban", "iban DE89 3704 0044 0532 0130 00 thanks", "DE89 3704 0044 0532 0130 00"),
        ("iban", "GB82WEST12345698765432", "GB82WEST12345698765432"),
        ("iban", "GB82WEST12345698765433", None),  # mod-97 fails
        ("ssn", "ssn 123-45-6789.", "123-45-6789"),
        ("ssn", "not issued: 666-45-6789 or 123-00-6789", None),
        ("ssn", "date 2024-01-15", None),
        ("phone", "call me on +33 6 12 34 56 78", "+33 6 12 34 56 78"),
        ("phone", "or (415) 555-2671 after 5", "(415) 555-2671"),
        ("phone", "0044 20 7946 0958", "0044 20 7946 0958"),
        ("phone", "I paid 1234 euros on 12/03", None),
    ],
)
def test_detector_examples(name: str, text: str, found: str | None) -> None:
    result = spans(name, text)
    if found is None:
        assert result == []
    else:
        assert [text[start:end] for start, end in result] == [found]


def test_masking_keeps_the_last_four_and_the_separators() -> None:
    text = "card 4111 1111 1111 1111 ok"
    [span] = spans("card", text)
    assert mask_span(text, span) == "card **** **** **** 1111 ok"


def test_iban_check() -> None:
    assert iban_valid("DE89370400440532013000")
    assert not iban_valid("DE89370400440532013001")


@settings(max_examples=100, deadline=None)
@given(card=card_numbers(), clean=st.lists(st.from_regex(r"\A[a-z]{3}-\d{1,6}\Z"), min_size=1, max_size=5))
def test_screening_the_same_texts_again_gives_the_same_answer(card: str, clean: list[str]) -> None:
    """Texts no detector matched are remembered per policy; a match must never be remembered."""
    from quickbot_segment_plugin.core import ResultLog
    from quickbot_segment_plugin.privacy import PrivacyGate

    gate = PrivacyGate(environ={})
    message = {
        "type": "track",
        "event": "Paid",
        "userId": "u",
        "properties": {**{f"k{index}": text for index, text in enumerate(clean)}, "note": f"card {card}"},
    }
    first = gate.screen(message, "ws", ResultLog())
    second = gate.screen(message, "ws", ResultLog())
    assert first is not None and second is not None
    assert first == second
    assert card not in str(second["properties"]["note"])
    assert all(second["properties"][f"k{index}"] == text for index, text in enumerate(clean))
