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

from .models import ValueType

TRUE_WORDS = frozenset({"true", "yes", "y", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "n", "off", "0"})
_INTEGER = re.compile(r"[+-]?\d+")


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
    return str(value)


def to_number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise ConversionError(f"{to_text(value)} is a yes/no value, not a number")
    if isinstance(value, (int, float)):
        number: int | float = value
    elif isinstance(value, str):
        text = value.strip().replace("_", "")
        if _INTEGER.fullmatch(text):
            number = int(text)
        else:
            try:
                number = float(text)
            except ValueError:
                raise ConversionError(f"{excerpt(value)} is not a number") from None
    else:
        raise ConversionError(f"a {type(value).__name__} is not a number")
    if isinstance(number, float) and not math.isfinite(number):
        raise ConversionError(f"{excerpt(value)} is not a finite number")
    return number


def to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise ConversionError(f"{excerpt(to_text(value))} is not true/false (use true, false, yes, no, 1 or 0)")


def parse_datetime(value: Any) -> datetime:
    """An ISO-8601 date or date-time; a value without an offset is taken as UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
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
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise ConversionError(f"{excerpt(value)} is not valid JSON ({error.msg} at character {error.pos})") from None


def excerpt(value: Any, limit: int = 40) -> str:
    """`value` as text, quoted, cut to `limit` characters with `…`: how a value is quoted in a sentence."""
    text = to_text(value)
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


_CONVERTERS = {
    "string": to_text,
    "number": to_number,
    "boolean": to_boolean,
    "datetime": to_datetime_text,
    "json": to_json,
}
