"""Filters and tests: the allow-list, each wrapped to charge work and bound its result.

Jinja's own filters know nothing of the work budget or the size limits; each allowed one is
wrapped so it pays for its input and has its result checked, and the few that could build a
huge value from a small input (`center`, `indent`, `join`, `batch`...) are checked before
they run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2.filters import make_attrgetter
from jinja2.runtime import Context, Undefined
from jinja2.tests import TESTS
from jinja2.utils import _PassArg, pass_context

from .methods import joined_items, replaced_size
from .operators import percent_format
from .state import CALL_STEPS, RecordingUndefined, RenderState, active_state
from .values import check_size, cost, counted, text_size, to_data, to_text, too_long_error, too_many_items


def _check_center(context: Context, state: RenderState, value: Any, width: Any = 80) -> Any:
    if isinstance(width, int) and width > state.limits.max_output_chars:
        raise too_long_error(state.limits)
    return value


def _as_text(value: Any, state: RenderState) -> str:
    """The text a filter will make of its input (already sized by the `makes_text` check)."""
    return value if isinstance(value, str) else to_text(value, state)


def _check_indent(
    context: Context, state: RenderState, value: Any, width: Any = 4, first: Any = False, blank: Any = False
) -> Any:
    text = _as_text(value, state)
    step = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    if len(text) + (text.count("\n") + 1) * max(step, 0) > state.limits.max_output_chars:
        raise too_long_error(state.limits)
    return value


def _format_filter(value: Any, *args: Any, **kwargs: Any) -> str:
    """`'%s and %s'|format(a, b)`: Jinja's `format`, sized exactly and printing data only."""
    if args and kwargs:
        raise TypeError("format() takes either positional or keyword arguments, not both")
    state = active_state()
    return percent_format(_as_text(value, state), kwargs or args, state)


def _string_filter(value: Any) -> str:
    """`x|string`: the text `{{ x }}` would print; functions and other non-data are refused."""
    return _as_text(value, active_state())


def _check_replace_filter(
    context: Context, state: RenderState, value: Any, old: Any, new: Any, count: Any = None
) -> Any:
    old_text, new_text = _as_text(old, state), _as_text(new, state)  # Jinja applies str() to both
    if replaced_size(_as_text(value, state), old_text, new_text, count) > state.limits.max_output_chars:
        raise too_long_error(state.limits)
    return value


def _check_join(context: Context, state: RenderState, value: Any, d: Any = "", attribute: Any = None) -> Any:
    separator = _as_text(d, state)
    if attribute is not None:
        getter = make_attrgetter(context.environment, attribute)
        value = [getter(item) for item in counted(value, state, 4)]
    return [_as_text(item, state) for item in joined_items(separator, value, state)]


def _check_urlencode(context: Context, state: RenderState, value: Any) -> Any:
    """`urlencode` encodes a dictionary or list as a query string: give it plain data only."""
    if isinstance(value, (str, Undefined)):
        return _as_text(value, state)
    data = to_data(value, state)
    if isinstance(data, (dict, list)):
        cap = state.limits.max_output_chars
        if text_size(data, cap) * 3 > cap:  # percent-encoding at most triples the text
            raise too_long_error(state.limits)
        return data
    return _as_text(data, state)


def _check_item_count(count: Any, state: RenderState) -> None:
    if isinstance(count, int) and count > state.limits.max_items:
        raise too_many_items(state.limits)


def _check_batch(context: Context, state: RenderState, value: Any, linecount: Any, fill_with: Any = None) -> Any:
    _check_item_count(linecount, state)  # `batch(10**9, 'x')` pads the last batch to that size
    return value


def _check_slice(context: Context, state: RenderState, value: Any, slices: Any, fill_with: Any = None) -> Any:
    _check_item_count(slices, state)  # `slice(10**9)` loops that many times
    return value


def _check_sum(context: Context, state: RenderState, value: Any, attribute: Any = None, start: Any = 0) -> Any:
    if not isinstance(start, (int, float)):  # sum(start=[]) of lists is quadratic
        raise TypeError("sum() adds numbers; its start value must be a number")
    return value


def _check_tojson(context: Context, state: RenderState, value: Any, indent: Any = None) -> Any:
    if indent is not None and not (isinstance(indent, int) and 0 <= indent <= 8):
        raise TypeError("tojson(indent) must be a whole number from 0 to 8")
    data = to_data(value, state)
    cap = state.limits.max_output_chars
    if text_size(data, cap) * (1 + (indent or 0)) > cap:
        raise too_long_error(state.limits)
    return data


@dataclass(frozen=True)
class _FilterRule:
    check: Callable[..., Any] | None = None
    #: The filter turns its input into text: a non-text input is first turned into the text
    #: `{{ }}` would print (sized, and refused when it is not data, e.g. a function).
    makes_text: bool = False
    #: QuickBot's own version of the filter, used instead of Jinja's.
    implementation: Callable[..., Any] | None = None
    #: Extra steps per input item (filters that look up an attribute of every item).
    per_item: int = 1


