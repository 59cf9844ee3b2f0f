"""A sentence a bot builder understands when a template compares text with a number.

Chat variables arrive as text: `{{ Score > 5 }}` with Score = "8" fails inside Jinja with
"'>' not supported between instances of 'str' and 'int'". The builder needs to know which
variable holds text and how to turn it into a number.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any, Final

_COMPARISON: Final = re.compile(r"'([<>=!]=?)' not supported between instances of '(\w+)' and '(\w+)'")
_KINDS: Final = {"str": "text", "int": "number", "float": "number", "NoneType": "empty value", "bool": "yes/no"}
_MAX_VALUE_CHARS: Final = 40


def explain_comparison(message: str, label: str, names: Collection[str], variables: Mapping[str, Any]) -> str | None:
    """None unless `message` is Jinja's comparison TypeError; then what to change, naming the variables."""
    found = _COMPARISON.search(message)
    if found is None:
        return None
    operator, left, right = found.groups()
    kinds = {_KINDS.get(left, left), _KINDS.get(right, right)}
    if kinds != {"text", "number"}:
        return (
            f"{label} compares a {_KINDS.get(left, left)} with a {_KINDS.get(right, right)} using '{operator}', "
            "which cannot be compared."
        )
    texts = sorted(name for name in names if isinstance(variables.get(name), str))
    if not texts:
        return (
            f"{label} compares text with a number using '{operator}'. "
            "Turn the text into a number first with | float (for example {{ Score | float > 5 }})."
        )
    shown = ", ".join(f"'{name}' holds the text {_quote(variables[name])}" for name in texts)
    return (
        f"{label} compares text with a number using '{operator}': the variable {shown}. "
        f"Turn it into a number first with | float, for example {{{{ {texts[0]} | float {operator} 5 }}}}."
    )


def _quote(value: str) -> str:
    text = value if len(value) <= _MAX_VALUE_CHARS else value[: _MAX_VALUE_CHARS - 1] + "…"
    return repr(text)
