"""What checking an event against a plan yields: each violation, and what the plan's mode made of the event."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = ["MAX_VIOLATIONS_LOGGED", "Decision", "PlanVerdict", "Violation"]

MAX_VIOLATIONS_LOGGED: Final = 20


@dataclass(frozen=True)
class Violation:
    """One way an event breaks the plan, before the mode decides what becomes of it."""

    rule: str  # plan_<keyword> (plan_type, plan_required ...), unplanned_event, unplanned_property, unplanned_trait
    path: tuple[str | int, ...]
    subject: str  # "Property 'score' of 'Lead Qualified'"
    problem: str  # "must be a number, got 'high'"
    removable: tuple[str, str] | None = None  # (object, key) that omit mode can take out
    keys: tuple[str, ...] = ()  # the undeclared keys, for unplanned_property / unplanned_trait

    @property
    def text(self) -> str:
        return f"{self.subject} {self.problem}"


Decision = Literal["sent", "refused", "removed"]


@dataclass
class PlanVerdict:
    """What the plan's mode made of an event: the message to send (or None) and each violation."""

    message: dict[str, Any] | None
    outcomes: list[tuple[Violation, Decision, str]] = field(default_factory=list)  # violation, decision, sentence
    more: int = 0  # violations past MAX_VIOLATIONS_LOGGED, counted but not spelled out

    @property
    def refused(self) -> bool:
        return self.message is None
