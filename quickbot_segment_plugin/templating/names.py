"""Variable names as the flow editor writes them (a rewrite of the token stream).

Plain Jinja reads `{{First name}}` as two names and `{{E-mail}}` as a subtraction. The
tokens (not the source text) are rewritten into `vars['First name']` look-ups, so strings
and comments are never touched, and each token keeps its offset in the source so a syntax
error can still point at the right column.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Sequence

from jinja2.exceptions import TemplateSyntaxError
from jinja2.lexer import Token, TokenStream, newline_re

from .state import REMOVED_GLOBALS

#: A raw token with its offset in the (newline-normalized) source: (line, type, text, offset).
_RawToken = tuple[int, str, str, int]

#: Words that are Jinja syntax inside an expression; a name with spaces made of ordinary words
#: only is read as one variable, one containing these words is read as an expression.
_JINJA_WORDS = frozenset(
    {
        "and", "or", "not", "in", "is", "if", "else", "elif", "for", "recursive", "true", "false",
        "none", "True", "False", "None", "with", "without", "context", "ignore", "missing", "as",
        "import", "from", "scoped", "required",
    }
)  # fmt: skip
#: Single names that must go through Jinja (globals, loop helpers, literals), never the fast path.
NOT_PLAIN_VARIABLES = _JINJA_WORDS | {"vars", "range", "loop", "caller", "varargs", "kwargs", "self", "super"}
NOT_PLAIN_VARIABLES |= frozenset(REMOVED_GLOBALS)


class PrintKind(enum.Enum):
    EXPRESSION = "expression"  # an ordinary Jinja expression
    NAME = "name"  # a single plain identifier: Jinja looks it up like any name
    VARIABLE = "variable"  # exactly one variable, by the given name
    EITHER = "either"  # the variable of that exact name if set, else the expression


def normalize_newlines(source: str) -> str:
    return "\n".join(newline_re.split(source)[::2])


def positioned(raw: Iterable[tuple[int, str, str]], source: str) -> Iterator[_RawToken]:
    """Attach to each token its offset in the source, for error columns.

    A lexer error carries no column, so it gets `qb_offset`: where lexing stopped.
    """
    position = 0
    iterator = iter(raw)
    while True:
        try:
            line, kind, value = next(iterator)
        except StopIteration:
            return
        except TemplateSyntaxError as error:
            error.qb_offset = position  # type: ignore[attr-defined]
            raise
        found = source.find(value, position) if value else -1
        if found >= 0:
            yield line, kind, value, found
            position = found + len(value)
        else:
            yield line, kind, value, position


def _is_spaces(token: _RawToken) -> bool:
    return token[1] == "whitespace" and token[2].strip(" ") == ""


_WORD_TOKENS = ("name", "integer")


def classify_print(inner: Sequence[_RawToken], parses: Callable[[str], bool]) -> tuple[PrintKind, str]:
    """Decide what the inside of one `{{ ... }}` means.

    `{{First name}}`, `{{E-mail}}`, `{{2nd answer}}` name one variable (they are not valid
    Jinja, or a dash joins words). `{{ utm.source }}` or `{{ not done }}` are valid Jinja too:
    the variable of that exact name wins when set, else the expression is evaluated.
    """
    start, stop = 0, len(inner)
    while start < stop and inner[start][1] == "whitespace":
        start += 1
    while stop > start and inner[stop - 1][1] == "whitespace":
        stop -= 1
    core = inner[start:stop]
    if not core:
        return PrintKind.EXPRESSION, ""
    last = len(core) - 1
    for index, token in enumerate(core):
        kind = token[1]
        if kind in _WORD_TOKENS:
            continue
        joins_words = (kind == "whitespace" and _is_spaces(token)) or (kind == "operator" and token[2] in ("-", "."))
        if not joins_words or index in (0, last):
            return PrintKind.EXPRESSION, ""
        if core[index - 1][1] not in _WORD_TOKENS or core[index + 1][1] not in _WORD_TOKENS:
            return PrintKind.EXPRESSION, ""
    if not any(token[1] == "name" for token in core):
        return PrintKind.EXPRESSION, ""  # `{{ 1-2 }}` is arithmetic
    text = "".join(token[2] for token in core)
    if len(core) == 1:
        return (PrintKind.NAME if text.isidentifier() else PrintKind.VARIABLE), text
    if "-" in text:
        return PrintKind.VARIABLE, text
    if parses(text):
        return PrintKind.EITHER, text
    return PrintKind.VARIABLE, text


def _variable_tokens(name: str, at: _RawToken) -> list[_RawToken]:
    line, offset = at[0], at[3]
    return [
        (line, "name", "vars", offset),
        (line, "operator", "[", offset),
        (line, "string", "'" + name + "'", offset),
        (line, "operator", "]", offset),
    ]


def _either_tokens(name: str, inner: Sequence[_RawToken]) -> list[_RawToken]:
    first = inner[0]
    line, offset = first[0], first[3]
    quoted = "'" + name + "'"
    return [
        (line, "operator", "(", offset),
        *_variable_tokens(name, first),
        (line, "name", "if", offset),
        (line, "string", quoted, offset),
        (line, "name", "in", offset),
        (line, "name", "vars", offset),
        (line, "name", "else", offset),
        (line, "operator", "(", offset),
        *inner,
        (line, "operator", ")", offset),
        (line, "operator", ")", offset),
    ]


def _merge_name_runs(inner: Sequence[_RawToken], in_statement: bool) -> list[_RawToken]:
    """Inside an expression, read `First name` (words separated by spaces) as one variable.

    Two ordinary words side by side are never valid Jinja, so this only turns errors into
    look-ups. Positions where Jinja expects a bare word are left alone: the statement keyword
    of `{% ... %}`, a filter name after `|`, an attribute after `.`, a test after `is`.
    """
    output: list[_RawToken] = []
    previous: list[str] = []  # the texts of the last two significant tokens
    seen_significant = False
    index = 0
    count = len(inner)
    while index < count:
        token = inner[index]
        if token[1] == "whitespace":
            output.append(token)
            index += 1
            continue
        can_start = (
            token[1] == "name"
            and token[2] not in _JINJA_WORDS
            and not (in_statement and not seen_significant)
            and not (previous and previous[-1] in ("|", ".", "is"))
            and not (len(previous) == 2 and previous == ["is", "not"])
        )
        seen_significant = True
        end = index
        if can_start:
            probe = index + 1
            while probe < count:
                step = probe
                if inner[step][1] == "whitespace":
                    if not _is_spaces(inner[step]):
                        break
                    step += 1
                if step < count and inner[step][1] in ("name", "integer") and inner[step][2] not in _JINJA_WORDS:
                    end = step
                    probe = step + 1
                    continue
                break
        if end > index or (can_start and not token[2].isidentifier()):
            text = "".join(part[2] for part in inner[index : end + 1])
            output.extend(_variable_tokens(text, token))
            previous = [*previous, "]"][-2:]
            index = end + 1
            continue
        output.append(token)
        previous = [*previous, token[2]][-2:]
        index += 1
    return output


def _rewrite_tag(tag: list[_RawToken], parses: Callable[[str], bool]) -> list[_RawToken]:
    begin = tag[0]
    closed = len(tag) > 1 and tag[-1][1] in ("variable_end", "block_end")
    inner = tag[1:-1] if closed else tag[1:]
    end = [tag[-1]] if closed else []
    if begin[1] == "variable_begin":
        kind, name = classify_print(inner, parses)
        if kind is PrintKind.VARIABLE:
            return [begin, *_variable_tokens(name, inner[0]), *end]
        if kind is PrintKind.EITHER:
            return [begin, *_either_tokens(name, inner), *end]
    return [begin, *_merge_name_runs(inner, begin[1] == "block_begin"), *end]


def rewrite_names(tokens: Iterator[_RawToken], parses: Callable[[str], bool]) -> Iterator[_RawToken]:
    for token in tokens:
        if token[1] not in ("variable_begin", "block_begin"):
            yield token
            continue
        closing = "variable_end" if token[1] == "variable_begin" else "block_end"
        tag = [token]
        for part in tokens:
            tag.append(part)
            if part[1] == closing:
                break
        yield from _rewrite_tag(tag, parses)


class PositionTracker:
    """Remembers where in the source each parser token came from, to report error columns."""

    def __init__(self) -> None:
        self.offset = 0
        self.positions: dict[int, int] = {}

    def feed(self, tokens: Iterable[_RawToken]) -> Iterator[tuple[int, str, str]]:
        for line, kind, value, offset in tokens:
            self.offset = offset
            yield line, kind, value

    def record(self, tokens: Iterable[Token]) -> Iterator[Token]:
        for token in tokens:
            self.positions[id(token)] = self.offset
            yield token


class TrackedTokenStream(TokenStream):
    def __init__(
        self, generator: Iterable[Token], name: str | None, filename: str | None, tracker: PositionTracker
    ) -> None:
        self.tracker = tracker
        super().__init__(generator, name, filename)
