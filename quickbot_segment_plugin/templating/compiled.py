"""Compiled templates, and `Rendered`, what rendering one gives.

Most fields are plain text, exactly one variable, or text with plain variable references:
those compile to templates that never enter Jinja (a dictionary look-up per conversation).
Everything else runs in the sandbox with a fresh work budget.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

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


class VariableTemplate(CompiledTemplate):
    """A field that is exactly `{{Some name}}`: one dictionary look-up, the value keeps its type."""

    __slots__ = ("_name", "_unset")

    def __init__(self, engine: TemplateEngine, source: str, name: str) -> None:
        super().__init__(engine, source, frozenset({name}))
        self._name = name
        self._unset = Rendered(None, (name,))

    def render(self, variables: Mapping[str, object]) -> Rendered:
        limits = self._engine.limits
        try:
            value = variables.get(self._name)
            if value is None:
                return self._unset
            kind = type(value)
            if kind is bool or kind is float:
                return _new_tuple(Rendered, (value, ()))
            if isinstance(value, str) and kind is str and len(value) <= limits.max_output_chars:
                return _new_tuple(Rendered, (value, ()))
            if isinstance(value, int) and kind is int and value.bit_length() <= limits.max_number_bits:
                return _new_tuple(Rendered, (value, ()))
            state = RenderState(limits, variables)
            token = ACTIVE.set(state)
            try:
                return Rendered(typed_value(value, state), ())
            finally:
                ACTIVE.reset(token)
        except Exception as error:
            raise render_error(error) from None


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
