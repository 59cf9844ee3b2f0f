"""What one template may cost, and the operator settings that change it.

The limits have a home of their own because three parts read them: the engine (source size,
cache size), every bounded operation (the work budget), and every limit error, which names
the environment variable an operator would raise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Final

from pydantic import Field

from ..core import Settings, env_name


class TemplateSettings(Settings):
    """The `QUICKBOT_TEMPLATE_*` variables; upper bounds keep one field from stalling the shared server."""

    title: ClassVar[str] = "Templates"
    env_prefix: ClassVar[str] = "QUICKBOT_TEMPLATE_"

    max_source_chars: int = Field(10_000, ge=1, le=1_000_000, description="Characters of template source in one field.")
    max_output_chars: int = Field(
        32_768,
        ge=1,
        le=10_000_000,
        description="Characters of rendered text in one field (and of any text on the way).",
    )
    max_items: int = Field(10_000, ge=1, le=1_000_000, description="Items of any list or range a template builds.")
    max_work: int = Field(
        50_000,
        ge=1,
        le=100_000_000,
        description="Steps of work per render (about one per loop pass, item or 32 characters).",
    )
    max_nesting: int = Field(20, ge=1, le=100, description="Depth of macro calls, recursive loops and nested values.")
    max_number_digits: int = Field(
        1_000, ge=1, le=4_000, description="Decimal digits of any number a template computes."
    )
    cache_size: int = Field(512, ge=1, le=1_000_000, description="Compiled templates kept in memory.")
    max_render_ms: int = Field(
        50, ge=1, le=10_000, description="Milliseconds of CPU one render may use before it is stopped."
    )
    max_execute_work: int = Field(
        500_000, ge=1, le=1_000_000_000, description="Steps of work all the templated fields of one execute may spend."
    )
    max_execute_ms: int = Field(
        500, ge=1, le=60_000, description="Milliseconds of CPU all the templated fields of one execute may use."
    )


#: Environment variable of each limit, so an error can tell an operator what to raise.
LIMIT_SETTINGS: Mapping[str, str] = {name: env_name(TemplateSettings, name) for name in TemplateSettings.model_fields}
_DEFAULTS: Final = {name: field.default for name, field in TemplateSettings.model_fields.items()}


@dataclass(frozen=True)
class TemplateLimits:
    """What one template may cost: the values of `TemplateSettings`, as the hot path reads them.

    The defaults fit a Segment message (at most 32 KB) and keep the worst template a bot
    builder can write at a few tens of milliseconds of CPU and a few megabytes.
    """

    max_source_chars: int = _DEFAULTS["max_source_chars"]
    max_output_chars: int = _DEFAULTS["max_output_chars"]
    max_items: int = _DEFAULTS["max_items"]
    max_work: int = _DEFAULTS["max_work"]
    max_nesting: int = _DEFAULTS["max_nesting"]
    max_number_digits: int = _DEFAULTS["max_number_digits"]
    cache_size: int = _DEFAULTS["cache_size"]
    max_render_ms: int = _DEFAULTS["max_render_ms"]
    max_execute_work: int = _DEFAULTS["max_execute_work"]
    max_execute_ms: int = _DEFAULTS["max_execute_ms"]
    #: `max_number_digits` in bits, computed once: it is read on the one-variable fast path.
    max_number_bits: int = field(init=False, repr=False, compare=False, default=0)
    #: `max_render_ms` in seconds, computed once: every render reads it.
    max_render_seconds: float = field(init=False, repr=False, compare=False, default=0.0)

    def __post_init__(self) -> None:
        # The settings model holds the bounds; limits built in code are checked by the same rules.
        TemplateSettings.defaults().with_overrides(**{name: getattr(self, name) for name in LIMIT_SETTINGS})
        object.__setattr__(self, "max_number_bits", math.ceil(self.max_number_digits * math.log2(10)))
        object.__setattr__(self, "max_render_seconds", self.max_render_ms / 1000)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TemplateLimits:
        """Read the `QUICKBOT_TEMPLATE_*` settings; an unset variable keeps its default."""
        return cls(**TemplateSettings.from_env(environ).model_dump())
