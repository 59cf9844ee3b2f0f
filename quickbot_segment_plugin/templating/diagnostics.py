"""Error messages: Jinja's errors said so a bot builder can act on them.

Jinja words its errors for template authors who read Python; these are rephrased, located
(line, and column when it can be found), and never carry more than a short excerpt of a
value, because values are user data.
"""

from __future__ import annotations

import re

from jinja2.exceptions import SecurityError, UndefinedError

from .errors import TemplateError, one_line_excerpt
from .filters import ALLOWED_FILTERS, ALLOWED_TESTS

_NAME_HINT = (
    " Variable names written as {{ name }} may contain letters, digits, spaces, '-' and '.'; "
    'for any other name write {{ vars["the name"] }}.'
)


def line_and_column(source: str, offset: int) -> tuple[int, int]:
    line = source.count("\n", 0, offset) + 1
    return line, offset - (source.rfind("\n", 0, offset) + 1) + 1


def column_of(source: str, line: int, pattern: str) -> int | None:
    lines = source.split("\n")
    if not 1 <= line <= len(lines):
        return None
    match = re.search(pattern, lines[line - 1])
    return match.start() + 1 if match else None


def explain_syntax(message: str) -> str:
    """Jinja's syntax messages, rephrased for bot builders where they are cryptic."""
    if "expected 'end of print statement'" in message and "unexpected end of template" in message:
        return "A '{{' is not closed with '}}'."
    unclosed = re.search(r"The innermost block that needs to be closed is '(\w+)'", message)
    if unclosed:
        return f"'{{% {unclosed.group(1)} %}}' is not closed: add '{{% end{unclosed.group(1)} %}}'."
    if message == "unexpected 'end of print statement'":
        return "Something is missing before '}}'."
    if message == "unexpected 'end of statement block'":
        return "Something is missing before '%}'."
    if message.startswith("Expected an expression, got 'end of print statement'"):
        return "'{{ }}' is empty: write a variable name or an expression inside."
    unknown = re.search(r"Encountered unknown tag '([^']*)'", message)
    if unknown:
        return f"'{{% {unknown.group(1)} %}}' is not a statement templates know."
    character = re.match(r"unexpected char (.+) at \d+$", message)
    if character:
        return f"Unexpected character {character.group(1)}." + _NAME_HINT
    for kind, allowed in (("filter", ALLOWED_FILTERS), ("test", ALLOWED_TESTS)):
        unknown_name = re.match(rf"No {kind} named '([^']*)'", message)
        if unknown_name:
            available = ", ".join(sorted(allowed))
            return f"There is no {kind} named '{unknown_name.group(1)}'. Available {kind}s: {available}."
    text = message.rstrip(".") + "."
    if "expected token 'end of print statement'" in message:
        text += _NAME_HINT
    return text[0].upper() + text[1:]


def _runtime_message(error: BaseException) -> str:
    """A bot-builder message for an exception raised while rendering; never a full value."""
    text = one_line_excerpt(str(error))
    if isinstance(error, SecurityError):
        return text if text else "This is not allowed in templates."
    if isinstance(error, UndefinedError):
        unset = re.match(r"'([^']*)' is undefined", text)
        if unset:
            return (
                f"The variable '{unset.group(1)}' is not set, so it cannot be used here "
                f"(give it a fallback, e.g. {{{{ {unset.group(1)} | default(0) }}}})."
            )
        no_attribute = re.match(r"'(.+?) object' has no attribute '(.*)'$", text)
        if no_attribute:
            return f"There is no '{no_attribute.group(2)}' on {no_attribute.group(1)} values."
        return f"A value is not set: {text}"
    if isinstance(error, ZeroDivisionError):
        return "The template divides by zero."
    if isinstance(error, RecursionError):
        return "The template nests too deeply."
    if isinstance(error, MemoryError):
        return "The template needs too much memory."
    if isinstance(error, (TypeError, ValueError, OverflowError, KeyError, IndexError, AttributeError)):
        return f"The template cannot be evaluated: {text}"
    return f"The template failed ({type(error).__name__}): {text}"


def _template_line(error: BaseException) -> int | None:
    """The template line where a render error happened, from Jinja's compiled code."""
    traceback = error.__traceback__
    line = None
    while traceback is not None:
        template = traceback.tb_frame.f_globals.get("__jinja_template__")
        if template is not None:
            line = template.get_corresponding_lineno(traceback.tb_lineno)
        traceback = traceback.tb_next
    return line


def render_error(error: Exception) -> TemplateError:
    line = _template_line(error)
    if isinstance(error, TemplateError):
        return error.located(line)
    return TemplateError(_runtime_message(error)).located(line)
