"""Binary operators, bounded before they run.

`'a' * 10**9` or `10**10**10` would exhaust the server before any check of the result could
run, so the operands are sized first; the result is then checked and charged like any value.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .state import _RenderState, _state
from .values import _check_size, _cost, _text_size, _too_big_number, _too_long, _too_many_items

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_percent_format(template: str, args: Any, state: _RenderState) -> None:
    """Bound `'%05d' % x` and the `format` filter: widths and precisions pad without limit."""
    limits = state.limits
    cap = limits.max_output_chars
    total = len(template)
    uses_star = False
    for match in _PERCENT_SPEC.finditer(template):
        for part in match.groups():
            if part == "*":
                uses_star = True
            elif part:
                if len(part) > 9 or int(part) > cap:
                    raise _too_long(limits)
                total += int(part)
    if isinstance(args, Mapping):
        values: Iterable[Any] = args.values()
    elif isinstance(args, tuple):
        values = args
    else:
        values = (args,)
    for value in values:
        if uses_star and isinstance(value, int) and abs(value) > cap:
            raise _too_long(limits)
        total += _text_size(value, cap)
        if total > cap:
            raise _too_long(limits)


def _check_repeat(left: Any, right: Any, state: _RenderState) -> None:
    """Bound `*`: `'a' * 10**9`, `[1] * 10**9` and huge integer products."""
    limits = state.limits
    if isinstance(left, int) and isinstance(right, (str, list, tuple)):
        left, right = right, left
    if isinstance(left, (str, list, tuple)) and isinstance(right, int):
        size = len(left) * max(right, 0)
        if isinstance(left, str) and size > limits.max_output_chars:
            raise _too_long(limits)
        if not isinstance(left, str) and size > limits.max_items:
            raise _too_many_items(limits)
    elif (
        isinstance(left, int)
        and isinstance(right, int)
        and left.bit_length() + right.bit_length() > limits.max_number_bits + 1
    ):
        raise _too_big_number(limits)


def _check_power(base: Any, exponent: Any, state: _RenderState) -> None:
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
        raise _too_big_number(state.limits)


def _check_add(left: Any, right: Any, state: _RenderState) -> None:
    limits = state.limits
    if isinstance(left, str) and isinstance(right, str) and len(left) + len(right) > limits.max_output_chars:
        raise _too_long(limits)
    if (
        isinstance(left, (list, tuple))
        and isinstance(right, (list, tuple))
        and len(left) + len(right) > limits.max_items
    ):
        raise _too_many_items(limits)


_BINARY_OPERATORS: Mapping[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "**": operator.pow,
    "%": operator.mod,
}


def _binary_operation(operator_name: str, left: Any, right: Any) -> Any:
    state = _state()
    state.charge(2 + max(_cost(left), _cost(right)))
    if operator_name == "+":
        _check_add(left, right, state)
    elif operator_name == "*":
        _check_repeat(left, right, state)
    elif operator_name == "**":
        _check_power(left, right, state)
    elif operator_name == "%" and isinstance(left, str):
        _check_percent_format(left, right, state)
    return _check_size(_BINARY_OPERATORS[operator_name](left, right), state)
