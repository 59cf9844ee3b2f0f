"""Values: what they cost, how big their text is, what may leave the sandbox.

Sizes are estimated without building the text, so a template never makes the server build
a huge string only to find out that it is too long; and only plain data leaves the sandbox.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Any

from jinja2.runtime import LoopContext, Macro, Undefined

from .errors import TemplateError, TemplateLimitError, _limit_error
from .limits import TemplateLimits
from .state import _CHARS_PER_STEP, _RenderState, _Unavailable, _VariablesView

_SCALAR_TYPES = (str, int, float, bool)
#: Host values that are plain data even though JSON has no type for them.
_HOST_DATA_TYPES = (datetime.date, datetime.time, decimal.Decimal, uuid.UUID)
_LAZY_SEQUENCES = (range, KeysView, ValuesView, ItemsView, set, frozenset)


def _cost(value: Any) -> int:
    """Steps of work an operation over `value` is charged, proportional to its size."""
    if isinstance(value, str):
        return len(value) // _CHARS_PER_STEP
    if isinstance(value, (list, tuple, dict, set, frozenset, range)):
        return len(value)
    return 0


def _text_size(value: Any, cap: int) -> int:
    """An estimate of `len(str(value))` computed without building the text.

    It stops counting once past `cap`, so sizing a huge value costs no more than the cap.
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 4
        elif item is None or isinstance(item, bool):
            total += 6
        elif isinstance(item, int):
            total += item.bit_length() * 30103 // 100000 + 3
        elif isinstance(item, float):
            total += 26
        elif isinstance(item, Undefined):
            total += 2
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2
            stack.extend(item)
        elif isinstance(item, Mapping):
            total += 2
            for key, member in item.items():
                stack.append(key)
                stack.append(member)
        else:
            total += 64
        if total > cap:
            return total
    return total


def _describe(value: Any) -> str:
    if isinstance(value, _VariablesView):
        return "the table of all variables (write vars['name'] to read one)"
    if isinstance(value, Macro):
        return "a macro (call it with parentheses)"
    if isinstance(value, LoopContext):
        return "the loop object (use loop.index and friends)"
    if callable(value):
        return "a function or method (call it with parentheses)"
    return f"a {type(value).__name__} object"


def _to_data(value: Any, state: _RenderState, depth: int = 0) -> Any:
    """Turn a template value into plain data (str, numbers, bool, None, lists, dicts).

    Only plain data leaves the sandbox: Jinja internals, functions and methods are refused,
    because printing them leaks memory addresses and handing them to the host leaks objects.
    Lazy sequences (generators from `map`, `range`) are materialized, with each item charged.
    """
    if value is None or type(value) in _SCALAR_TYPES:
        return value
    if isinstance(value, Undefined):
        if isinstance(value, _Unavailable):
            value._refuse()
        return None
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bool, int, float, *_HOST_DATA_TYPES)):
        return value
    if depth >= state.limits.max_nesting:
        raise _limit_error(
            state.limits, "max_nesting", f"A value is nested more than {state.limits.max_nesting} levels deep."
        )
    if isinstance(value, (LoopContext, Macro, _VariablesView)):
        raise TemplateError(f"This expression gives {_describe(value)}, not a value a field can hold.")
    if isinstance(value, (list, tuple)):
        state.charge(1 + len(value))
        return [_to_data(item, state, depth + 1) for item in value]
    if isinstance(value, Mapping):
        state.charge(1 + len(value))
        return {_to_key(key, state): _to_data(item, state, depth + 1) for key, item in value.items()}
    if isinstance(value, (Iterator, *_LAZY_SEQUENCES)):
        items: list[Any] = []
        for item in value:
            state.charge(1)
            items.append(item)
            if len(items) > state.limits.max_items:
                raise _too_many_items(state.limits)
        return [_to_data(item, state, depth + 1) for item in items]
    raise TemplateError(f"This expression gives {_describe(value)}, not a value a field can hold.")


def _to_key(key: Any, state: _RenderState) -> Any:
    if key is None or type(key) in _SCALAR_TYPES:
        return key
    return _to_text(key, state)


def _to_text(value: Any, state: _RenderState) -> str:
    """How a value appears in text: None and unset variables are empty, the rest is `str()`."""
    cap = state.limits.max_output_chars
    if type(value) is str:
        text = value
    elif value is None:
        return ""
    elif isinstance(value, Undefined):
        if isinstance(value, _Unavailable):
            value._refuse()
        return ""
    elif type(value) in _SCALAR_TYPES:
        text = str(value)
    elif isinstance(value, str):
        text = str.__str__(value)
    else:
        data = _to_data(value, state)
        if _text_size(data, cap) > cap:
            raise _too_long(state.limits)
        text = str(data)
    if len(text) > cap:
        raise _too_long(state.limits)
    state.charge(1 + len(text) // _CHARS_PER_STEP)
    return text


def _too_long(limits: TemplateLimits) -> TemplateLimitError:
    return _limit_error(
        limits, "max_output_chars", f"The text would be longer than {limits.max_output_chars:,} characters."
    )


def _check_size(value: Any, state: _RenderState) -> Any:
    """Refuse a value the template built that is over a limit; charge for what it built.

    Used after operations whose result is at most a small multiple of their (already bounded)
    inputs; operations that could build a huge value are checked *before* they run.
    """
    limits = state.limits
    if isinstance(value, str):
        if len(value) > limits.max_output_chars:
            raise _too_long(limits)
        state.charge(len(value) // _CHARS_PER_STEP)
    elif isinstance(value, (list, tuple)):
        if len(value) > limits.max_items:
            raise _too_many_items(limits)
        state.charge(len(value))
    elif isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > limits.max_number_bits:
            raise _too_big_number(limits)
    elif isinstance(value, Iterator):
        return _counted(value, state)
    return value


def _too_big_number(limits: TemplateLimits) -> TemplateLimitError:
    return _limit_error(
        limits, "max_number_digits", f"A number would have more than {limits.max_number_digits:,} digits."
    )


def _too_many_items(limits: TemplateLimits) -> TemplateLimitError:
    return _limit_error(limits, "max_items", f"A list would have more than {limits.max_items:,} items.")


def _counted(iterator: Iterable[Any], state: _RenderState, steps_per_item: int = 1) -> Iterator[Any]:
    for item in iterator:
        state.charge(steps_per_item)
        yield item


def _typed_value(value: Any, state: _RenderState) -> Any:
    """The value of a one-expression field: plain data whose text would fit in a field."""
    data = _to_data(value, state)
    cap = state.limits.max_output_chars
    if isinstance(data, str):
        too_long = len(data) > cap
    elif isinstance(data, int) and not isinstance(data, bool):
        too_long = data.bit_length() * 30103 // 100000 > cap
    elif isinstance(data, (list, dict)):
        too_long = _text_size(data, cap) > cap or len(str(data)) > cap
    else:
        too_long = False
    if too_long:
        raise _too_long(state.limits)
    return data
