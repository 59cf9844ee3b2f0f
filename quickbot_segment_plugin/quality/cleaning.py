"""Cleaning a built Segment message, and checking Segment's reserved traits and properties.

Chat answers arrive with stray spaces, empty answers and free text where destinations expect
an address, a number or a date. Sent as they are, they pollute profiles for good: Segment
stores `" Lyon"` and `"Lyon"` as two cities, an email tool rejects `"no thanks"` as an
address, and a `revenue` of `"12 euros"` breaks every revenue chart. Segment's own checks
(Protocols) only report such values after the event is stored; here they are fixed or
stopped before the event leaves the bot.

What happens to a value is decided per rule (docs/bot-builders/cleaning.md):
- cleaned and sent (an info log): spaces trimmed around keys and text, an email's domain in
  lower case, a reserved number given as text (`"34"` -> `34`), a currency code in upper case,
  a reserved text field given as a number (`address.postalCode`);
- dropped (a warning log): empty values (empty text, null, empty lists and objects);
- refused, the event is not sent (an error log): an email trait that is not an address, a
  reserved trait or property of the wrong type (a destination would drop or misread it, and
  the bot builder fixes the flow once instead of losing data quietly), and values JSON cannot
  carry (NaN, infinities, non-text keys, other Python objects), which
  segment-analytics-python would otherwise drop from the event without a word.

The cleaner never changes a message that needs no cleaning: it returns the very same object,
so the payload a bot builder saw yesterday is byte for byte the payload sent today.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from math import isfinite
from typing import Any, Final, Literal

from ..core import PLUGIN_CONTEXT, describe
from ..options import ITEM_NOUNS, to_number

__all__ = [
    "CLEANING_ENV",
    "ISO_4217_CODES",
    "Finding",
    "clean_message",
    "first_refusal",
    "is_email_address",
    "value_check",
]

CLEANING_ENV: Final = "QUICKBOT_SEGMENT_CLEANING"

Level = Literal["info", "warning", "error"]
Outcome = Literal["cleaned", "dropped", "refused"]
Path = tuple[str | int, ...]

MAX_DEPTH: Final = 32  # deeper nesting is refused: no destination reads it, and it guards recursion
EXCERPT_CHARS: Final = 40

# The objects of a message a bot builder fills, and the noun the editor uses for their items.
CLEANED_OBJECTS: Final = ITEM_NOUNS

# A practical address check (one @, no spaces, a domain with a dot and a real top-level label),
# not RFC 5322's full grammar, which accepts addresses no mailbox provider hands out.
_EMAIL = re.compile(
    r"^(?P<local>[^\s@\"(),:;<>\[\]\\]+)@(?P<domain>(?:[^\W_](?:[\w-]*[^\W_])?\.)+(?:[^\W\d_]{2,}|xn--[\w-]+))$"
)
# ISO-8601 as Segment's spec writes dates: a calendar date, optionally with a time and an offset.
_ISO_DATE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,]\d{1,9})?)?(?:[Zz]|[+-](\d{2}):?(\d{2}))?)?$"
)

# Active ISO 4217 alphabetic codes (plus the recently replaced ANG, HRK, SLL, ZWL that old
# records still carry); XTS (testing) and XXX (no currency) make no sense for revenue.
_ISO_4217_TEXT: Final = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP
    BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB
    EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IQD IRR ISK JMD JOD
    JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU
    MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD
    RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY
    TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD
    XCG XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMW ZWG ZWL
"""
ISO_4217_CODES: Final = frozenset(_ISO_4217_TEXT.split())

