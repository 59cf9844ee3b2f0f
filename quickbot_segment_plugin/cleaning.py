"""Cleaning a built Segment message, and checking Segment's reserved traits and properties.

Chat answers arrive with stray spaces, empty answers and free text where destinations expect
an address, a number or a date. Sent as they are, they pollute profiles for good: Segment
stores `" Lyon"` and `"Lyon"` as two cities, an email tool rejects `"no thanks"` as an
address, and a `revenue` of `"12 euros"` breaks every revenue chart. Segment's own checks
(Protocols) only report such values after the event is stored; here they are fixed or
stopped before the event leaves the bot.

What happens to a value is decided per rule (README, "Data quality"):
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from .values import to_number

__all__ = [
    "CLEANING_ENV",
    "ISO_4217_CODES",
    "Cleaned",
    "Finding",
    "clean_message",
    "is_email_address",
]

CLEANING_ENV: Final = "QUICKBOT_SEGMENT_CLEANING"

Level = Literal["info", "warning", "error"]
Outcome = Literal["cleaned", "dropped", "refused"]
Path = tuple[str | int, ...]

MAX_DEPTH: Final = 32  # deeper nesting is refused: no destination reads it, and it guards recursion
EXCERPT_CHARS: Final = 40

# The objects of a message a bot builder fills, and the noun the editor uses for their items.
CLEANED_OBJECTS: Final = {"traits": "trait", "properties": "property", "context": "context item"}
# Context members the plugin writes itself (messages.py): not the bot builder's to clean.
PLUGIN_CONTEXT_KEYS: Final = frozenset({"library", "quickbot"})

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


@dataclass
class Cleaned:
    """The message to send (the given object itself when nothing changed) and what was done."""

    message: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return any(finding.outcome == "refused" for finding in self.findings)


_DROP: Final = object()


def clean_message(message: dict[str, Any], *, normalise: bool = True) -> Cleaned:
    """Clean `message` (a built Segment message); never raises, refusals are findings.

    With `normalise=False` (`QUICKBOT_SEGMENT_CLEANING=off`) nothing is changed and only values
    JSON cannot carry are refused, since those would be lost by the library either way.
    """
    findings: list[Finding] = []
    action = str(message.get("type", ""))
    result = message
    for name, noun in CLEANED_OBJECTS.items():
        original = message.get(name)
        if not isinstance(original, dict):
            continue
        walker = _Walker(noun, findings, normalise)
        kept = PLUGIN_CONTEXT_KEYS if name == "context" else frozenset()
        cleaned = walker.members(original, (name,), depth=1, kept=kept)
        if normalise:
            reserved = RESERVED_FIELDS.get((action, name))
            if reserved:
                cleaned = _check_reserved(cleaned, name, noun, reserved, findings)
        if cleaned is not original:
            if result is message:
                result = dict(message)
            result[name] = cleaned
    return Cleaned(result, findings)


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


class _Walker:
    """Copy-on-write walk of one object: containers are copied only when something inside changed."""

    def __init__(self, noun: str, findings: list[Finding], normalise: bool) -> None:
        self.noun = noun
        self.findings = findings
        self.normalise = normalise
        self.refused = False

    def members(
        self, value: dict[Any, Any], path: Path, depth: int, kept: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        """The cleaned copy of a dict (or `value` itself when nothing changed); `kept` keys pass as they are."""
        changed = False
        cleaned: dict[str, Any] = {}
        for key, inner in value.items():
            if key in kept:
                cleaned[key] = inner
                continue
            if not isinstance(key, str):
                self._refuse("not_json", path, f"has a key {repr(key)[:EXCERPT_CHARS]} that is not text, as JSON needs")
                changed = True
                continue
            new_key = key
            if self.normalise:
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
            new_value = self.value(inner, (*path, new_key), depth + 1)
            if new_value is _DROP:
                changed = True
                continue
            if new_key != key or new_value is not inner:
                changed = True
            cleaned[new_key] = new_value
        return cleaned if changed else value

    def value(self, value: Any, path: Path, depth: int) -> Any:
        if isinstance(value, str):
            return self._text(value, path)
        if value is None:
            return self._empty(value, path)
        if isinstance(value, (bool, int)):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                word = "NaN (not a number)" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
                self._refuse("not_json", path, f"is {word}, a value JSON cannot carry")
            return value
        if depth > MAX_DEPTH:
            self._refuse("not_json", path, f"is nested more than {MAX_DEPTH} levels deep")
            return _DROP
        if isinstance(value, dict):
            if not value:
                return self._empty(value, path)
            cleaned = self.members(value, path, depth)
            if not cleaned and self.normalise:
                return _DROP  # every member was empty, each one already named in a warning
            return cleaned
        if isinstance(value, (list, tuple)):
            return self._items(value, path, depth)
        self._refuse("not_json", path, f"is a {type(value).__name__}, which cannot be sent as JSON")
        return _DROP

    def _items(self, value: list[Any] | tuple[Any, ...], path: Path, depth: int) -> Any:
        if not value:
            return self._empty(value, path)
        changed = isinstance(value, tuple)  # JSON has no tuples: sent as the list it would become
        cleaned = []
        for index, inner in enumerate(value):
            new_value = self.value(inner, (*path, index), depth + 1)
            if new_value is _DROP:
                changed = True
                continue
            changed = changed or new_value is not inner
            cleaned.append(new_value)
        if not cleaned and self.normalise:
            return _DROP
        return cleaned if changed else value

    def _text(self, value: str, path: Path) -> Any:
        if not self.normalise:
            return value
        stripped = value.strip()
        if not stripped:
            return self._empty(value, path)
        if stripped != value:
            self._note("trim", path, "had spaces around its value; they were removed", "info")
        return stripped

    def _empty(self, value: Any, path: Path) -> Any:
        if not self.normalise:
            return value
        self._note("empty_value", path, "is empty; it was not sent", "warning", outcome="dropped")
        return _DROP

    def _note(self, rule: str, path: Path, text: str, level: Level, outcome: Outcome = "cleaned") -> None:
        self.findings.append(Finding(rule, path, f"{label(self.noun, path[1:])} {text}.", level, outcome))

    def _refuse(self, rule: str, path: Path, text: str) -> None:
        self.refused = True
        self.findings.append(
            Finding(rule, path, f"{label(self.noun, path[1:])} {text}; the event was not sent.", "error", "refused")
        )


def _check_reserved(
    obj: dict[str, Any], name: str, noun: str, reserved: Mapping[tuple[str, ...], str], findings: list[Finding]
) -> dict[str, Any]:
    result = obj
    for keys, kind in reserved.items():
        parent: Any = result
        for key in keys[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or keys[-1] not in parent:
            continue
        value = parent[keys[-1]]
        new_value = _reserved_value(value, kind, (name, *keys), noun, findings)
        if new_value is not value:
            result = _replaced(result, keys, new_value)
    return result


def _reserved_value(value: Any, kind: str, path: Path, noun: str, findings: list[Finding]) -> Any:
    """The value to send (changed when cleaned); a refusal is recorded as a finding."""
    what = label(noun, path[1:])
    reserved = f"Segment's reserved {noun}"

    def refuse(rule: str, need: str, hint: str = "") -> Any:
        got = _describe(value)
        advice = f"; {hint}" if hint else ""
        text = f"{what} must be {need} ({reserved}), got {got}{advice}; the event was not sent."
        findings.append(Finding(rule, path, text, "error", "refused"))
        return value

    def cleaned(rule: str, new_value: Any, text: str) -> Any:
        findings.append(Finding(rule, path, f"{what} {text}.", "info", "cleaned"))
        return new_value

    if kind == _EMAIL_KIND:
        if not isinstance(value, str) or not is_email_address(value):
            return refuse("email_format", "an email address")
        local, _, domain = value.rpartition("@")
        normalised = f"{local}@{domain.lower()}"
        if normalised == value:
            return value
        return cleaned("email_normalised", normalised, f"was sent as {normalised!r}: its domain in lower case")
    if kind == _NUMBER:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                number = to_number(value)
            except ValueError:
                return refuse("reserved_type", _KIND_WORDS[_NUMBER])
            return cleaned("reserved_type", number, f"was sent as the number {number!r}, not the text {value!r}")
        return refuse("reserved_type", _KIND_WORDS[_NUMBER])
    if kind == _DATE:
        if isinstance(value, str) and _is_iso_date(value):
            return value
        return refuse("reserved_type", _KIND_WORDS[_DATE])
    if kind == _OBJECT:
        if isinstance(value, dict):
            return value
        return refuse("reserved_type", _KIND_WORDS[_OBJECT], _OBJECT_HINTS.get(str(path[-1]), ""))
    if kind == _TEXT:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            text = str(value)
            return cleaned("reserved_type", text, f"was sent as the text {text!r}, not a number")
        return refuse("reserved_type", _KIND_WORDS[_TEXT])
    if kind == _CURRENCY:
        code = value.upper() if isinstance(value, str) else None
        if code not in ISO_4217_CODES:
            return refuse("currency_code", "an ISO 4217 currency code such as 'USD' or 'EUR'")
        if code == value:
            return value
        return cleaned("currency_code", code, f"was sent as {code!r}: ISO 4217 codes are upper case")
    raise AssertionError(f"unknown reserved kind {kind}")  # pragma: no cover - the table above is closed


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


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the yes/no value {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return _excerpt(value)
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _excerpt(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…")
