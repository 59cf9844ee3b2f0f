"""Hardening the parsed template.

The sandbox hooks see attribute access, calls and binary operators, but Jinja performs loops,
macro bodies, comparisons, `~` and slices inline. The hardening pass routes each of them
through a private filter that charges the work budget and bounds the result, so no template
can spin or grow without paying for it. Also here: the statements refused at save time, and
the names a template reads (for lint).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, Undefined
from jinja2.utils import pass_context
from jinja2.visitor import NodeTransformer

from .state import NODE_STEPS, active_state
from .values import charge_built, check_size, cost, counted, to_text, too_long_error

REFUSED_STATEMENTS: Mapping[type[nodes.Node], tuple[str, str]] = {
    nodes.Extends: ("extends", "templates cannot extend other templates"),
    nodes.Include: ("include", "templates cannot load other templates"),
    nodes.Import: ("import", "templates cannot import other templates"),
    nodes.FromImport: ("from", "templates cannot import other templates"),
    nodes.Block: ("block", "template blocks are not available"),
}
RESERVED_NAMES = frozenset({"vars", "self"})


def _node_count(body: Iterable[nodes.Node]) -> int:
    return sum(1 + sum(1 for _ in node.find_all(nodes.Node)) for node in body)


def _private_filter(node: nodes.Expr, name: str, *args: nodes.Expr, lineno: int) -> nodes.Filter:
    return nodes.Filter(node, name, list(args), [], None, None, lineno=lineno)


def _charge_statement(steps: int, lineno: int) -> nodes.ExprStmt:
    return nodes.ExprStmt(_private_filter(nodes.Const(steps), "qb:charge", lineno=lineno), lineno=lineno)


class Hardener(NodeTransformer):
    """Routes every repeated or size-changing operation through a charged, bounded filter.

    Loops and macro bodies pay for their size on every pass, so the work budget covers even
    operations Jinja performs inline (literals, tests); comparisons, `~` and slices pay for
    the size of what they touch.
    """

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        per_item = 1 + (NODE_STEPS * _node_count([node.test]) if node.test is not None else 0)
        iterable: nodes.Expr = node.iter  # type: ignore[assignment]
        node.iter = _private_filter(iterable, "qb:loop", nodes.Const(per_item), lineno=node.lineno)
        node.body.insert(0, _charge_statement(1 + NODE_STEPS * _node_count(node.body), node.lineno))
        return node

    def visit_Macro(self, node: nodes.Macro) -> nodes.Node:
        self.generic_visit(node)
        node.body.insert(0, _charge_statement(1 + NODE_STEPS * _node_count(node.body), node.lineno))
        return node

    def visit_CallBlock(self, node: nodes.CallBlock) -> nodes.Node:
        self.generic_visit(node)
        node.body.insert(0, _charge_statement(1 + NODE_STEPS * _node_count(node.body), node.lineno))
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _private_filter(nodes.List(node.nodes, lineno=node.lineno), "qb:concat", lineno=node.lineno)

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:
        self.generic_visit(node)
        args: list[nodes.Expr] = []
        for operand in node.ops:
            args.extend((nodes.Const(operand.op), operand.expr))
        return _private_filter(node.expr, "qb:compare", *args, lineno=node.lineno)

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        self.generic_visit(node)
        if isinstance(node.arg, nodes.Slice) and node.ctx == "load":
            return _private_filter(node, "qb:sized", lineno=node.lineno)
        return node

    def visit_List(self, node: nodes.List) -> nodes.Node:
        self.generic_visit(node)
        return _private_filter(node, "qb:built", lineno=node.lineno)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        self.generic_visit(node)
        if node.ctx != "load":
            return node  # `{% for a, b in ... %}` unpacks; it builds nothing
        return _private_filter(node, "qb:built", lineno=node.lineno)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        self.generic_visit(node)
        for pair in node.items:
            # Python hashes each key while it builds the dictionary: pay for that first.
            pair.key = _private_filter(pair.key, "qb:key", lineno=pair.lineno)
        return _private_filter(node, "qb:built", lineno=node.lineno)

    def visit_Name(self, node: nodes.Name) -> nodes.Node:
        if node.name == "self" and node.ctx == "load":  # Jinja's `self` is the template object
            return nodes.Getitem(nodes.Name("vars", "load"), nodes.Const("self"), "load", lineno=node.lineno)
        return node


def referenced_names(ast: nodes.Template) -> frozenset[str]:
    """Names a template reads from its variables (for lint; local names are left out)."""
    loaded: set[str] = set()
    local: set[str] = set()
    for name_node in ast.find_all(nodes.Name):
        (loaded if name_node.ctx == "load" else local).add(name_node.name)
    for item in ast.find_all(nodes.Getitem):
        if (
            isinstance(item.node, nodes.Name)
            and item.node.name == "vars"
            and isinstance(item.arg, nodes.Const)
            and isinstance(item.arg.value, str)
        ):
            loaded.add(item.arg.value)
    for attribute in ast.find_all(nodes.Getattr):
        if isinstance(attribute.node, nodes.Name) and attribute.node.name == "vars":
            loaded.add(attribute.attr)
    special = {"vars", "range", "loop", "caller", "varargs", "kwargs"}
    return frozenset(loaded - local - special)


# Private filters the hardening pass inserts into every template. Their names contain ':' so
# no template can write them; `call_filter` also refuses them for `map('...')` and friends.


@pass_context
def _charge_filter(context: Context, steps: Any) -> str:
    if type(steps) is not int or steps < 1:
        raise SecurityError("internal work counter misused")
    active_state().charge(steps)
    return ""


@pass_context
def loop_filter(context: Context, iterable: Any, per_item: Any = 1) -> Any:
    state = active_state()
    steps = per_item if type(per_item) is int and per_item >= 1 else 1
    if isinstance(iterable, Undefined):
        return iterable
    try:
        count = len(iterable)
    except TypeError:
        return counted(iterable, state, steps)
    state.charge(count * steps)
    return iterable


def _contains(container: Any, item: Any) -> bool:
    return item in container


_COMPARISONS: Mapping[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lteq": operator.le,
    "gt": operator.gt,
    "gteq": operator.ge,
    "in": lambda left, right: _contains(right, left),
    "notin": lambda left, right: not _contains(right, left),
}


@pass_context
def _compare_filter(context: Context, left: Any, *pairs: Any) -> Any:
    state = active_state()
    result: Any = True
    for index in range(0, len(pairs) - 1, 2):
        operator_name, right = pairs[index], pairs[index + 1]
        if operator_name in ("in", "notin"):
            state.charge(2 + cost(right, state) + cost(left, state))
        else:
            state.charge(2 + min(cost(left, state), cost(right, state)))
        result = _COMPARISONS[operator_name](left, right)
        if not result:
            return result
        left = right
    return result


@pass_context
def _concat_filter(context: Context, items: Any) -> str:
    state = active_state()
    texts = [to_text(item, state) for item in items]
    if sum(map(len, texts)) > state.limits.max_output_chars:
        raise too_long_error(state.limits)
    return "".join(texts)


@pass_context
def _sized_filter(context: Context, value: Any) -> Any:
    return check_size(value, active_state())


@pass_context
def _built_filter(context: Context, value: Any) -> Any:
    """A list, tuple or dictionary literal: charged by its deep size once built."""
    return charge_built(value, active_state())


@pass_context
def _key_filter(context: Context, key: Any) -> Any:
    """A dictionary key, charged by its deep size before Python hashes it."""
    state = active_state()
    state.charge(1 + cost(key, state))
    return key


PRIVATE_FILTERS: Mapping[str, Callable[..., Any]] = {
    "qb:built": _built_filter,
    "qb:key": _key_filter,
    "qb:charge": _charge_filter,
    "qb:loop": loop_filter,
    "qb:compare": _compare_filter,
    "qb:concat": _concat_filter,
    "qb:sized": _sized_filter,
}