# Segment's spec (Identify, Group and Track "reserved" fields) -> the kind of value it needs.
# Only fields whose wrong type breaks destinations are checked; free-text ones are not.
_EMAIL_KIND, _NUMBER, _DATE, _OBJECT, _TEXT, _CURRENCY = "email", "number", "date", "object", "text", "currency"
_ADDRESS_FIELDS: dict[tuple[str, ...], str] = {
    ("address", part): _TEXT for part in ("city", "country", "postalCode", "state", "street")
}
RESERVED_FIELDS: Final[dict[tuple[str, str], dict[tuple[str, ...], str]]] = {
    ("identify", "traits"): {
        ("email",): _EMAIL_KIND,
        ("age",): _NUMBER,
        ("birthday",): _DATE,
        ("createdAt",): _DATE,
        ("address",): _OBJECT,
        ("company",): _OBJECT,
        ("company", "employee_count"): _NUMBER,
        **_ADDRESS_FIELDS,
    },
    ("group", "traits"): {
        ("email",): _EMAIL_KIND,
        ("createdAt",): _DATE,
        ("address",): _OBJECT,
        **_ADDRESS_FIELDS,
    },
    ("track", "properties"): {("revenue",): _NUMBER, ("currency",): _CURRENCY},
}
_NOTHING_KEPT: Final[frozenset[str]] = frozenset()
# A reserved field as (path below its object, the keys of its parents, its own key, its kind), in table order.
_ReservedField = tuple[tuple[str, ...], tuple[str, ...], str, str]
# An action's reserved fields in one object, with their top-level keys: an object holding none
# of those (most events) has nothing to check.
_Reserved = tuple[frozenset[str], tuple[_ReservedField, ...]]


def _objects() -> tuple[tuple[str, str, frozenset[str], dict[str, _Reserved]], ...]:
    """(name, noun, keys kept as they are, action -> its reserved fields) for each cleaned object.

    The tables above, arranged once for the per-event walk.
    """
    reserved: dict[str, dict[str, _Reserved]] = {name: {} for name in CLEANED_OBJECTS}
    for (action, name), fields in RESERVED_FIELDS.items():
        reserved[name][action] = (
            frozenset(keys[0] for keys in fields),
            tuple((keys, keys[:-1], keys[-1], kind) for keys, kind in fields.items()),
        )
    return tuple(
        (name, noun, PLUGIN_CONTEXT if name == "context" else _NOTHING_KEPT, reserved[name])
        for name, noun in CLEANED_OBJECTS.items()
    )


_OBJECTS: Final = _objects()

_KIND_WORDS = {
    _NUMBER: "a number",
    _DATE: "an ISO-8601 date such as '1990-01-31' or '2026-01-31T12:00:00Z'",
    _OBJECT: "an object",
    _TEXT: "text",
}
_OBJECT_HINTS = {
    "address": "set it with keys such as address.city and address.country",
    "company": "set it with keys such as company.name and company.id",
}


@dataclass(frozen=True)
class Finding:
    """One thing the cleaner did or refused, in a sentence a bot builder reads."""

    rule: (
        str  # trim, empty_value, email_format, email_normalised, reserved_type, currency_code, not_json, duplicate_key
    )
    path: Path  # where in the message: ("traits", "address", "city")
    message: str
    level: Level
    outcome: Outcome


_DROP: Final = object()


def clean_message(message: dict[str, Any], normalise: bool = True) -> tuple[dict[str, Any], list[Finding]]:
    """(the message to send, what was done) for `message`, a built Segment message; never raises.

    The message to send is `message` itself when nothing changed. Refusals are findings (see
    `first_refusal`). With `normalise=False` (`QUICKBOT_SEGMENT_CLEANING=off`) nothing is
    changed and only values JSON cannot carry are refused, since those would be lost by the
    library either way.
    """
    findings: list[Finding] = []
    action = message.get("type", "")
    if type(action) is not str:
        action = str(action)
    result = message
    walker: _Walker | None = None
    for name, noun, kept, reserved_by_action in _OBJECTS:
        original = message.get(name)
        if not isinstance(original, dict):
            continue
        # Most objects need nothing: a read-only check is cheaper than the copy-on-write walk,
        # which runs only when the check cannot vouch for the object.
        if normalise and _untouched_members(original, 1, kept):
            cleaned = original
        else:
            if walker is None:
                walker = _Walker(findings, normalise)
            walker.noun = noun
            cleaned = walker.members(original, (name,), 1, kept)
        if normalise:
            reserved = reserved_by_action.get(action)
            if reserved is not None and not reserved[0].isdisjoint(cleaned):
                cleaned = _check_reserved(cleaned, name, noun, reserved[1], findings)
        if cleaned is not original:
            if result is message:
                result = dict(message)
            result[name] = cleaned
    return result, findings


