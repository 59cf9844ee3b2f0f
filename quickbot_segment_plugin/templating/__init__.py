"""Sandboxed `{{ variable }}` templates for every string field of the Segment block.

Bot builders are not trusted, yet every field they type is evaluated on the shared server for
every conversation. So a template here is a tiny, closed language: variable look-ups, Jinja
expressions and an allow-list of filters, tests and methods, each bounded in the memory and
time it can spend. It can never reach Python internals, files, the network, the process or
another conversation's variables, and every failure becomes a `TemplateError` a bot builder
can read. The engine is shared by every workspace, so it keeps no per-render state on itself
(render state lives in a context variable) and its compile cache is safe to share between
threads.

Syntax, in the bot builder's words (docs/bot-builders/templates.md is the long form):

- `{{First name}}` reads a variable exactly as the flow editor names it: letters and digits of
  any language, `_`, spaces, `-` and `.` are all part of the name (a variable of that exact
  name wins over reading `{{ utm.source }}` or `{{ not done }}` as an expression).
- Inside a larger expression, names with spaces still work (`{{ First name | upper }}`);
  any name at all can be read with `vars['What is your name?']`.
- A field that is exactly one `{{ ... }}` keeps the value's type (a number stays a number);
  anything else is text. Rendered text is never rendered again.
- An unset variable (missing, or `null`) renders as nothing and is reported in
  `Rendered.missing`.

How it is hardened (Jinja's `ImmutableSandboxedEnvironment` plus):

- an allow-list of filters, tests, globals, attributes and methods;
- every binary operator, comparison, concatenation, slice, loop, macro call, filter and method
  call is charged to a per-render work budget, and checked *before* it builds a large value;
- output is counted while it streams, so a template never builds a huge string to measure it.

The package, one job a module: `limits` (what a template may cost), `errors`, `state` (the
per-render budget), `values`, `operators`, `methods` and `filters` (the bounded allow-lists),
`hardening` (the rewrite of the parsed template), `names` (variable names with spaces),
`sandbox` (the Jinja environment), `diagnostics` (error messages), `compiled` and `engine`.
"""

from __future__ import annotations

from .budget import close_execution_budget, open_execution_budget
from .compiled import NOT_PLAIN, CompiledTemplate, Rendered
from .engine import TemplateEngine, default_engine, is_template
from .errors import TemplateError, TemplateLimitError
from .filters import ALLOWED_FILTERS, ALLOWED_TESTS
from .limits import LIMIT_SETTINGS as LIMIT_SETTINGS
from .limits import TemplateLimits, TemplateSettings

__all__ = [
    "ALLOWED_FILTERS",
    "ALLOWED_TESTS",
    "NOT_PLAIN",
    "CompiledTemplate",
    "Rendered",
    "TemplateEngine",
    "TemplateError",
    "TemplateLimitError",
    "TemplateLimits",
    "TemplateSettings",
    "close_execution_budget",
    "default_engine",
    "is_template",
    "open_execution_budget",
]
