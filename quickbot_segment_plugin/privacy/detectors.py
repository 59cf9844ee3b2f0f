"""Value detectors: personal data typed into free text, found without the field's name.

Chat users type card numbers, bank accounts and phone numbers into answers the bot builder
sends as "comment" or "message"; a key denylist cannot see those. Each detector here finds
the spans of one kind of data in a text and is chosen to be specific, because a false
positive rewrites a customer's event:

- `card`: 13 to 19 digits, optionally grouped by single spaces or dashes, that pass the Luhn
  check (every issuer's card numbers do; a random 16-digit order number passes one time in ten).
- `iban`: two letters, two check digits and 11 to 30 letters/digits (optionally grouped by
  spaces), that pass the ISO 13616 mod-97 check.
- `ssn`: a US Social Security number written `AAA-GG-SSSS`, excluding the numbers the SSA
  never issues (area 000, 666 or 900-999, group 00, serial 0000). Undashed nine-digit runs are
  not matched: too many order and reference numbers look the same.
- `phone`: an international number (a leading `+` or `00`, then 8 to 15 digits, optionally
  grouped by spaces, dots, dashes or parentheses), or a North American number written
  `(555) 123-4567` / `555-123-4567`. Off in the default policy: dates, amounts and
  reference numbers in chats look like phone numbers too often (docs/operators/privacy.md).

Masking keeps the last four letters/digits of a match and replaces the others with `*`,
keeping separators, so a support agent can still tell "the card ending 1111".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["DETECTORS", "Detector", "find_spans", "iban_valid", "luhn_valid", "mask_span"]

Span = tuple[int, int]

# Digits with at most one space or dash between them; runs longer than any card are split below.
_DIGIT_RUN = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,}(?![0-9])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])")
_SSN = re.compile(r"(?<![0-9-])([0-9]{3})-([0-9]{2})-([0-9]{4})(?![0-9-])")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+|00)[0-9](?:[ .\-]?\(?[0-9]\)?){7,14}(?![0-9])"
    r"|(?<![\w(])(?:\([0-9]{3}\) ?|[0-9]{3}[ .\-])[0-9]{3}[ .\-][0-9]{4}(?![0-9])"
)
_DIGIT_GROUP = re.compile(r"[0-9]+")
MAX_CARD_RUN_DIGITS: Final = 64  # a longer digit run is data, not a typed card number


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def _card_spans(text: str) -> list[Span]:
    spans: list[Span] = []
    for match in _DIGIT_RUN.finditer(text):
        groups = [(group.start(), group.end()) for group in _DIGIT_GROUP.finditer(match.group())]
        if sum(end - start for start, end in groups) > MAX_CARD_RUN_DIGITS:
            continue
        spans.extend((match.start() + start, match.start() + end) for start, end in _card_groups(match.group(), groups))
    return spans


def _card_groups(run: str, groups: list[Span]) -> list[Span]:
    """Spans of consecutive digit groups that hold 13 to 19 digits and pass Luhn, longest first.

    Only group boundaries are tried (a typed card's own separators), never arbitrary windows:
    a 20-digit reference number holds a Luhn-valid 16-digit window more often than not.
    """
    found: list[Span] = []
    first = 0
    while first < len(groups):
        for last in range(len(groups) - 1, first - 1, -1):
            start, end = groups[first][0], groups[last][1]
            digits = "".join(char for char in run[start:end] if char.isdigit())
            if 13 <= len(digits) <= 19 and luhn_valid(digits):
                found.append((start, end))
                first = last + 1
                break
        else:
            first += 1
    return found


def _iban_spans(text: str) -> list[Span]:
    spans: list[Span] = []
    for match in _IBAN.finditer(text):
        candidate = match.group()
        # A trailing group the regex swallowed ("IBAN DE89... thanks") is not part of it.
        while candidate and not iban_valid(candidate):
            if " " not in candidate:
                candidate = ""
                break
            candidate = candidate.rsplit(" ", 1)[0]
        if candidate:
            spans.append((match.start(), match.start() + len(candidate)))
    return spans


def _ssn_spans(text: str) -> list[Span]:
    spans: list[Span] = []
    for match in _SSN.finditer(text):
        area, group, serial = match.groups()
        if area in {"000", "666"} or area.startswith("9") or group == "00" or serial == "0000":
            continue
        spans.append(match.span())
    return spans


def _phone_spans(text: str) -> list[Span]:
    spans: list[Span] = []
    for match in _PHONE.finditer(text):
        digits = sum(char.isdigit() for char in match.group())
        if 8 <= digits <= 17:
            spans.append(match.span())
    return spans


@dataclass(frozen=True)
class Detector:
    name: str
    title: str  # for sentences: "a payment card number"
    find: Callable[[str], list[Span]]
    needs_digits: int  # a text with fewer digits cannot match: the cheap pre-check
    min_length: int = 0  # nor can a text shorter than the pattern's shortest match (a zip code, an IP)


DETECTORS: Final[dict[str, Detector]] = {
    detector.name: detector
    for detector in (
        Detector("iban", "an IBAN", _iban_spans, 2, 15),  # 2 letters, 2 check digits, 11 or more
        Detector("card", "a payment card number", _card_spans, 13, 13),
        Detector("ssn", "a US Social Security number", _ssn_spans, 9, 11),  # AAA-GG-SSSS
        Detector("phone", "a phone number", _phone_spans, 8, 9),  # + and 8 digits
    )
}


def find_spans(detector: Detector, text: str, digit_count: int) -> list[Span]:
    if digit_count < detector.needs_digits or len(text) < detector.min_length:
        return []
    return detector.find(text)


def mask_span(text: str, span: Span) -> str:
    """The text with the span's letters and digits masked but the last four."""
    start, end = span
    chunk = text[start:end]
    keep = 4
    masked = []
    for char in reversed(chunk):
        if char.isalnum():
            masked.append(char if keep > 0 else "*")
            keep -= 1
        else:
            masked.append(char)
    return text[:start] + "".join(reversed(masked)) + text[end:]