def value_check(action: str, path: Path) -> Callable[[Any], bool] | None:
    """What `clean_message` asks of a scalar value at `path` of an `action` message, as a test of
    the value alone: True when cleaning sends it as it is and says nothing (with or without
    normalising). None: cleaning does not look there. The key's own treatment depends on the path
    only, so a message already cleaned untouched vouches for it (execution/slot_checks.py)."""
    if len(path) < 2 or path[0] not in CLEANED_OBJECTS:
        return None
    name = path[0]
    if name == "context" and path[1] in PLUGIN_CONTEXT:
        return None
    reserved = RESERVED_FIELDS.get((action, str(name)), {}).get(tuple(str(part) for part in path[1:]))
    if reserved is None:
        return _sent_as_it_is
    noun = CLEANED_OBJECTS[str(name)]

    def sent_as_it_is_and_reserved_fits(value: Any) -> bool:
        findings: list[Finding] = []
        return (
            _sent_as_it_is(value) and _reserved_value(value, reserved, path, noun, findings) is value and not findings
        )

    return sent_as_it_is_and_reserved_fits


def _sent_as_it_is(value: Any) -> bool:
    """`_untouched_value` for a scalar: no trimming, nothing empty, nothing JSON cannot carry."""
    kind = type(value)
    if kind is str:
        return bool(value) and value.strip() is value
    if kind is float:
        return isfinite(value)
    return kind is int or kind is bool


def first_refusal(findings: list[Finding]) -> Finding | None:
    """The finding that stops the event (the first refusal), or None when it may be sent."""
    for finding in findings:
        if finding.outcome == "refused":
            return finding
    return None


def is_email_address(text: str) -> bool:
    return _EMAIL.fullmatch(text) is not None


def label(noun: str, path: Path) -> str:
    """`Trait 'address.city'`, `Property 'interests[2]'`: how a field is named in every log."""
    dotted = dotted_path(path)
    return f"{noun[0].upper()}{noun[1:]} {dotted!r}" if dotted else f"The {noun} object"


def dotted_path(path: Path) -> str:
    """("address", "city") -> "address.city"; list positions as [i]."""
    dotted = ""
    for part in path:
        dotted += f"[{part}]" if isinstance(part, int) else (f".{part}" if dotted else part)
    return dotted


# The read-only check. Each answers True only when the walk below would return the very same
# object with no finding (with normalise on); anything unusual (a str or int subclass, a tuple,
# a value to clean or refuse) answers False and is left to the walk, which has the last word.
# `text.strip() is text` holds for an exact str with nothing to trim (CPython hands back the
# string itself, which the walk's copy-on-write relies on too); were it ever a copy, the check
# would just answer False.


def _untouched_members(obj: dict[Any, Any], depth: int, kept: frozenset[str] = _NOTHING_KEPT) -> bool:
    """For a dict at `depth` (its members at depth + 1); `kept` keys are not looked at, as in the walk."""
    for key, value in obj.items():
        if type(key) is not str:
            return False
        if kept and key in kept:
            continue
        if not key or key.strip() is not key:
            return False
        kind = type(value)
        # Scalars are checked here, saving a call per member; containers (and anything unusual) go to
        # _untouched_value, the one place that applies MAX_DEPTH.
        if kind is str:
            if not value or value.strip() is not value:
                return False
        elif kind is float:
            if not isfinite(value):
                return False
        elif kind is not int and kind is not bool and not _untouched_value(value, depth + 1):
            return False
    return True


def _untouched_items(items: list[Any], depth: int) -> bool:
    """For a list at `depth` (its items at depth + 1)."""
    for value in items:  # noqa: SIM110 - a generator would cost more than the loop it replaces
        if not _untouched_value(value, depth + 1):
            return False
    return True


def _untouched_value(value: Any, depth: int) -> bool:
    """For a value at `depth`; a container there is refused past MAX_DEPTH."""
    kind = type(value)
    if kind is str:
        return bool(value) and value.strip() is value
    if kind is int or kind is bool:
        return True
    if kind is float:
        return isfinite(value)
    if kind is dict:
        return bool(value) and depth <= MAX_DEPTH and _untouched_members(value, depth)
    if kind is list:
        return bool(value) and depth <= MAX_DEPTH and _untouched_items(value, depth)
    return False


