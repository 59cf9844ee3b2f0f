"""What all the templated fields of one `execute` may spend together.

One field is bounded by its own work budget and deadline, but a block has many fields (and
items), each rendered for every conversation; without a shared budget a block of a hundred
costly fields would cost a hundred times the limit of one. The executor opens a budget for
the duration of one execution; every render started inside it draws from it.
"""

from __future__ import annotations

import contextvars

from .limits import TemplateLimits


class ExecutionBudget:
    """Work steps and CPU seconds left to the renders of one execution."""

    __slots__ = ("seconds_left", "work_left")

    def __init__(self, limits: TemplateLimits) -> None:
        self.work_left = limits.max_execute_work
        self.seconds_left = limits.max_execute_ms / 1000


BUDGET: contextvars.ContextVar[ExecutionBudget | None] = contextvars.ContextVar(
    "quickbot_template_execution_budget", default=None
)


def open_execution_budget(limits: TemplateLimits) -> contextvars.Token[ExecutionBudget | None]:
    """Start the budget of one execution; pass what this returns to `close_execution_budget`.

    Two plain calls rather than a context manager: this runs once per conversation turn.
    """
    return BUDGET.set(ExecutionBudget(limits))


def close_execution_budget(token: contextvars.Token[ExecutionBudget | None]) -> None:
    BUDGET.reset(token)
