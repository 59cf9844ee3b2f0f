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

from .errors import TemplateError, TemplateLimitError, limit_error
from .limits import TemplateLimits
from .state import CHARS_PER_STEP, RenderState, Unavailable, VariablesView

_SCALAR_TYPES = (str, int, float, bool)
#: Host values that are plain data even though JSON has no type for them.
_HOST_DATA_TYPES = (datetime.date, datetime.time, decimal.Decimal, uuid.UUID)
_LAZY_SEQUENCES = (range, KeysView, ValuesView, ItemsView, set, frozenset)


#: Largest deep size of any value, whatever the work budget: comparing, hashing or sorting a
#: value is one C call that holds the GIL, so its size must stay at a few milliseconds of work.
_MAX_DEEP_SIZE = 1_000_000
_CONTAINERS = (list, tuple, dict, set, frozenset, Mapping, KeysView, ValuesView, ItemsView)


def cost(value: Any, state: RenderState) -> int:
    """Steps of work an operation over `value` is charged: its deep size (see `_deep_size`).

    Comparing, hashing, sorting or printing a nested value touches every item reachable
    from it, so the top-level length alone would let `[[x]*100]*100` cost 100 for 10,000.
    """
    kind = type(value)
    if kind is str:
        return len(value) // CHARS_PER_STEP
    if kind is int or kind is float or kind is bool or value is None:
        return 0  # the common cases first: the container check below consults ABCs
    if isinstance(value, str):
        return len(value) // CHARS_PER_STEP
    if isinstance(value, range):
        return len(value)
    if isinstance(value, _CONTAINERS):
        return _deep_size(value, state)
    return 0


def _leaf_size(value: Any) -> int:
    if isinstance(value, str):
        return 1 + len(value) // CHARS_PER_STEP
    if isinstance(value, range):
        return 1 + len(value)
    return 1


def _deep_size(value: Any, state: RenderState) -> int:
    """Items reachable from `value`, a shared reference counted every time it is reachable.

    `[[x]*100]*100` is 10,101: a list of 100 references to one list of 100 items. Sizes are
    remembered per render, so sizing a value built from known parts costs its own length
    only, and counting stops as soon as the work budget is exceeded, so sizing never costs
    more than the budget it protects. Refuses (a limit error) a value over the budget.
    """
    if not isinstance(value, _CONTAINERS):
        return _leaf_size(value)
    sizes = state.sizes
    if sizes is None:
        sizes = state.sizes = {}
    known = sizes.get(id(value))
    if known is not None:
        return known[1]
    cap = min(state.max_work, _MAX_DEEP_SIZE)
    # An explicit stack rather than recursion: host data may nest deeper than Python recurses.
    frames: list[list[Any]] = [[value, iter(_members(value)), 1 + len(value)]]
    open_ids = {id(value)}
    while frames:
        frame = frames[-1]
        descended = False
        for member in frame[1]:
            if isinstance(member, _CONTAINERS):
                known = sizes.get(id(member))
                if known is not None:
                    frame[2] += known[1] - 1  # its one step is in the owner's length
                elif id(member) in open_ids:
                    raise _too_big(state)  # a value that contains itself is endless
                else:
                    frames.append([member, iter(_members(member)), 1 + len(member)])
                    open_ids.add(id(member))
                    descended = True
                    break
            else:
                frame[2] += _leaf_size(member) - 1  # its one step is in the owner's length
            if frame[2] > cap:
                raise _too_big(state)
        if descended:
            continue
        frames.pop()
        container, _, size = frame
        open_ids.discard(id(container))
        sizes[id(container)] = (container, size)
        if frames:
            frames[-1][2] += size - 1
            if frames[-1][2] > cap:
                raise _too_big(state)
    return sizes[id(value)][1]


def _members(value: Any) -> Iterable[Any]:
    if isinstance(value, Mapping):
        return (part for pair in value.items() for part in pair)
    return value  # type: ignore[no-any-return]


def _too_big(state: RenderState) -> TemplateError:
    if state.max_work >= _MAX_DEEP_SIZE:
        return TemplateError(
            f"A value the template builds or uses is too large (more than {_MAX_DEEP_SIZE:,} items, "
            "counting each nested item): build smaller lists."
        )
    return limit_error(
        state.limits,
        "max_work",
        f"A value the template builds or uses is too large (more than {state.max_work:,} items, "
        "counting each nested item): build smaller lists.",
    )


def charge_built(value: Any, state: RenderState) -> Any:
    """Charge a container the template has just built by its deep size (refused when over budget)."""
    state.charge(_deep_size(value, state))
    return value


def text_size(value: Any, cap: int) -> int:
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


def describe_object(value: Any) -> str:
    if isinstance(value, VariablesView):
        return "the table of all variables (write vars['name'] to read one)"
    if isinstance(value, Macro):
        return "a macro (call it with parentheses)"
    if isinstance(value, LoopContext):
        return "the loop object (use loop.index and friends)"
    if callable(value):
        return "a function or method (call it with parentheses)"
    return f"a {type(value).__name__} object"


