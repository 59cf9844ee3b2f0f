"""One schema of a plan compiled into checks: jsonschema's validator, which explains a violation,
and the fast check of fast_schema.py, which clears a valid event without it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import Any

from ..cleaning import is_email_address
from .compiled import SchemaCheck
from .errors import TrackingPlanError
from .fast_schema import compile_check

__all__ = ["Schema", "schema_check"]

Schema = Mapping[str, Any]

_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))$")


def schema_check(schema: Schema, where: str) -> SchemaCheck:
    """The checks for `schema`; TrackingPlanError, naming `where`, when it is no valid JSON Schema."""
    # Imported here, not at module import: jsonschema reads its meta-schemas from disk when
    # imported, and the host contract forbids I/O when the plugin loads.
    from jsonschema import Draft7Validator
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    cls = validator_for(schema, default=Draft7Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as error:
        at = "/".join(str(part) for part in error.absolute_path)
        raise TrackingPlanError(
            f"{where} is not a valid JSON Schema ({error.message}{' at ' + at if at else ''})"
        ) from None
    checker = _formats()
    return SchemaCheck(cls(schema, format_checker=checker), compile_check(schema, cls.VALIDATORS, checker))


def _is_date_time(instance: object) -> bool:
    if not isinstance(instance, str):
        return True  # `format` only constrains strings
    match = _RFC3339.fullmatch(instance)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(group) for group in match.groups()[:6])
    try:
        datetime(year, month, day, hour, minute, min(second, 59))  # RFC 3339 allows a leap second
    except ValueError:
        return False
    return True


def _is_email(instance: object) -> bool:
    return not isinstance(instance, str) or is_email_address(instance)


@cache
def _formats() -> Any:
    """The formats Segment's editor writes ("date-time" for its "Date time" type, "email") are
    checked without optional packages; other known formats use jsonschema's own checks."""
    from jsonschema import FormatChecker

    checker = FormatChecker()
    checker.checks("date-time")(_is_date_time)
    checker.checks("email")(_is_email)
    return checker
