"""The template engine: compiles each field once and renders it for every conversation.

It picks the cheapest compiled form a source allows (see `compiled`), keeps compiled
templates in a bounded LRU cache shared by every thread, and turns Jinja's syntax errors into
located `TemplateError`s at save time. `default_engine()` is the one every workspace shares.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Mapping

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.parser import Parser

from .compiled import (
    RESULT_NAME,
    CompiledTemplate,
    InterpolationTemplate,
    JinjaTemplate,
    LiteralTemplate,
    NameRef,
    Rendered,
    VariableTemplate,
)
from .diagnostics import column_of, explain_syntax, line_and_column
from .errors import TemplateError, limit_error, one_line_excerpt
from .filters import ALLOWED_TESTS
from .hardening import REFUSED_STATEMENTS, RESERVED_NAMES, Hardener, referenced_names
from .limits import TemplateLimits
from .names import (
    NOT_PLAIN_VARIABLES,
    PrintKind,
    TrackedTokenStream,
    classify_print,
    normalize_newlines,
    positioned,
)
from .sandbox import SandboxEnvironment


def is_template(text: str) -> bool:
    """Whether `text` holds any template syntax at all; plain text is sent as it is."""
    return "{{" in text or "{%" in text or "{#" in text


class TemplateEngine:
    """Compiles and renders field templates under one set of limits; shared by all workspaces.

    Thread-safe: compiled templates are immutable, render state is per call, and the LRU
    cache of compiled templates is guarded by a lock.
    """

    def __init__(self, limits: TemplateLimits | None = None) -> None:
        self.limits = limits if limits is not None else TemplateLimits()
        self._environment = SandboxEnvironment()
        self._cache: OrderedDict[str, CompiledTemplate] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, source: str) -> None:
        """Save-time check of one field: size and syntax, without rendering anything."""
        self.compile(source)

    def compile(self, source: str) -> CompiledTemplate:
        """The compiled template for `source`; the same object again while it stays cached."""
        # Reads skip the lock: each OrderedDict call is atomic under the GIL, and a key evicted
        # between the two calls only costs a recompile.
        compiled = self._cache.get(source)
        if compiled is not None:
            try:  # noqa: SIM105 (contextlib.suppress costs more than this whole look-up)
                self._cache.move_to_end(source)
            except KeyError:
                pass
            return compiled
        compiled = self._build(source)
        with self._lock:
            existing = self._cache.get(source)
            if existing is not None:
                return existing
            self._cache[source] = compiled
            while len(self._cache) > self.limits.cache_size:
                self._cache.popitem(last=False)
        return compiled

    def render(self, source: str, variables: Mapping[str, object]) -> Rendered:
        return self.compile(source).render(variables)

    def variables_in(self, source: str) -> frozenset[str]:
        """Names of the variables a template reads, e.g. to warn about an event name built
        from variables (which fragments analytics)."""
        return self.compile(source).variables

    # -- compiling --------------------------------------------------------------------------

    def _build(self, source: str) -> CompiledTemplate:
        if not isinstance(source, str):
            raise TypeError(f"a template is text, not {type(source).__name__}")
        if len(source) > self.limits.max_source_chars:
            raise limit_error(
                self.limits,
                "max_source_chars",
                f"The template is {len(source):,} characters long; the limit is {self.limits.max_source_chars:,}.",
            )
        if not is_template(source):
            return LiteralTemplate(self, source, source)
        parts = self._plain_parts(source)
        if parts is not None:
            if not any(isinstance(part, NameRef) for part in parts):
                return LiteralTemplate(self, source, "".join(part for part in parts if isinstance(part, str)))
            if len(parts) == 1 and source.startswith("{{") and source.endswith("}}"):
                return VariableTemplate(self, source, parts[0].name)  # type: ignore[union-attr]
            return InterpolationTemplate(self, source, parts)
        return self._compile_jinja(source)

    def _plain_parts(self, source: str) -> list[str | NameRef] | None:
        """Split text made only of plain variable references, or None if it needs Jinja."""
        try:
            tokens = list(positioned(self._environment.lexer.tokeniter(source, None), normalize_newlines(source)))
        except Exception:
            return None  # the Jinja path reports the syntax error properly
        parts: list[str | NameRef] = []
        index = 0
        while index < len(tokens):
            kind = tokens[index][1]
            if kind == "data":
                parts.append(tokens[index][2])
            elif kind == "variable_begin":
                end = index + 1
                while end < len(tokens) and tokens[end][1] != "variable_end":
                    end += 1
                if end == len(tokens):
                    return None
                inner = tokens[index + 1 : end]
                print_kind, name = classify_print(inner, self._environment._parses_as_expression)
                plain_name = print_kind is PrintKind.NAME and name not in NOT_PLAIN_VARIABLES
                if print_kind is PrintKind.VARIABLE or plain_name:
                    parts.append(NameRef(name))
                else:
                    return None
                index = end
            elif kind not in ("comment_begin", "comment", "comment_end", "raw_begin", "raw_end"):
                return None
            index += 1
        return parts

    def _compile_jinja(self, source: str) -> CompiledTemplate:
        environment = self._environment
        normalized = normalize_newlines(source)
        parser: Parser | None = None
        try:
            parser = Parser(environment, source)
            ast = parser.parse()
        except TemplateSyntaxError as error:
            raise self._syntax_error(error, normalized, parser) from None
        except RecursionError:
            raise TemplateError("The template nests too deeply to be read.") from None
        except Exception as error:
            raise TemplateError(f"The template cannot be read: {one_line_excerpt(str(error))}") from None
        try:
            self._refuse_statements(ast, normalized)
            variables = referenced_names(ast)
        except RecursionError:
            raise TemplateError("The template nests too deeply to be read.") from None
        line = ast.body[0].lineno if ast.body else 1
        typed = (
            source.startswith("{{")
            and source.endswith("}}")
            and len(ast.body) == 1
            and isinstance(ast.body[0], nodes.Output)
            and len(ast.body[0].nodes) == 1
            and not isinstance(ast.body[0].nodes[0], nodes.TemplateData)
        )
        try:
            hardened = Hardener().visit(ast)
            if typed:
                expression = hardened.body[0].nodes[0]
                hardened.body = [nodes.Assign(nodes.Name(RESULT_NAME, "store"), expression, lineno=1)]
            code = environment.compile(hardened)
            template = environment.template_class.from_code(environment, code, environment.make_globals(None), None)
        except TemplateSyntaxError as error:
            raise self._syntax_error(error, normalized, None) from None
        except RecursionError:
            raise TemplateError("The template nests too deeply to be read.") from None
        except Exception as error:
            raise TemplateError(f"The template cannot be compiled: {one_line_excerpt(str(error))}") from None
        return JinjaTemplate(self, source, variables, template.root_render_func, typed, line)

    def _refuse_statements(self, ast: nodes.Template, source: str) -> None:
        """Save-time refusals: statements that load templates, unknown tests, reserved names."""
        for node in ast.find_all(tuple(REFUSED_STATEMENTS)):
            tag, reason = REFUSED_STATEMENTS[type(node)]
            column = column_of(source, node.lineno, r"\{%[-+]?\s*" + tag + r"\b")
            raise TemplateError(f"'{{% {tag} %}}' is not available: {reason}.").located(node.lineno, column)
        for test in ast.find_all(nodes.Test):
            if test.name not in ALLOWED_TESTS:
                column = column_of(source, test.lineno, r"\bis\s+(?:not\s+)?" + re.escape(test.name) + r"\b")
                raise TemplateError(explain_syntax(f"No test named '{test.name}'.")).located(test.lineno, column)
        for name_node in ast.find_all(nodes.Name):
            if name_node.ctx != "load" and name_node.name in RESERVED_NAMES:
                raise TemplateError(f"'{name_node.name}' is a reserved name and cannot be assigned.").located(
                    name_node.lineno
                )
            if name_node.ctx != "load" and name_node.name.startswith("_"):
                raise TemplateError(
                    f"'{one_line_excerpt(name_node.name)}' starts with '_': names starting with '_' are not available "
                    "in templates; choose a name that starts with a letter."
                ).located(name_node.lineno)

    def _syntax_error(self, error: TemplateSyntaxError, source: str, parser: Parser | None) -> TemplateError:
        message = error.message or "The template cannot be read."
        line = error.lineno
        column: int | None = None
        at = re.search(r" at (\d+)$", message)
        lexed_to = getattr(error, "qb_offset", None)
        if at:
            line, column = line_and_column(source, int(at.group(1)))
        elif isinstance(lexed_to, int):
            while lexed_to < len(source) and source[lexed_to] in " \t":
                lexed_to += 1
            line, column = line_and_column(source, lexed_to)
        elif parser is not None and isinstance(parser.stream, TrackedTokenStream):
            current = parser.stream.current
            offset = parser.stream.tracker.positions.get(id(current))
            if current.type == "eof":
                offset = len(source)
            if offset is not None:
                token_line, token_column = line_and_column(source, offset)
                if token_line == line:
                    column = token_column
        filter_name = re.match(r"No (filter|test) named '([^']*)'", message)
        if filter_name and column is None:
            separator = r"\|\s*" if filter_name.group(1) == "filter" else r"\bis\s+(?:not\s+)?"
            column = column_of(source, line, separator + re.escape(filter_name.group(2)) + r"\b")
        return TemplateError(explain_syntax(message)).located(line, column)


_default_engine: TemplateEngine | None = None
_default_engine_lock = threading.Lock()


def default_engine() -> TemplateEngine:
    """The engine every workspace shares, built on first use from the operator's settings."""
    global _default_engine
    engine = _default_engine
    if engine is None:
        with _default_engine_lock:
            if _default_engine is None:
                _default_engine = TemplateEngine(TemplateLimits.from_env())
            engine = _default_engine
    return engine
