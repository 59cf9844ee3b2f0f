"""Compiled templates, and `Rendered`, what rendering one gives.

Most fields are plain text, exactly one variable, or text with plain variable references:
those compile to templates that never enter Jinja (a dictionary look-up per conversation).
Everything else runs in the sandbox with a fresh work budget.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NamedTuple, cast

from jinja2.runtime import Context

from .diagnostics import render_error
from .errors import one_line_excerpt
from .sandbox import RenderContext
from .state import ACTIVE, RenderState
from .values import to_text, too_long_error, typed_value

if TYPE_CHECKING:
    from .engine import TemplateEngine


class Rendered(NamedTuple):
    """The result of rendering one field.

    `value` is a `str`, except for a field that is exactly one `{{ ... }}` expression: then it
    is the expression's own value (int, float, bool, list, dict, None...). `missing` names the
    variables that were used but not set, in first-use order, so the block can log them.
    (A named tuple because one is built per field per conversation: it is the cheapest
    immutable record.)
    """

    value: object
    missing: tuple[str, ...] = ()


#: Builds a `Rendered` without the named tuple's Python-level `__new__` (hot path).
_new_tuple = tuple.__new__


class _NotPlain:
    """`render_plain`'s answer when the ordinary `render` has to decide (and explain)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_PLAIN"


NOT_PLAIN: Final = _NotPlain()


class CompiledTemplate(ABC):
    """One field's template, compiled once and rendered for every conversation."""

    __slots__ = ("_engine", "source", "variables")

    def __init__(self, engine: TemplateEngine, source: str, variables: frozenset[str]) -> None:
        self._engine = engine
        self.source = source
        #: Names of the variables the template reads (for lint).
        self.variables = variables

    @abstractmethod
    def render(self, variables: Mapping[str, object]) -> Rendered:
        """The value for these variables; each kind of template has its own fast way."""

    def render_plain(self, variables: Mapping[str, object]) -> object:
        """`render(variables).value` when that needs no work budget and has nothing to report:
        every variable read is set to plain text, a number or a yes/no. `NOT_PLAIN` otherwise.

        The block's compiled message (execution/message_plan.py) renders through this and hands
        anything else to `render`, which then does the work and says why; since this never
        starts a render state, trying it first charges no budget twice.
        """
        return NOT_PLAIN

    @property
    def is_literal(self) -> bool:
        """Text without any template syntax: the same value for every conversation."""
        return False

    @property
    def renders_plainly(self) -> bool:
        """Whether `render_plain` can ever answer: plain text, one variable, or text with `{{Name}}`s."""
        return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {one_line_excerpt(self.source)[:40]!r}>"


class LiteralTemplate(CompiledTemplate):
    """Text with no `{{`, `{%` or `{#`: returned as it is, Jinja is never involved."""

    __slots__ = ("_rendered",)

    def __init__(self, engine: TemplateEngine, source: str, text: str) -> None:
        super().__init__(engine, source, frozenset())
        self._rendered = Rendered(text, ())

    def render(self, variables: Mapping[str, object]) -> Rendered:
        return self._rendered

    def render_plain(self, variables: Mapping[str, object]) -> object:
        return self._rendered.value

    @property
    def is_literal(self) -> bool:
        return True

    @property
    def renders_plainly(self) -> bool:
        return True


class VariableTemplate(CompiledTemplate):
    """A field that is exactly `{{Some name}}`: one dictionary look-up, the value keeps its type."""

    __slots__ = ("_name", "_unset")

    def __init__(self, engine: TemplateEngine, source: str, name: str) -> None:
        super().__init__(engine, source, frozenset({name}))
        self._name = name
        self._unset = Rendered(None, (name,))

    def render(self, variables: Mapping[str, object]) -> Rendered:
        try:
            plain = self.render_plain(variables)
            if plain is not NOT_PLAIN:
                return _new_tuple(Rendered, (plain, ()))
            value = variables.get(self._name)
            if value is None:
                return self._unset
            state = RenderState(self._engine.limits, variables)
            token = ACTIVE.set(state)
            try:
                return Rendered(typed_value(value, state), ())
            finally:
                ACTIVE.reset(token)
        except Exception as error:
            raise render_error(error) from None

    @property
    def renders_plainly(self) -> bool:
        return True

    def render_plain(self, variables: Mapping[str, object]) -> object:
        # The value as it is, for the types that need no conversion; `render` does the rest.
        value = variables.get(self._name)
        if type(value) is str:
            return value if len(value) <= self._engine.limits.max_output_chars else NOT_PLAIN
        if type(value) is bool or type(value) is float:
            return value
        if type(value) is int and value.bit_length() <= self._engine.limits.max_number_bits:
            return value
        return NOT_PLAIN


