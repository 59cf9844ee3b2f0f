"""`validate` on a flow file: a template naming a variable the flow declares with other casing.

Variable names are case-sensitive: `{{Customer Id}}` in a flow that declares `Customer ID`
renders empty in every conversation, and nothing else points at the typo. Only names close to
a declared one are reported: a flow also reads variables its other blocks set at run time.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import Any, Final

from ..templating import TemplateError, default_engine

RULE: Final = "variable_name_case"
_CUTOFF: Final = 0.85


def variable_name_warnings(options: Any, declared: Mapping[str, Any]) -> list[dict[str, str]]:
    """Warnings `{"path", "message", "rule"}` for names used in `options` that look like a declared one."""
    if not declared:
        return []
    by_folded: dict[str, str] = {_fold(name): name for name in declared}
    warnings = []
    for path, source in _templates(options, ""):
        try:
            used = default_engine().compile(source).variables
        except TemplateError:
            continue  # validate() reports the template itself
        for name in sorted(used):
            if name in declared:
                continue
            suggestion = by_folded.get(_fold(name))
            if suggestion is None:
                close = difflib.get_close_matches(name, list(declared), n=1, cutoff=_CUTOFF)
                suggestion = close[0] if close else None
            if suggestion is not None:
                warnings.append(
                    {
                        "path": path,
                        "message": f"{{{{{name}}}}} is not a variable of this flow; did you mean "
                        f"{{{{{suggestion}}}}}? Variable names are case-sensitive, so this renders empty.",
                        "rule": RULE,
                    }
                )
    return warnings


def _fold(name: str) -> str:
    return " ".join(name.split()).casefold()


def _templates(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        if "{{" in value or "{%" in value:
            yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _templates(item, f"{path}/{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _templates(item, f"{path}/{index}" if path else str(index))