def to_data(value: Any, state: RenderState, depth: int = 0) -> Any:
    """Turn a template value into plain data (str, numbers, bool, None, lists, dicts).

    Only plain data leaves the sandbox: Jinja internals, functions and methods are refused,
    because printing them leaks memory addresses and handing them to the host leaks objects.
    Lazy sequences (generators from `map`, `range`) are materialized, with each item charged.
    """
    kind = type(value)
    if value is None or kind is str or kind is float or kind is bool:
        return value
    if kind is int:
        return _bounded_int(value, state)
    if isinstance(value, Undefined):
        if isinstance(value, Unavailable):
            value._refuse()
        return None
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return _bounded_int(int(value), state)
    if isinstance(value, (bool, float, *_HOST_DATA_TYPES)):
        return value
    if depth >= state.limits.max_nesting:
        raise limit_error(
            state.limits, "max_nesting", f"A value is nested more than {state.limits.max_nesting} levels deep."
        )
    if isinstance(value, (LoopContext, Macro, VariablesView)):
        raise TemplateError(f"This expression gives {describe_object(value)}, not a value a field can hold.")
    if isinstance(value, (list, tuple)):
        state.charge(1 + len(value))
        return [to_data(item, state, depth + 1) for item in value]
    if isinstance(value, Mapping):
        state.charge(1 + len(value))
        return {_to_key(key, state): to_data(item, state, depth + 1) for key, item in value.items()}
    if isinstance(value, (Iterator, *_LAZY_SEQUENCES)):
        items: list[Any] = []
        for item in value:
            state.charge(1)
            items.append(item)
            if len(items) > state.limits.max_items:
                raise too_many_items(state.limits)
        return [to_data(item, state, depth + 1) for item in items]
    raise TemplateError(f"This expression gives {describe_object(value)}, not a value a field can hold.")


def _bounded_int(value: int, state: RenderState) -> int:
    """A whole number a field may hold: at most `max_number_digits` digits (an end user's
    5,000-digit answer would otherwise fail later, where Python refuses to print it)."""
    if value.bit_length() > state.limits.max_number_bits:
        raise too_big_number(state.limits)
    return value


def _to_key(key: Any, state: RenderState) -> Any:
    if key is None or type(key) in _SCALAR_TYPES:
        return key
    return to_text(key, state)


def to_text(value: Any, state: RenderState) -> str:
    """How a value appears in text: None and unset variables are empty, the rest is `str()`."""
    cap = state.limits.max_output_chars
    if type(value) is str:
        text = value
    elif value is None:
        return ""
    elif isinstance(value, Undefined):
        if isinstance(value, Unavailable):
            value._refuse()
        return ""
    elif type(value) in _SCALAR_TYPES:
        if type(value) is int:
            _bounded_int(value, state)
        text = str(value)
    elif isinstance(value, str):
        text = str.__str__(value)
    else:
        data = to_data(value, state)
        if text_size(data, cap) > cap:
            raise too_long_error(state.limits)
        text = str(data)
    if len(text) > cap:
        raise too_long_error(state.limits)
    state.charge(1 + len(text) // CHARS_PER_STEP)
    return text


def too_long_error(limits: TemplateLimits) -> TemplateLimitError:
    return limit_error(
        limits, "max_output_chars", f"The text would be longer than {limits.max_output_chars:,} characters."
    )


def check_size(value: Any, state: RenderState) -> Any:
    """Refuse a value the template built that is over a limit; charge for what it built.

    Used after operations whose result is at most a small multiple of their (already bounded)
    inputs; operations that could build a huge value are checked *before* they run.
    """
    limits = state.limits
    if isinstance(value, str):
        if len(value) > limits.max_output_chars:
            raise too_long_error(limits)
        state.charge(len(value) // CHARS_PER_STEP)
    elif isinstance(value, (list, tuple)):
        if len(value) > limits.max_items:
            raise too_many_items(limits)
        state.charge(_deep_size(value, state))
    elif isinstance(value, Mapping):
        state.charge(_deep_size(value, state))
    elif isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > limits.max_number_bits:
            raise too_big_number(limits)
    elif isinstance(value, Iterator):
        return counted(value, state)
    return value


def too_big_number(limits: TemplateLimits) -> TemplateLimitError:
    return limit_error(
        limits, "max_number_digits", f"A number would have more than {limits.max_number_digits:,} digits."
    )


def too_many_items(limits: TemplateLimits) -> TemplateLimitError:
    return limit_error(limits, "max_items", f"A list would have more than {limits.max_items:,} items.")


def counted(iterator: Iterable[Any], state: RenderState, steps_per_item: int = 1) -> Iterator[Any]:
    for item in iterator:
        state.charge(steps_per_item)
        yield item


def typed_value(value: Any, state: RenderState) -> Any:
    """The value of a one-expression field: plain data whose text would fit in a field."""
    data = to_data(value, state)
    cap = state.limits.max_output_chars
    if isinstance(data, str):
        too_long = len(data) > cap
    elif isinstance(data, int) and not isinstance(data, bool):
        too_long = data.bit_length() * 30103 // 100000 > cap
    elif isinstance(data, (list, dict)):
        too_long = text_size(data, cap) > cap or len(str(data)) > cap
    else:
        too_long = False
    if too_long:
        raise too_long_error(state.limits)
    return data
