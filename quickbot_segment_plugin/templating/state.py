"""Per-render state: the work budget, the missing variables, the variable table.

The engine is shared by every workspace and thread, so nothing a render spends or sees is
kept on it: it lives in a `RenderState` held by a context variable for the duration of one
render. Also here: what an unset variable evaluates to, `vars`, and the bounded `range()`,
because they read that state too.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from time import perf_counter, thread_time
from typing import Any, NoReturn

from jinja2.exceptions import SecurityError, TemplateRuntimeError, UndefinedError
from jinja2.runtime import ChainableUndefined
from jinja2.utils import missing

from .budget import BUDGET
from .errors import TemplateLimitError, limit_error
from .limits import TemplateLimits

#: Characters of text that cost one step of work (C-speed string work is cheap per character).
CHARS_PER_STEP = 32
#: Steps charged for calling a filter, test, method or macro (the Python call itself).
CALL_STEPS = 3
#: Steps charged per node of a loop or macro body each time it runs.
NODE_STEPS = 2

#: Wall seconds after which a render first reads its thread's CPU clock.
_FIRST_CPU_LOOK = 0.005
#: Charges between two looks at the wall clock: each charge stands for one bounded operation,
#: and reading the clock at every one would cost more than most of them.
_CALLS_PER_LOOK = 4

_NOT_SET: Any = object()


class RenderState:
    """Everything one render may spend and has seen.

    It lives in a context variable while a template runs, because several sandbox hooks
    (attribute access, the Undefined type) are called by Jinja without a context argument.

    Two budgets bound a render: work steps (what the operations say they cost) and a deadline
    in CPU time of the rendering thread, the backstop for a cost nobody foresaw. The clock is
    read in `charge`, which every loop pass, call, filter and operator goes through, so a
    render that runs past its deadline is stopped at its next step.
    """

    __slots__ = (
        "_calls_to_look",
        "_cpu_mark",
        "_deadline",
        "_used_before_mark",
        "_view",
        "budget",
        "depth",
        "limits",
        "max_work",
        "missing",
        "seconds",
        "sizes",
        "started",
        "variables",
        "work",
    )

    def __init__(self, limits: TemplateLimits, variables: Mapping[str, object]) -> None:
        self.limits = limits
        self.variables = variables
        self.work = 0
        self.depth = 0
        self.missing: dict[str, None] = {}
        self._view: VariablesView | None = None
        #: Deep sizes of the containers seen, by id (the container is kept so its id stays its own);
        #: made on first use, as most renders never size a container.
        self.sizes: dict[int, tuple[object, int]] | None = None
        self.max_work = limits.max_work
        self.seconds = limits.max_render_seconds
        self.budget = budget = BUDGET.get()
        if budget is not None:
            if budget.work_left < self.max_work:
                self.max_work = budget.work_left
            if budget.seconds_left < self.seconds:
                self.seconds = budget.seconds_left
        self.started = started = perf_counter()
        # Reading the thread's CPU clock costs microseconds, so the cheap wall clock decides when
        # to look at it: first after a few milliseconds (short renders never read it), then at the
        # wall time when the CPU budget would be spent if the thread had the CPU all along.
        self._deadline = started + (self.seconds if self.seconds < _FIRST_CPU_LOOK else _FIRST_CPU_LOOK)
        self._cpu_mark = -1.0
        self._used_before_mark = 0.0
        self._calls_to_look = _CALLS_PER_LOOK

    def charge(self, steps: int) -> None:
        self.work += steps
        if self.work > self.max_work:
            raise self._over_work()
        self._calls_to_look -= 1
        if not self._calls_to_look:
            self.tick()

    def tick(self) -> None:
        """Look at the deadline (every few charges, and at each attribute access)."""
        self._calls_to_look = _CALLS_PER_LOOK
        if perf_counter() >= self._deadline:
            self._check_time()

    def _over_work(self) -> TemplateLimitError:
        if self.max_work < self.limits.max_work:
            return limit_error(
                self.limits,
                "max_execute_work",
                f"The block's templates together do too much work (more than "
                f"{self.limits.max_execute_work:,} steps in one run): simplify their loops, macros or large lists.",
            )
        return limit_error(
            self.limits,
            "max_work",
            f"The template does too much work (more than {self.limits.max_work:,} steps): "
            "simplify its loops, macros or large lists.",
        )

    def cpu_used(self) -> float:
        """CPU seconds spent so far (the part before the first look is bounded by wall time)."""
        now = perf_counter()
        if self._cpu_mark < 0:
            return now - self.started
        return self._used_before_mark + (thread_time() - self._cpu_mark)

    def _check_time(self) -> None:
        now = perf_counter()
        if self._cpu_mark < 0:
            # CPU before this first look is at most the wall time, but a thread the OS paused
            # for long is not charged for the pause beyond twice the first look's delay.
            self._used_before_mark = min(now - self.started, 2 * _FIRST_CPU_LOOK)
            self._cpu_mark = thread_time()
            used = self._used_before_mark
        else:
            used = self._used_before_mark + (thread_time() - self._cpu_mark)
        if used >= self.seconds:
            raise self._over_time()
        self._deadline = now + (self.seconds - used)

    def _over_time(self) -> TemplateLimitError:
        if self.seconds < self.limits.max_render_seconds:
            return limit_error(
                self.limits,
                "max_execute_ms",
                f"The block's templates together take too long (more than {self.limits.max_execute_ms:,} ms "
                "of CPU in one run): simplify their loops, macros or large lists.",
            )
        return limit_error(
            self.limits,
            "max_render_ms",
            f"The template takes too long (more than {self.limits.max_render_ms:,} ms of CPU): "
            "simplify its loops, macros or large lists.",
        )

    def finish(self) -> None:
        """Hand what this render spent to the execution's budget, if there is one."""
        budget = self.budget
        if budget is not None:
            budget.work_left -= self.work
            budget.seconds_left -= self.cpu_used()

    def note_missing(self, name: str) -> bool:
        if name in self.missing:
            return False
        self.missing[name] = None
        return True

    @property
    def view(self) -> VariablesView:
        if self._view is None:
            self._view = VariablesView(self)
        return self._view

    def variable(self, name: str) -> Any:
        """The value of a variable, or an Undefined (recorded as missing) when unset or null."""
        try:
            value = self.variables.get(name)
        except TypeError:
            value = None
        if value is None:
            return RecordingUndefined(name=name)
        return value

    def resolve(self, key: str) -> Any:
        """How a bare name in a template is looked up: variables first, then the few globals."""
        if key == "vars":
            return self.view
        value = self.variables.get(key, _NOT_SET)
        if value is _NOT_SET:
            if key == "range":
                return bounded_range
            unavailable = REMOVED_GLOBALS.get(key)
            if unavailable is not None:
                return Unavailable(unavailable, name=key, exc=SecurityError)
            return missing
        if value is None:
            return missing
        return value


