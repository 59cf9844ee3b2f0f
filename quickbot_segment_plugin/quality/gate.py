"""The data-quality gate `execute` passes every built message through: clean, then check the plan.

This is the one call between building a message and sending it (or returning it from a dry
run), so the payload a bot builder sees in the editor's Test run is the cleaned one, with
the same cleaning notes and plan violations a live conversation would log. It also keeps the
quality counters (`quality:<kind>:<rule>:<event>`, kind = violations, cleaned or refused),
which the counter flusher persists beside the delivery counters and `quickbot-segment stats`
shows. Editor test runs (dry runs) are not counted: they are not traffic.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..core import Level, ResultLog
from .cleaning import clean_message, dotted_path, first_refusal, value_check
from .plans import CompiledPlan, PlanResolver, PlanVerdict, TrackingPlanError, enforce, event_label, value_checks
from .plans.fast_schema import Check
from .plans.lookup import Resolution
from .settings import QualityVariables

if TYPE_CHECKING:
    from ..core import Counters


class ItemPlace(Protocol):
    """Where an item sits in the block's options, so a finding can name the field a builder edits."""

    @property
    def list_name(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def key(self) -> str: ...


__all__ = [
    "QUALITY_PREFIX",
    "QualityGate",
    "QualitySettings",
    "counter_name",
    "split_quality_counters",
]

QUALITY_PREFIX: Final = "quality:"
MAX_EVENT_LABELS: Final = 500  # per workspace; past it, events are counted as OTHER_EVENTS
OTHER_EVENTS: Final = "(other events)"
MAX_LABEL_CHARS: Final = 100


def counter_name(kind: str, rule: str, event: str) -> str:
    return f"{QUALITY_PREFIX}{kind}:{rule}:{event}"


def split_quality_counters(
    counters: Mapping[str, Mapping[str, int]],
) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
    """({workspace: {name: n}} without quality counters, quality rows sorted for display).

    A row is `{"workspace_id", "kind", "rule", "event", "count"}`.
    """
    others: dict[str, dict[str, int]] = {}
    rows: list[dict[str, Any]] = []
    for workspace, by_name in counters.items():
        for name, value in by_name.items():
            if name.startswith(QUALITY_PREFIX):
                kind, _, rest = name[len(QUALITY_PREFIX) :].partition(":")
                rule, _, event = rest.partition(":")
                rows.append({"workspace_id": workspace, "kind": kind, "rule": rule, "event": event, "count": value})
            else:
                others.setdefault(workspace, {})[name] = value
    rows.sort(key=lambda row: (row["workspace_id"], row["kind"], row["rule"], row["event"]))
    return others, rows


@dataclass(frozen=True)
class QualitySettings:
    cleaning: bool
    plans: PlanResolver

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> QualitySettings:
        return cls(QualityVariables.from_env(environ).cleaning, PlanResolver.from_env(environ))


class QualityGate:
    """Shared by every conversation of an executor; settings are read on first use, once."""

    def __init__(self, counters: Counters, environ: Mapping[str, str] | None = None) -> None:
        self._counters = counters
        self._environ = environ
        self._lock = threading.Lock()
        self._settings: QualitySettings | None = None
        self._labels: dict[str, set[str]] = {}

    def settings(self) -> QualitySettings:
        """Operator settings; a malformed one raises ConfigurationError (the block fails, naming it)."""
        if self._settings is None:
            with self._lock:
                if self._settings is None:
                    self._settings = QualitySettings.from_env(self._environ)
        return self._settings

    def check(
        self,
        message: dict[str, Any],
        workspace_id: str,
        log: ResultLog,
        *,
        dry_run: bool = False,
        items: Sequence[ItemPlace] = (),
    ) -> dict[str, Any] | None:
        """The message to send (the same object when nothing changed), or None when it is refused.

        Everything done or found is in `log`, each entry naming the field and the rule.
        """
        settings = self._settings or self.settings()
        cleaned, findings = clean_message(message, settings.cleaning)
        if not findings and not settings.plans.enabled:
            return cleaned  # most events: nothing to log or count and no plan, so none of the helpers below
        event = _counted_event(message)
        fields = _FieldPaths(message, items)
        count = self._counter(workspace_id, event, enabled=not dry_run)
        for finding in findings:
            log.add(finding.level, finding.message, field=fields.for_path(finding.path), rule=finding.rule)
            count("violations" if finding.outcome == "refused" else "cleaned", finding.rule)
        refusal = first_refusal(findings)
        if refusal is not None:
            count("refused", refusal.rule)
            return None
        resolution = settings.plans.for_workspace(workspace_id)
        if resolution.error is not None:
            log.error(
                f"The tracking plan of this workspace cannot be used ({resolution.error}); the event was not "
                "sent. Fix the plan file, or remove it to send without a plan.",
                rule="plan_unusable",
            )
            count("refused", "plan_unusable")
            return None
        if resolution.warning is not None:
            log.warning(resolution.warning, rule="plan_unusable")
        if resolution.plan is None:
            return cleaned
        try:
            verdict = enforce(resolution.plan, cleaned)
        except TrackingPlanError as error:
            log.error(
                f"The tracking plan {resolution.plan.name!r} cannot be used ({error}); the event was not sent.",
                rule="plan_unusable",
            )
            count("refused", "plan_unusable")
            return None
        self._log_verdict(verdict, log, fields, count, resolution.plan.name)
        return verdict.message

    def plan_resolution(self, workspace_id: str) -> Resolution:
        """The workspace's tracking plan as `check` would use it now (its file looked at as `check` does)."""
        return (self._settings or self.settings()).plans.for_workspace(workspace_id)

    def value_checks(
        self, plan: CompiledPlan | None, message: Mapping[str, Any], path: tuple[str, ...]
    ) -> list[Check] | None:
        """What `check` asks of the value at `path` of `message` under `plan`, as tests of the value
        alone (cleaning's, then the plan's); None when the plan cannot promise that."""
        checks: list[Check] = []
        cleaning = value_check(str(message.get("type", "")), path)
        if cleaning is not None:
            checks.append(cleaning)
        if plan is not None:
            planned = value_checks(plan, message, path)
            if planned is None:
                return None
            checks.extend(planned)
        return checks

    @staticmethod
    def _log_verdict(verdict: PlanVerdict, log: ResultLog, fields: _FieldPaths, count: _Tally, plan_name: str) -> None:
        for shown, (violation, decision, sentence) in enumerate(verdict.outcomes):
            count("violations", violation.rule, max(1, len(violation.keys)))
            if shown >= len(verdict.outcomes) - verdict.more:
                continue
            level: Level = "error" if decision == "refused" else "warning"
            path = (violation.path[0], violation.keys[0]) if violation.keys else violation.path
            log.add(level, sentence, field=fields.for_path(path), rule=violation.rule, tracking_plan=plan_name)
        if verdict.more:
            log.add(
                "error" if verdict.refused else "warning",
                f"…and {verdict.more} more tracking plan violation(s) of this event.",
                rule="plan",
            )
        if verdict.refused and verdict.outcomes:
            count("refused", verdict.outcomes[0][0].rule)

    def _counter(self, workspace_id: str, event: str, *, enabled: bool) -> _Tally:
        return _Tally(self if enabled else None, workspace_id, event)

    def _bounded_label(self, workspace_id: str, event: str) -> str:
        """The event as counted: dynamic event names must not grow the counters without bound."""
        label = event[:MAX_LABEL_CHARS]
        with self._lock:
            seen = self._labels.setdefault(workspace_id, set())
            if label in seen:
                return label
            if len(seen) >= MAX_EVENT_LABELS or len(self._labels) > 100_000:
                return OTHER_EVENTS
            seen.add(label)
        return label


class _Tally:
    """Counts one event's quality findings; nothing for dry runs (`gate` is None).

    The event's counter label is worked out on the first count only: most events have nothing
    to count, and the label takes a lock.
    """

    __slots__ = ("_label", "event", "gate", "workspace_id")

    def __init__(self, gate: QualityGate | None, workspace_id: str, event: str) -> None:
        self.gate = gate
        self.workspace_id = workspace_id
        self.event = event
        self._label: str | None = None

    def __call__(self, kind: str, rule: str, n: int = 1) -> None:
        if self.gate is None:
            return
        if self._label is None:
            self._label = self.gate._bounded_label(self.workspace_id, self.event)
        self.gate._counters.inc(self.workspace_id, counter_name(kind, rule, self._label), n)


def _counted_event(message: Mapping[str, Any]) -> str:
    """The event's label in counter names: no ':' in a track's event name, as ':' separates the parts of
    a name, and `track` for a track with no event name, so the part is never empty."""
    label = event_label(message)
    if str(message.get("type", "")) == "track":
        return label.replace(":", " ") or "track"
    return label


class _FieldPaths:
    """Maps a place in the message back to the option the bot builder edits (`traits/2/value`)."""

    def __init__(self, message: Mapping[str, Any], items: Sequence[ItemPlace]) -> None:
        self._action = message.get("type")
        self._items = items

    def for_path(self, path: Sequence[str | int]) -> str:
        if not path:
            return ""
        head = path[0]
        if head == "event" or (head in {"userId", "anonymousId", "groupId", "name", "previousId"} and len(path) == 1):
            return str(head)
        if self._action == "identify" and tuple(path[:2]) == ("traits", "email"):
            return "email"
        dotted = dotted_path(tuple(path[1:]))
        best = None
        for item in self._items:
            if item.list_name != head:
                continue
            if item.key == dotted:
                return f"{item.list_name}/{item.index}/value"
            if dotted.startswith(item.key + ".") or dotted.startswith(item.key + "["):
                best = f"{item.list_name}/{item.index}/value"
        return best or (f"{head}.{dotted}" if dotted else str(head))
