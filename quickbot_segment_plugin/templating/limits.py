"""What one template may cost, and the operator settings that change it.

The limits have a home of their own because three parts read them: the engine (source size,
cache size), every bounded operation (the work budget), and every limit error, which names
the environment variable an operator would raise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ..core import env_int

#: Environment variable of each limit, so an error can tell an operator what to raise.
LIMIT_SETTINGS: Mapping[str, str] = {
    "max_source_chars": "QUICKBOT_TEMPLATE_MAX_SOURCE_CHARS",
    "max_output_chars": "QUICKBOT_TEMPLATE_MAX_OUTPUT_CHARS",
    "max_items": "QUICKBOT_TEMPLATE_MAX_ITEMS",
    "max_work": "QUICKBOT_TEMPLATE_MAX_WORK",
    "max_nesting": "QUICKBOT_TEMPLATE_MAX_NESTING",
    "max_number_digits": "QUICKBOT_TEMPLATE_MAX_NUMBER_DIGITS",
    "cache_size": "QUICKBOT_TEMPLATE_CACHE_SIZE",
}

#: Upper bounds an operator may set; beyond them one field could stall the shared server.
_SETTING_MAXIMUMS: Mapping[str, int] = {
    "max_source_chars": 1_000_000,
    "max_output_chars": 10_000_000,
    "max_items": 1_000_000,
    "max_work": 100_000_000,
    "max_nesting": 100,
    "max_number_digits": 4_000,
    "cache_size": 1_000_000,
}


@dataclass(frozen=True)
class TemplateLimits:
    """What one template may cost. Each field is an operator setting (see `LIMIT_SETTINGS`).

    The defaults fit a Segment message (at most 32 KB) and keep the worst template a bot
    builder can write at a few tens of milliseconds of CPU and a few megabytes.
    """

    #: Characters of template source in one field (checked when the flow is saved).
    max_source_chars: int = 10_000
    #: Characters of rendered text in one field; also bounds every text value built on the way.
    max_output_chars: int = 32_768
    #: Items of any list or range a template builds.
    max_items: int = 10_000
    #: Steps of work per render (about one step per loop pass, list item or 32 characters).
    max_work: int = 50_000
    #: Depth of macro calls, recursive loops and nested values.
    max_nesting: int = 20
    #: Decimal digits of any number a template computes.
    max_number_digits: int = 1_000
    #: Compiled templates kept in memory (least recently used are dropped).
    cache_size: int = 512

    def __post_init__(self) -> None:
        for name, maximum in _SETTING_MAXIMUMS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
                raise ValueError(f"TemplateLimits.{name} must be a whole number from 1 to {maximum}.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TemplateLimits:
        """Read the `QUICKBOT_TEMPLATE_*` settings; an unset variable keeps its default."""
        defaults = cls()
        values = {
            name: env_int(
                setting,
                getattr(defaults, name),
                minimum=1,
                maximum=_SETTING_MAXIMUMS[name],
                environ=environ,
            )
            for name, setting in LIMIT_SETTINGS.items()
        }
        return cls(**values)

    @property
    def max_number_bits(self) -> int:
        return math.ceil(self.max_number_digits * math.log2(10))
