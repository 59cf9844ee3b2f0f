"""Binary operators, bounded before they run.

`'a' * 10**9` or `10**10**10` would exhaust the server before any check of the result could
run, so the operands are sized first; the result is then checked and charged like any value.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from jinja2.runtime import Undefined

from .state import CHARS_PER_STEP, RenderState, active_state
from .values import check_size, cost, text_size, to_data, to_text, too_big_number, too_long_error, too_many_items

#: One conversion of `%`-formatting: mapping key, flags, width, precision, length, type.
_PERCENT_SPEC = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?(?P<flags>[#0\- +]*)(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d*))?[hlL]?(?P<type>.?)",
    re.S,
)


def _format_argument(value: Any, state: RenderState) -> Any:
    """A value `%` or `format` may print: plain data only, never an object's address.

    An unset variable prints as nothing, as it does in `{{ }}`; lists and dictionaries are
    copied into plain data; functions, methods, macros and the like are refused.
    """
    if isinstance(value, Undefined):
        return to_text(value, state)
    return to_data(value, state)


def _format_arguments(args: Any, state: RenderState) -> Any:
    if isinstance(args, Mapping):
        return {key: _format_argument(value, state) for key, value in args.items()}
    if isinstance(args, tuple):
        return tuple(_format_argument(value, state) for value in args)
    return _format_argument(args, state)


def percent_format(template: str, args: Any, state: RenderState) -> str:
    """`template % args`, sized exactly before it runs and refused when it would be too long.

    Each conversion is formatted on its own, stopping as soon as the total passes the limit,
    so sizing costs at most the limit: a value used by many conversions (`'%(a)s%(a)s' % d`)
    is counted each time it is used, and nothing larger than the limit is ever built.
    """
    limits = state.limits
    cap = limits.max_output_chars
    arguments = _format_arguments(args, state)
    positional = list(arguments) if isinstance(arguments, tuple) else [arguments]
    mapping = arguments if isinstance(arguments, Mapping) else None
    total = len(template)
    position = 0
    for match in _PERCENT_SPEC.finditer(template):
        state.charge(1)
        total -= len(match.group(0))
        kind = match.group("type")
        if kind == "%" or not kind:
            total += 1 if kind else 0
            continue
        spec = "%" + match.group("flags")
        for part_name in ("width", "precision"):
            part = match.group(part_name)
            if part == "*":
                if position >= len(positional):
                    raise TypeError("not enough arguments for format string")
                number = positional[position]
                position += 1
                if not isinstance(number, int) or abs(number) > cap:
                    raise too_long_error(limits)
                part = str(number)
            elif part and (len(part) > 9 or int(part) > cap):
                raise too_long_error(limits)
            if part_name == "precision" and part is not None:
                spec += "."
            spec += part or ""
        spec += kind
        key = match.group("key")
        if key is not None:
            if mapping is None:
                raise TypeError("format requires a mapping")
            value = mapping[key]
        else:
            if position >= len(positional):
                raise TypeError("not enough arguments for format string")
            value = positional[position]
            position += 1
        if text_size(value, cap) > cap * 10:  # repr (`%r`) escapes at most ten characters per one
            raise too_long_error(limits)
        piece = spec % (value,)
        total += len(piece)
        state.charge(len(piece) // CHARS_PER_STEP)
        if total > cap:
            raise too_long_error(limits)
    result: str = template % arguments
    if len(result) > cap:
        raise too_long_error(limits)
    return result


def _check_repeat(left: Any, right: Any, state: RenderState) -> None:
    """Bound `*`: `'a' * 10**9`, `[1] * 10**9` and huge integer products."""
    limits = state.limits
    if isinstance(left, int) and isinstance(right, (str, list, tuple)):
        left, right = right, left
    if isinstance(left, (str, list, tuple)) and isinstance(right, int):
        size = len(left) * max(right, 0)
        if isinstance(left, str) and size > limits.max_output_chars:
            raise too_long_error(limits)
        if not isinstance(left, str) and size > limits.max_items:
            raise too_many_items(limits)
    elif (
        isinstance(left, int)
        and isinstance(right, int)
        and left.bit_length() + right.bit_length() > limits.max_number_bits + 1
    ):
        raise too_big_number(limits)


def _check_power(base: Any, exponent: Any, state: RenderState) -> None:
    """Bound `**`: `10**10**10` would otherwise compute a number with ten billion digits."""
    if not (isinstance(base, int) and isinstance(exponent, int)):
        return  # floats overflow quickly on their own
    if exponent < 0 or abs(base) <= 1:
        return
    try:
        bits = exponent * math.log2(abs(base))
    except OverflowError:
        bits = math.inf
    if bits > state.limits.max_number_bits:
        raise too_big_number(state.limits)


def _check_add(left: Any, right: Any, state: RenderState) -> None:
    limits = state.limits
    if isinstance(left, str) and isinstance(right, str) and len(left) + len(right) > limits.max_output_chars:
        raise too_long_error(limits)
    if (
        isinstance(left, (list, tuple))
        and isinstance(right, (list, tuple))
        and len(left) + len(right) > limits.max_items
    ):
        raise too_many_items(limits)


BINARY_OPERATORS: Mapping[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "**": operator.pow,
    "%": operator.mod,
}


def binary_operation(operator_name: str, left: Any, right: Any) -> Any:
    state = active_state()
    state.charge(2 + max(cost(left, state), cost(right, state)))
    if operator_name == "%" and isinstance(left, str):
        return percent_format(left, right, state)
    if operator_name == "+":
        _check_add(left, right, state)
    elif operator_name == "*":
        _check_repeat(left, right, state)
    elif operator_name == "**":
        _check_power(left, right, state)
    return check_size(BINARY_OPERATORS[operator_name](left, right), state)
