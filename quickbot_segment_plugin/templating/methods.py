"""Attributes and methods a template may use.

An allow-list per kind of value (text, lists, dictionaries, the loop object): anything not
listed is refused, because Python attributes are the classic way out of a sandbox. The text
methods that could build a huge string are sized before they run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext, Undefined

from .errors import one_line_excerpt
from .state import RenderState, active_state
from .values import check_size, cost, describe_object, text_size, too_long_error

_STRING_METHODS = frozenset(
    {
        "capitalize", "casefold", "center", "count", "endswith", "expandtabs", "find", "index",
        "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower",
        "isnumeric", "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower",
        "lstrip", "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex",
        "rjust", "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip",
        "swapcase", "title", "upper", "zfill",
    }
)  # fmt: skip
_SEQUENCE_METHODS = frozenset({"count", "index"})
_MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})
_LOOP_ATTRIBUTES = frozenset(
    {
        "index", "index0", "revindex", "revindex0", "first", "last", "length", "depth", "depth0",
        "previtem", "nextitem", "cycle", "changed",
    }
)  # fmt: skip


def allowed_attributes(obj: Any) -> frozenset[str]:
    if isinstance(obj, str):
        return _STRING_METHODS
    if isinstance(obj, (list, tuple)):
        return _SEQUENCE_METHODS
    if isinstance(obj, Mapping):
        return _MAPPING_METHODS
    if isinstance(obj, LoopContext):
        return _LOOP_ATTRIBUTES
    return frozenset()


def refused_attribute(obj: Any, attribute: str) -> SecurityError:
    return SecurityError(
        f"'{one_line_excerpt(attribute)}' cannot be used on {_kind_of(obj)} in a template; "
        "only the documented filters and text methods are available."
    )


def _kind_of(obj: Any) -> str:
    if isinstance(obj, Undefined):
        return "an unset variable"
    if isinstance(obj, str):
        return "text"
    if isinstance(obj, bool):
        return "a true/false value"
    if isinstance(obj, (int, float)):
        return "a number"
    if isinstance(obj, (list, tuple)):
        return "a list"
    if isinstance(obj, Mapping):
        return "a dictionary"
    return describe_object(obj)


def _check_pad(owner: str, width: Any, *args: Any, **kwargs: Any) -> None:
    state = active_state()
    if isinstance(width, int) and width > state.limits.max_output_chars:
        raise too_long_error(state.limits)


def _check_expandtabs(owner: str, tabsize: Any = 8, **kwargs: Any) -> None:
    state = active_state()
    if isinstance(tabsize, int) and len(owner) + owner.count("\t") * tabsize > state.limits.max_output_chars:
        raise too_long_error(state.limits)


def replaced_size(text: str, old: Any, new: Any, count: Any) -> int:
    if not (isinstance(old, str) and isinstance(new, str)):
        return len(text)
    occurrences = len(text) + 1 if old == "" else text.count(old)
    if isinstance(count, int) and 0 <= count < occurrences:
        occurrences = count
    return len(text) + occurrences * (len(new) - len(old))


def _check_replace(owner: str, old: Any, new: Any, count: Any = -1) -> None:
    state = active_state()
    if replaced_size(owner, old, new, count) > state.limits.max_output_chars:
        raise too_long_error(state.limits)


def joined_items(separator: str, items: Any, state: RenderState) -> list[Any]:
    """Materialize what `join` will join, and refuse it if the result would be too long."""
    cap = state.limits.max_output_chars
    listed: list[Any] = []
    total = 0
    for item in items:
        state.charge(1)
        listed.append(item)
        total += text_size(item, cap) + len(separator)
        if total > cap + len(separator) or len(listed) > state.limits.max_items:
            raise too_long_error(state.limits)
    return listed


_STRING_METHOD_CHECKS: Mapping[str, Callable[..., None]] = {
    "center": _check_pad,
    "ljust": _check_pad,
    "rjust": _check_pad,
    "zfill": _check_pad,
    "expandtabs": _check_expandtabs,
    "replace": _check_replace,
}


def call_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any], state: RenderState) -> Any:
    """Call an allowed method of a str, list, tuple or dict, bounded like the filters."""
    owner = method.__self__
    name = method.__name__
    if isinstance(owner, str) and name in _STRING_METHODS:
        state.charge(cost(owner, state))
        check = _STRING_METHOD_CHECKS.get(name)
        if check is not None:
            check(owner, *args, **kwargs)
        if name == "join" and args:
            args = (joined_items(owner, args[0], state), *args[1:])
        return check_size(method(*args, **kwargs), state)
    if isinstance(owner, (list, tuple)) and name in _SEQUENCE_METHODS:
        # `count` and `index` compare every item with the argument: both deep sizes matter.
        state.charge(cost(owner, state) + sum(cost(arg, state) for arg in args))
        return method(*args, **kwargs)
    if isinstance(owner, Mapping) and name in _MAPPING_METHODS:
        return method(*args, **kwargs)
    raise SecurityError(f"Calling '{one_line_excerpt(str(name))}' is not allowed in templates.")