class _Walker:
    """Copy-on-write walk of a message's objects: containers are copied only when something inside changed.

    A value's path is passed as its parent's path and its own key, and made into a tuple only
    when it is needed (a finding, or a container whose members need it): most values have none.
    """

    __slots__ = ("findings", "normalise", "noun")

    def __init__(self, findings: list[Finding], normalise: bool) -> None:
        self.noun = ""  # set for each object walked
        self.findings = findings
        self.normalise = normalise

    def members(
        self, value: dict[Any, Any], path: Path, depth: int, kept: frozenset[str] = _NOTHING_KEPT
    ) -> dict[str, Any]:
        """The cleaned copy of a dict (or `value` itself when nothing changed); `kept` keys pass as they are."""
        normalise = self.normalise
        changed = False
        cleaned: dict[str, Any] = {}
        for key, inner in value.items():
            if kept and key in kept:
                cleaned[key] = inner
                continue
            if not isinstance(key, str):
                self._refuse("not_json", path, f"has a key {repr(key)[:EXCERPT_CHARS]} that is not text, as JSON needs")
                changed = True
                continue
            new_key = key
            if normalise:
                new_key = key.strip()
                if not new_key:
                    self._refuse("not_json", path, f"has an empty key {key!r}")
                    changed = True
                    continue
                if new_key != key:
                    self._note("trim", (*path, new_key), "had spaces around its key; they were removed", "info")
            if new_key in cleaned:
                self._refuse(
                    "duplicate_key",
                    (*path, new_key),
                    "is set twice (keys that differ only by spaces around them); keep one of them",
                )
                changed = True
                continue
            new_value = self.value(inner, path, new_key, depth + 1)
            if new_value is _DROP:
                changed = True
                continue
            if new_key != key or new_value is not inner:
                changed = True
            cleaned[new_key] = new_value
        return cleaned if changed else value

    def value(self, value: Any, parent: Path, key: str | int, depth: int) -> Any:
        """The value at (*parent, key) to send, or _DROP."""
        if isinstance(value, str):
            if not self.normalise:
                return value
            stripped = value.strip()
            if not stripped:
                return self._empty(parent, key)
            if stripped != value:
                self._note("trim", (*parent, key), "had spaces around its value; they were removed", "info")
            return stripped
        if value is None:
            return self._empty(parent, key) if self.normalise else value
        if isinstance(value, (bool, int)):
            return value
        if isinstance(value, float):
            if not isfinite(value):
                word = "NaN (not a number)" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
                self._refuse("not_json", (*parent, key), f"is {word}, a value JSON cannot carry")
            return value
        if depth > MAX_DEPTH:
            self._refuse("not_json", (*parent, key), f"is nested more than {MAX_DEPTH} levels deep")
            return _DROP
        if isinstance(value, dict):
            if not value:
                return self._empty(parent, key) if self.normalise else value
            cleaned = self.members(value, (*parent, key), depth)
            if not cleaned and self.normalise:
                return _DROP  # every member was empty, each one already named in a warning
            return cleaned
        if isinstance(value, (list, tuple)):
            if not value:
                return self._empty(parent, key) if self.normalise else value
            return self._items(value, (*parent, key), depth)
        self._refuse("not_json", (*parent, key), f"is a {type(value).__name__}, which cannot be sent as JSON")
        return _DROP

    def _items(self, value: list[Any] | tuple[Any, ...], path: Path, depth: int) -> Any:
        changed = isinstance(value, tuple)  # JSON has no tuples: sent as the list it would become
        cleaned = []
        for index, inner in enumerate(value):
            new_value = self.value(inner, path, index, depth + 1)
            if new_value is _DROP:
                changed = True
                continue
            changed = changed or new_value is not inner
            cleaned.append(new_value)
        if not cleaned and self.normalise:
            return _DROP
        return cleaned if changed else value

    def _empty(self, parent: Path, key: str | int) -> Any:
        self._note("empty_value", (*parent, key), "is empty; it was not sent", "warning", outcome="dropped")
        return _DROP

    def _note(self, rule: str, path: Path, text: str, level: Level, outcome: Outcome = "cleaned") -> None:
        self.findings.append(Finding(rule, path, f"{label(self.noun, path[1:])} {text}.", level, outcome))

    def _refuse(self, rule: str, path: Path, text: str) -> None:
        self.findings.append(
            Finding(rule, path, f"{label(self.noun, path[1:])} {text}; the event was not sent.", "error", "refused")
        )