class InterpolationTemplate(CompiledTemplate):
    """Text with plain `{{Name}}` references only ("Hello {{First name}}!"): joined directly."""

    __slots__ = ("_parts",)

    def __init__(self, engine: TemplateEngine, source: str, parts: list[str | NameRef]) -> None:
        names = frozenset(part.name for part in parts if isinstance(part, NameRef))
        super().__init__(engine, source, names)
        self._parts = tuple(parts)

    def render(self, variables: Mapping[str, object]) -> Rendered:
        limits = self._engine.limits
        try:
            pieces: list[str] = []
            unset: dict[str, None] = {}
            total = 0
            state: RenderState | None = None
            for part in self._parts:
                if type(part) is str:
                    text = part
                else:
                    name = part.name  # type: ignore[union-attr]
                    value = variables.get(name)
                    if value is None:
                        unset[name] = None
                        continue
                    if type(value) is str:
                        text = value
                    else:
                        if state is None:
                            state = RenderState(limits, variables)
                        token = ACTIVE.set(state)
                        try:
                            text = to_text(value, state)
                        finally:
                            ACTIVE.reset(token)
                total += len(text)
                if total > limits.max_output_chars:
                    raise too_long_error(limits)
                pieces.append(text)
            return _new_tuple(Rendered, ("".join(pieces), tuple(unset)))
        except Exception as error:
            raise render_error(error) from None

    @property
    def renders_plainly(self) -> bool:
        return True

    def render_plain(self, variables: Mapping[str, object]) -> object:
        # `render` with every variable set to text: nothing to convert, nothing missing.
        pieces: list[str] = []
        total = 0
        for part in self._parts:
            if type(part) is str:
                text = part
            else:
                value = variables.get(cast(NameRef, part).name)
                if type(value) is not str:
                    return NOT_PLAIN
                text = value
            total += len(text)
            pieces.append(text)
        if total > self._engine.limits.max_output_chars:
            return NOT_PLAIN
        return "".join(pieces)


@dataclass(frozen=True)
class NameRef:
    name: str


RESULT_NAME = "qb_result"


class JinjaTemplate(CompiledTemplate):
    """Everything else: compiled by the hardened sandbox, rendered with a fresh work budget."""

    __slots__ = ("_line", "_render_function", "_typed")

    def __init__(
        self,
        engine: TemplateEngine,
        source: str,
        variables: frozenset[str],
        render_function: Callable[[Context], Iterator[str]],
        typed: bool,
        line: int = 1,
    ) -> None:
        super().__init__(engine, source, variables)
        self._render_function = render_function
        self._typed = typed
        self._line = line  # where the one expression of a typed field is

    def render(self, variables: Mapping[str, object]) -> Rendered:
        engine = self._engine
        limits = engine.limits
        state = RenderState(limits, variables)
        token = ACTIVE.set(state)
        try:
            context = RenderContext(engine._environment, {}, None, {})
            context.qb_state = state
            if self._typed:
                for _ in self._render_function(context):
                    pass
                try:
                    value = typed_value(context.vars.get(RESULT_NAME), state)
                except Exception as error:
                    raise render_error(error).located(self._line) from None
            else:
                pieces: list[str] = []
                total = 0
                for chunk in self._render_function(context):
                    total += len(chunk)
                    if total > limits.max_output_chars:
                        raise too_long_error(limits)
                    pieces.append(chunk)
                value = "".join(pieces)
            return _new_tuple(Rendered, (value, tuple(state.missing)))
        except Exception as error:
            raise render_error(error) from None
        finally:
            ACTIVE.reset(token)
            if state.budget is not None:
                state.finish()