ACTIVE: contextvars.ContextVar[RenderState | None] = contextvars.ContextVar("quickbot_template_render", default=None)


def active_state() -> RenderState:
    state = ACTIVE.get()
    if state is None:
        # Only reachable when Jinja tries to fold a constant at compile time; it treats any
        # exception there as "not constant" and evaluates the expression at render time.
        raise RuntimeError("no template is being rendered")
    return state


class VariablesView:
    """`vars` in a template: reads any variable by its exact name, e.g. `vars['E-mail']`.

    Deliberately not a Mapping: it cannot be printed, iterated or passed around as a value,
    so a template cannot dump every variable of the conversation into one field.
    """

    __slots__ = ("_state",)

    def __init__(self, state: RenderState) -> None:
        self._state = state

    def lookup(self, name: object) -> Any:
        if not isinstance(name, str):
            return RecordingUndefined(hint="vars[...] takes a variable name in quotes.", name="vars")
        return self._state.variable(name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return self._state.variables.get(name) is not None

    def __repr__(self) -> str:
        return "<variables>"


class RecordingUndefined(ChainableUndefined):
    """What an unset variable evaluates to: empty text, `None` as a typed value.

    Creating one for a plain variable name records the name as missing, at the point of use,
    so a variable referenced only in a branch that did not run is not reported.
    """

    __slots__ = ("_qb_recorded",)

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[TemplateRuntimeError] = UndefinedError,
    ) -> None:
        super().__init__(hint, obj, name, exc)
        self._qb_recorded = False
        if hint is None and obj is missing and name is not None:
            state = ACTIVE.get()
            if state is not None:
                self._qb_recorded = state.note_missing(name)

    def forget(self) -> None:
        """The template handled this unset variable (`default`, `is defined`): not missing."""
        if self._qb_recorded and self._undefined_name is not None:
            state = ACTIVE.get()
            if state is not None:
                state.missing.pop(self._undefined_name, None)
            self._qb_recorded = False


class Unavailable(RecordingUndefined):
    """A Jinja global that QuickBot removed (`cycler`, `lipsum`...): any use is refused.

    Plain Undefined values print as empty; these must fail loudly instead, so a payload that
    relies on them is refused with a clear message rather than silently rendering nothing.
    """

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise SecurityError(self._undefined_hint or "This name is not available in templates.")

    def __str__(self) -> str:
        self._refuse()

    def __iter__(self) -> Iterator[Any]:
        self._refuse()

    def __bool__(self) -> bool:
        self._refuse()

    def __len__(self) -> int:
        self._refuse()

    def __getattr__(self, name: str) -> Any:
        self._refuse()

    def __getitem__(self, name: Any) -> Any:
        self._refuse()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._refuse()


REMOVED_GLOBALS: Mapping[str, str] = {
    name: f"'{name}' is not available in QuickBot templates."
    for name in ("cycler", "joiner", "namespace", "lipsum", "dict")
}


def bounded_range(*args: Any) -> range:
    """`range()` for templates: whole numbers only, and never more items than the limit."""
    state = active_state()
    if not args or len(args) > 3 or not all(isinstance(a, int) for a in args):
        raise TypeError("range() takes one to three whole numbers")
    numbers = range(*args)
    try:
        count = len(numbers)
    except OverflowError:
        count = state.limits.max_items + 1
    if count > state.limits.max_items:
        raise limit_error(state.limits, "max_items", f"range() would have more than {state.limits.max_items:,} items.")
    return numbers