#: Filters a template may use; every other Jinja filter is removed (`attr`, `pprint`,
#: `xmlattr`, `urlize`, `striptags`, `wordwrap`, `random`, `escape`/`e`/`safe`/`forceescape`).
FILTER_RULES: Mapping[str, _FilterRule] = {
    "abs": _FilterRule(),
    "batch": _FilterRule(check=_check_batch),
    "capitalize": _FilterRule(makes_text=True, per_item=2),
    "center": _FilterRule(check=_check_center, makes_text=True),
    "count": _FilterRule(),
    "d": _FilterRule(),
    "default": _FilterRule(),
    "dictsort": _FilterRule(per_item=4),
    "filesizeformat": _FilterRule(),
    "first": _FilterRule(),
    "float": _FilterRule(),
    "format": _FilterRule(makes_text=True, implementation=_format_filter),
    "groupby": _FilterRule(per_item=16),
    "indent": _FilterRule(check=_check_indent, makes_text=True),
    "int": _FilterRule(),
    "items": _FilterRule(),
    "join": _FilterRule(check=_check_join, per_item=2),
    "last": _FilterRule(),
    "length": _FilterRule(),
    "list": _FilterRule(),
    "lower": _FilterRule(makes_text=True),
    "map": _FilterRule(per_item=4),
    "max": _FilterRule(per_item=4),
    "min": _FilterRule(per_item=4),
    "reject": _FilterRule(per_item=4),
    "rejectattr": _FilterRule(per_item=8),
    "replace": _FilterRule(check=_check_replace_filter, makes_text=True),
    "reverse": _FilterRule(),
    "round": _FilterRule(),
    "select": _FilterRule(per_item=4),
    "selectattr": _FilterRule(per_item=8),
    "slice": _FilterRule(check=_check_slice),
    "sort": _FilterRule(per_item=8),
    "string": _FilterRule(makes_text=True, per_item=2, implementation=_string_filter),
    "sum": _FilterRule(check=_check_sum, per_item=4),
    "title": _FilterRule(makes_text=True, per_item=16),
    "tojson": _FilterRule(check=_check_tojson, per_item=4),
    "trim": _FilterRule(makes_text=True),
    "truncate": _FilterRule(makes_text=True),
    "unique": _FilterRule(per_item=4),
    "upper": _FilterRule(makes_text=True),
    "urlencode": _FilterRule(check=_check_urlencode, per_item=16),
    "wordcount": _FilterRule(makes_text=True, per_item=16),
}

#: Tests a template may use (`x is defined`, `x is in list`...); `callable`, `escaped`,
#: `filter` and `test` are removed.
ALLOWED_TEST_NAMES = frozenset(TESTS) - {"callable", "escaped", "filter", "test"}
#: Tests that handle an unset variable on purpose, so it is not reported as missing.
_TESTS_THAT_HANDLE_UNSET = frozenset({"defined", "undefined", "none"})

ALLOWED_FILTERS: frozenset[str] = frozenset(FILTER_RULES)
ALLOWED_TESTS: frozenset[str] = ALLOWED_TEST_NAMES


def _with_context(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` as a function of (context, value, ...), whatever Jinja argument it expects first."""
    pass_arg = _PassArg.from_obj(func)
    if pass_arg is _PassArg.context:
        return func
    if pass_arg is _PassArg.eval_context:
        return lambda context, *args, **kwargs: func(context.eval_ctx, *args, **kwargs)
    if pass_arg is _PassArg.environment:
        return lambda context, *args, **kwargs: func(context.environment, *args, **kwargs)
    return lambda context, *args, **kwargs: func(*args, **kwargs)


def sandboxed_filter(name: str, func: Callable[..., Any], rule: _FilterRule) -> Callable[..., Any]:
    call = _with_context(func)
    handles_unset = name in ("default", "d")

    @pass_context
    def run_filter(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        state = active_state()
        state.charge(CALL_STEPS + cost(value, state) * rule.per_item)
        if handles_unset and isinstance(value, RecordingUndefined):
            value.forget()
        if rule.makes_text and not isinstance(value, str):
            value = to_text(value, state)
        if rule.check is not None:
            value = rule.check(context, state, value, *args, **kwargs)
        return check_size(call(context, value, *args, **kwargs), state)

    run_filter.__name__ = f"filter_{name}"
    return run_filter


def test_none(value: Any) -> bool:
    """`x is none` is true for an unset variable too: QuickBot treats null and unset alike."""
    return value is None or isinstance(value, Undefined)


def sandboxed_test(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    call = _with_context(func)
    handles_unset = name in _TESTS_THAT_HANDLE_UNSET

    @pass_context
    def run_test(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        state = active_state()
        state.charge(CALL_STEPS + cost(value, state) + sum(cost(arg, state) for arg in args))
        if handles_unset and isinstance(value, RecordingUndefined):
            value.forget()
        return call(context, value, *args, **kwargs)

    run_test.__name__ = f"test_{name}"
    return run_test
