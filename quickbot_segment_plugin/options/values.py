"""Converting a rendered value to the type a bot builder asked for (`type` of an item).

Chat variables arrive as text ("42", "yes"), while destinations such as Amplitude or a
warehouse need numbers, booleans and dates to be typed to aggregate them; a value that does
not convert is an error naming the item rather than a string that silently breaks a chart.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

from ..core import FALSE_LIST, TRUE_LIST, Truth, excerpt, parse_iso8601, truth_of
from .models import ValueType

_INTEGER = re.compile(r"[+-]?\d+")
#: Digits of the longest whole number a value may have (Python refuses to read or print more
#: than 4,300; no analytics destination keeps more than about 20).
MAX_INTEGER_DIGITS = 1_000
_MAX_INTEGER_BITS = math.ceil(MAX_INTEGER_DIGITS * math.log2(10))
#: Levels of nesting of a `json` value: the Segment library and destinations recurse into it.
MAX_JSON_DEPTH = 32


class ConversionError(ValueError):
    """The value cannot be read as the requested type; the text is shown to the bot builder."""


def convert(value: Any, value_type: ValueType) -> Any:
    converter = _CONVERTERS[value_type]
    return converter(value)


def to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int) and value.bit_length() > _MAX_INTEGER_BITS:
        raise ConversionError(f"a number can have at most {MAX_INTEGER_DIGITS:,} digits")
    return str(value)


def to_number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise ConversionError(f"{to_text(value)} is a yes/no value, not a number")
    if isinstance(value, int) and value.bit_length() > _MAX_INTEGER_BITS:
        raise ConversionError(f"a number can have at most {MAX_INTEGER_DIGITS:,} digits")
    if isinstance(value, (int, float)):
        number: int | float = value
    elif isinstance(value, str):
        text = value.strip().replace("_", "")
        if _INTEGER.fullmatch(text):
            if len(text.lstrip("+-")) > MAX_INTEGER_DIGITS:
                raise ConversionError(
                    f"{excerpt(value)} has {len(text.lstrip('+-')):,} digits; a number can have at most "
                    f"{MAX_INTEGER_DIGITS:,}"
                )
            number = int(text)
        else:
            try:
                number = float(text)
            except ValueError:
                raise ConversionError(f"{excerpt(value)} is not a number") from None
    else:
        raise ConversionError(f"a {type(value).__name__} is not a number")
    if isinstance(number, float) and not math.isfinite(number):
        raise ConversionError(f"{excerpt(to_text(value))} is not a finite number")
    return number


def to_boolean(value: Any) -> bool:
    """The yes/no table of truth.py; anything else (including none/null) is an error here."""
    truth = truth_of(value)
    if truth is Truth.TRUE:
        return True
    if truth is Truth.FALSE:
        return False
    raise ConversionError(f"{excerpt(to_text(value))} is not a yes/no word (true: {TRUE_LIST}; false: {FALSE_LIST})")


def parse_datetime(value: Any) -> datetime:
    """An ISO-8601 date or date-time; a value without an offset is taken as UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            return parse_iso8601(value)
        except ValueError:
            raise ConversionError(
                f"{excerpt(value)} is not an ISO-8601 date-time (for example 2026-01-31T12:00:00Z)"
            ) from None
    else:
        raise ConversionError(f"a {type(value).__name__} is not a date-time")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def to_datetime_text(value: Any) -> str:
    return parse_datetime(value).isoformat()


def to_json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise ConversionError(f"{excerpt(value)} is not valid JSON ({error.msg} at character {error.pos})") from None
    except RecursionError:
        raise ConversionError(f"{excerpt(value)} nests too deeply (at most {MAX_JSON_DEPTH} levels)") from None
    except ValueError:  # a number past Python's digit limit
        raise ConversionError(f"{excerpt(value)} holds a number with too many digits") from None
    if _depth_over(parsed, MAX_JSON_DEPTH):
        raise ConversionError(f"{excerpt(value)} nests too deeply (at most {MAX_JSON_DEPTH} levels)")
    return parsed


def _depth_over(value: Any, limit: int) -> bool:
    """Whether JSON data nests deeper than `limit` (iterative: the data may nest past Python's stack)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > limit:
                return True
            stack.extend((member, depth + 1) for member in (item.values() if isinstance(item, dict) else item))
    return False


_CONVERTERS = {
    "string": to_text,
    "number": to_number,
    "boolean": to_boolean,
    "datetime": to_datetime_text,
    "json": to_json,
}
