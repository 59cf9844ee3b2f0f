"""Reading operator settings from environment variables, with errors that name the variable.

Operators configure the plugin only through documented `QUICKBOT_*` variables (README,
"Operator settings"); a malformed value stops with a message that says which variable and
what it should look like, instead of falling back to a default the operator did not choose.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

from .errors import ConfigurationError

Number = TypeVar("Number", int, float)


def env_str(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or default


def env_int(
    name: str,
    default: int,
    *,
    minimum: int = 0,
    maximum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, got {raw!r}.", field=name) from None
    return _check_range(name, value, minimum, maximum)


def env_float(
    name: str,
    default: float,
    *,
    minimum: float = 0.0,
    maximum: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> float:
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}.", field=name) from None
    return _check_range(name, value, minimum, maximum)


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    raw = (os.environ if environ is None else environ).get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}.", field=name)


def _check_range(name: str, value: Number, minimum: float, maximum: float | None) -> Number:
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ConfigurationError(f"{name} must be at least {minimum}{upper}, got {value}.", field=name)
    return value
