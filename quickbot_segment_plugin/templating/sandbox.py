"""The sandbox environment every template is compiled and rendered in.

Jinja's `ImmutableSandboxedEnvironment`, narrowed to QuickBot's allow-lists and routed
through the work budget at every hook it offers: attribute and item access, calls, binary
operators, filters, tests, output, and the tokenizer (for variable names with spaces).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from jinja2 import Environment
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS
from jinja2.lexer import TokenStream
from jinja2.parser import Parser
from jinja2.runtime import Context, LoopContext, Macro, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.tests import TESTS
from jinja2.utils import pass_context

from .errors import limit_error, one_line_excerpt
from .filters import ALLOWED_TEST_NAMES, FILTER_RULES, sandboxed_filter, sandboxed_test, test_none
from .hardening import PRIVATE_FILTERS, loop_filter
from .methods import allowed_attributes, call_method, refused_attribute
from .names import PositionTracker, TrackedTokenStream, normalize_newlines, positioned, rewrite_names
from .operators import BINARY_OPERATORS, binary_operation
from .state import CALL_STEPS, RecordingUndefined, RenderState, Unavailable, VariablesView, active_state, bounded_range
from .values import cost, describe_object, to_text


@pass_context
def _finalize(context: Context, value: Any) -> str:
    """Every `{{ }}` output passes here: sized and charged before it becomes text."""
    return to_text(value, active_state())


class RenderContext(Context):
    """Jinja's context with QuickBot's variable look-up (see `RenderState.resolve`)."""

    qb_state: RenderState | None = None

    def resolve_or_missing(self, key: str) -> Any:
        if key in self.vars:
            return self.vars[key]
        state = self.qb_state or active_state()
        return state.resolve(key)

    def derived(self, locals: dict[str, Any] | None = None) -> Context:
        context = super().derived(locals)
        if isinstance(context, RenderContext):
            context.qb_state = self.qb_state
        return context


class SandboxEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox narrowed to an allow-list and bounded in every operation."""

    context_class = RenderContext
    intercepted_binops = frozenset(BINARY_OPERATORS)

    def __init__(self) -> None:
        super().__init__(
            autoescape=False,
            undefined=RecordingUndefined,
            finalize=_finalize,
            keep_trailing_newline=True,
            optimized=False,
            auto_reload=False,
            cache_size=0,
        )
        self.globals.clear()  # `range` and `vars` are resolved per render, nothing else exists
        self.filters = {
            name: sandboxed_filter(name, rule.implementation or FILTERS[name], rule)
            for name, rule in FILTER_RULES.items()
        }
        self.filters.update(PRIVATE_FILTERS)
        tests = cast("dict[str, Callable[..., Any]]", dict(TESTS))
        tests["none"] = test_none
        self.tests = {name: sandboxed_test(name, tests[name]) for name in ALLOWED_TEST_NAMES}
        #: Parses a candidate variable name as plain Jinja, to tell `{{ a.b }}` from `{{ A b }}`.
        self._plain_environment = Environment(keep_trailing_newline=True)

    # -- sandbox hooks ----------------------------------------------------------------------

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return not attr.startswith("_") and attr in allowed_attributes(obj)

    def is_safe_callable(self, obj: Any) -> bool:
        return False  # every call goes through `call`, which has its own allow-list

    def getattr(self, obj: Any, attribute: str) -> Any:
        active_state().tick()
        if isinstance(obj, Undefined):
            if isinstance(obj, Unavailable) or not isinstance(attribute, str) or attribute.startswith("_"):
                if isinstance(obj, Unavailable):
                    obj._refuse()
                raise refused_attribute(obj, str(attribute))
            return obj  # an unset variable stays unset: `{{ Address.city }}` is empty
        if isinstance(obj, VariablesView):
            return obj.lookup(attribute)
        if not isinstance(attribute, str):
            return self.undefined(obj=obj, name=str(attribute))
        if self.is_safe_attribute(obj, attribute, None):
            return getattr(obj, attribute)
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (TypeError, LookupError):
                pass
        if attribute.startswith("_") or hasattr(type(obj), attribute):
            raise refused_attribute(obj, attribute)
        return self.undefined(obj=obj, name=attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, VariablesView):
            return obj.lookup(argument)
        if isinstance(obj, Undefined):
            if isinstance(obj, Unavailable):
                obj._refuse()
            return obj
        if isinstance(obj, (str, list, tuple, range, Mapping)):
            if isinstance(argument, tuple):  # hashed to look it up: pay for its size
                state = active_state()
                state.charge(cost(argument, state))
            try:
                return obj[argument]
            except (TypeError, LookupError):
                pass
        if isinstance(argument, str):
            return self.getattr(obj, argument)
        return self.undefined(obj=obj, name=str(argument))

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise refused_attribute(obj, attribute)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        return None  # `format`/`format_map` are not on the allow-list at all

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        return binary_operation(operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        state = active_state()
        state.charge(CALL_STEPS)
        if isinstance(__obj, Undefined):
            return __obj(*args)  # raises: calling an unset variable or a removed global
        if isinstance(__obj, Macro):
            return __self._call_nested(state, __context, __obj, args, kwargs)
        if isinstance(__obj, LoopContext):  # `loop(children)` in a recursive loop
            if args:
                args = (loop_filter(__context, args[0]), *args[1:])
            return __self._call_nested(state, __context, __obj, args, kwargs)
        kwargs.pop("_loop_vars", None)
        kwargs.pop("_block_vars", None)
        if __obj is bounded_range:
            return bounded_range(*args, **kwargs)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, LoopContext) and getattr(__obj, "__name__", "") in ("cycle", "changed"):
            state.charge(sum(cost(arg, state) for arg in args))  # `changed` compares its arguments
            return __obj(*args, **kwargs)
        if owner is not None and isinstance(__obj, types.BuiltinMethodType):
            return call_method(__obj, args, kwargs, state)
        raise SecurityError(f"{describe_object(__obj).capitalize()} cannot be called in a template.")

    def _call_nested(
        self, state: RenderState, context: Context, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if state.depth >= state.limits.max_nesting:
            raise limit_error(
                state.limits,
                "max_nesting",
                f"Macros or recursive loops call each other more than {state.limits.max_nesting} levels deep.",
            )
        state.depth += 1
        try:
            return context.call(obj, *args, **kwargs)
        finally:
            state.depth -= 1

    def call_filter(
        self,
        name: str,
        value: Any,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        context: Context | None = None,
        eval_ctx: Any = None,
    ) -> Any:
        if not isinstance(name, str) or name not in FILTER_RULES:
            raise SecurityError(f"There is no filter named '{one_line_excerpt(str(name))}'.")
        return super().call_filter(name, value, args, kwargs, context, eval_ctx)

    def call_test(
        self,
        name: str,
        value: Any,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        context: Context | None = None,
        eval_ctx: Any = None,
    ) -> Any:
        if not isinstance(name, str) or name not in ALLOWED_TEST_NAMES:
            raise SecurityError(f"There is no test named '{one_line_excerpt(str(name))}'.")
        return super().call_test(name, value, args, kwargs, context, eval_ctx)

    # -- variable names with spaces ---------------------------------------------------------

    def _tokenize(
        self, source: str, name: str | None, filename: str | None = None, state: str | None = None
    ) -> TokenStream:
        normalized = normalize_newlines(source)
        tracker = PositionTracker()
        raw = positioned(self.lexer.tokeniter(source, name, filename, state), normalized)
        rewritten = rewrite_names(raw, self._parses_as_expression)
        wrapped = self.lexer.wrap(tracker.feed(rewritten), name, filename)
        return TrackedTokenStream(tracker.record(wrapped), name, filename, tracker)

    def _parses_as_expression(self, text: str) -> bool:
        try:
            Parser(self._plain_environment, "{{ " + text + " }}").parse()
        except Exception:
            return False
        return True