def _check_reserved(
    obj: dict[str, Any], name: str, noun: str, fields: tuple[_ReservedField, ...], findings: list[Finding]
) -> dict[str, Any]:
    result = obj
    for keys, parents, last, kind in fields:
        parent: Any = result
        for key in parents:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or last not in parent:
            continue
        value = parent[last]
        new_value = _reserved_value(value, kind, (name, *keys), noun, findings)
        if new_value is not value:
            result = _replaced(result, keys, new_value)
    return result


def _reserved_value(value: Any, kind: str, path: Path, noun: str, findings: list[Finding]) -> Any:
    """The value to send (changed when cleaned); a refusal is recorded as a finding.

    The sentences are written only for a finding: most reserved values are fine as they are.
    """
    if kind == _EMAIL_KIND:
        if not isinstance(value, str) or not is_email_address(value):
            return _refuse_reserved(value, path, noun, findings, "email_format", "an email address")
        local, _, domain = value.rpartition("@")
        normalised = f"{local}@{domain.lower()}"
        if normalised == value:
            return value
        text = f"was sent as {normalised!r}: its domain in lower case"
        return _cleaned_reserved(normalised, path, noun, findings, "email_normalised", text)
    if kind == _NUMBER:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                number = to_number(value)
            except ValueError:
                return _refuse_reserved(value, path, noun, findings, "reserved_type", _KIND_WORDS[_NUMBER])
            text = f"was sent as the number {number!r}, not the text {value!r}"
            return _cleaned_reserved(number, path, noun, findings, "reserved_type", text)
        return _refuse_reserved(value, path, noun, findings, "reserved_type", _KIND_WORDS[_NUMBER])
    if kind == _DATE:
        if isinstance(value, str) and _is_iso_date(value):
            return value
        return _refuse_reserved(value, path, noun, findings, "reserved_type", _KIND_WORDS[_DATE])
    if kind == _OBJECT:
        if isinstance(value, dict):
            return value
        hint = _OBJECT_HINTS.get(str(path[-1]), "")
        return _refuse_reserved(value, path, noun, findings, "reserved_type", _KIND_WORDS[_OBJECT], hint)
    if kind == _TEXT:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            text = str(value)
            return _cleaned_reserved(
                text, path, noun, findings, "reserved_type", f"was sent as the text {text!r}, not a number"
            )
        return _refuse_reserved(value, path, noun, findings, "reserved_type", _KIND_WORDS[_TEXT])
    if kind == _CURRENCY:
        code = value.upper() if isinstance(value, str) else None
        if code not in ISO_4217_CODES:
            need = "an ISO 4217 currency code such as 'USD' or 'EUR'"
            return _refuse_reserved(value, path, noun, findings, "currency_code", need)
        if code == value:
            return value
        text = f"was sent as {code!r}: ISO 4217 codes are upper case"
        return _cleaned_reserved(code, path, noun, findings, "currency_code", text)
    raise AssertionError(f"unknown reserved kind {kind}")  # pragma: no cover - the table above is closed


def _refuse_reserved(
    value: Any, path: Path, noun: str, findings: list[Finding], rule: str, need: str, hint: str = ""
) -> Any:
    advice = f"; {hint}" if hint else ""
    text = (
        f"{label(noun, path[1:])} must be {need} (Segment's reserved {noun}), "
        f"got {describe(value, EXCERPT_CHARS)}{advice}; "
        "the event was not sent."
    )
    findings.append(Finding(rule, path, text, "error", "refused"))
    return value


def _cleaned_reserved(new_value: Any, path: Path, noun: str, findings: list[Finding], rule: str, text: str) -> Any:
    findings.append(Finding(rule, path, f"{label(noun, path[1:])} {text}.", "info", "cleaned"))
    return new_value


def _is_iso_date(text: str) -> bool:
    match = _ISO_DATE.fullmatch(text)
    if match is None:
        return False
    year, month, day, hour, minute, second, offset_hours, offset_minutes = (
        int(group) if group is not None else 0 for group in match.groups()
    )
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        return False  # the right shape but not a real day or time (2026-02-30, 25:00)
    return offset_hours <= 23 and offset_minutes <= 59


def _replaced(obj: dict[str, Any], keys: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of `obj` with the value at `keys` replaced; containers on the way are copied."""
    copy = dict(obj)
    if len(keys) == 1:
        copy[keys[0]] = value
    else:
        copy[keys[0]] = _replaced(copy[keys[0]], keys[1:], value)
    return copy
