"""Which plan file applies to a workspace, and its compiled plan while the file is unchanged.

A plan is read from `QUICKBOT_SEGMENT_TRACKING_PLAN_DIR/<workspace>.json`, else from
`QUICKBOT_SEGMENT_TRACKING_PLAN`; it is compiled once and cached by file path, modification
time and size, so an edited plan is picked up by the next event without a restart, and a plan
edited into something unusable leaves the last good version in force.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ...core import FileChecks, LruCache, file_stem
from ..settings import QualityVariables
from .compiled import CompiledPlan
from .errors import TrackingPlanError
from .formats import compile_plan

__all__ = ["PLAN_DIR_ENV", "PLAN_PATH_ENV", "PlanResolver", "Resolution", "load_plan"]

logger = logging.getLogger("quickbot_segment_plugin.tracking_plans")

PLAN_DIR_ENV: Final = "QUICKBOT_SEGMENT_TRACKING_PLAN_DIR"
PLAN_PATH_ENV: Final = "QUICKBOT_SEGMENT_TRACKING_PLAN"
MAX_PLAN_BYTES: Final = 5 * 1024 * 1024
COMPILED_CACHE_SIZE: Final = 256


_compiled: LruCache[tuple[str, int, int], CompiledPlan] = LruCache(COMPILED_CACHE_SIZE)


def load_plan(path: str | os.PathLike[str]) -> CompiledPlan:
    """The compiled plan in `path`, from the process-wide cache while the file is unchanged."""
    resolved = os.path.abspath(os.fspath(path))
    try:
        stat = os.stat(resolved)
    except OSError as error:
        raise TrackingPlanError(
            f"cannot read the tracking plan {resolved}: {error.strerror}", field=PLAN_PATH_ENV
        ) from None
    return _load_stat(resolved, stat.st_mtime_ns, stat.st_size)


def _load_stat(path: str, mtime_ns: int, size: int) -> CompiledPlan:
    key = (path, mtime_ns, size)
    plan = _compiled.get(key)
    if plan is not None:
        return plan
    if size > MAX_PLAN_BYTES:
        raise TrackingPlanError(f"the tracking plan {path} is larger than {MAX_PLAN_BYTES // (1024 * 1024)} MB")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TrackingPlanError(f"cannot read the tracking plan {path}: {error}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise TrackingPlanError(
            f"the tracking plan {path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None
    plan = compile_plan(document, source=path)
    _compiled.put(key, plan)
    return plan


@dataclass(frozen=True)
class Resolution:
    """The plan for a workspace now: `plan` (or None), a `warning` to log, or an `error`."""

    plan: CompiledPlan | None = None
    warning: str | None = None
    error: TrackingPlanError | None = None


_NO_PLAN: Final = Resolution()


class PlanResolver:
    """Finds each workspace's plan file and keeps its compiled plan while the file is unchanged.

    Settings are read once, when the resolver is made; the plan file is looked at (one `stat`)
    once per recheck interval (core/file_checks.py), so an edit is in force from the first
    event after it.
    """

    def __init__(self, plan_dir: str | None, default_path: str | None, files: FileChecks | None = None) -> None:
        self.plan_dir = os.path.abspath(plan_dir) if plan_dir else None
        self.default_path = os.path.abspath(default_path) if default_path else None
        self._files = files if files is not None else FileChecks(0)
        self._lock = threading.Lock()
        # path -> (stat key, last good plan or None, what to answer for that file as it is)
        self._state: dict[str, tuple[tuple[int, int], CompiledPlan | None, Resolution]] = {}
        self._candidates: dict[str | None, tuple[str, ...]] = {}
        self._reported: set[str] = set()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PlanResolver:
        variables = QualityVariables.from_env(environ)
        return cls(variables.tracking_plan_dir or None, variables.tracking_plan or None, FileChecks.from_env(environ))

    @property
    def enabled(self) -> bool:
        return self.plan_dir is not None or self.default_path is not None

    def for_workspace(self, workspace_id: str | None) -> Resolution:
        if not self.enabled:
            return _NO_PLAN
        return self._files.concluded(self._resolve, workspace_id)

    def _resolve(self, workspace_id: str | None) -> Resolution:
        found = self._stat_for(workspace_id)
        if found is None:
            return _NO_PLAN
        if isinstance(found, Resolution):
            return found
        path, stat_key = found
        state = self._state.get(path)  # one dict read: the common case takes no lock
        if state is not None and state[0] == stat_key:
            return state[2]
        last_good = state[1] if state is not None else None
        plan: CompiledPlan | None
        try:
            plan = _load_stat(path, *stat_key)
            resolution = Resolution(plan=plan)
        except TrackingPlanError as failure:
            logger.error("tracking plan %s cannot be used: %s", path, failure)
            plan = last_good
            resolution = _failed(failure, last_good)
        with self._lock:
            self._state[path] = (stat_key, plan, resolution)
        return resolution

    def path_for(self, workspace_id: str | None) -> str | None:
        """The workspace's own plan file in the plan directory (`workspace_files` encodes the id)."""
        stem = file_stem(workspace_id or "")
        if self.plan_dir is None or stem is None:
            return None
        return os.path.join(self.plan_dir, f"{stem}.json")

    def describe(self, workspace_id: str | None) -> str:
        """Which plan file applies to the workspace, in a sentence for `validate` and `privacy check`."""
        if not self.enabled:
            return f"no tracking plan ({PLAN_DIR_ENV} and {PLAN_PATH_ENV} are not set)"
        found = self._stat_for(workspace_id)
        if isinstance(found, Resolution):
            return f"the tracking plan cannot be used: {found.error}"
        if found is not None:
            return f"{found[0]} applies"
        own = self.path_for(workspace_id)
        return f"no tracking plan ({own} does not exist)" if own else "no tracking plan"

    def _stat_for(self, workspace_id: str | None) -> tuple[str, tuple[int, int]] | Resolution | None:
        """The first plan file that exists; an error `Resolution` when the configured directory
        cannot say whether the workspace has one: a plan must never be skipped for none."""
        for path in self._candidates_for(workspace_id):
            try:
                stat = self._files.stat(path)
            except FileNotFoundError:
                if path != self.default_path and self.plan_dir is not None and not self._files.is_dir(self.plan_dir):
                    return self._unusable(f"the tracking plan directory {self.plan_dir} does not exist")
                continue
            except OSError as error:
                return self._unusable(f"{path}: cannot be read ({error.strerror or error})")
            return path, (stat.st_mtime_ns, stat.st_size)
        if workspace_id and self.plan_dir is not None and self.path_for(workspace_id) is None:
            return self._unusable(f"the workspace id {workspace_id!r} cannot be mapped to a plan file name")
        return None

    def _unusable(self, problem: str) -> Resolution:
        """Logged once per problem (every event gets it in its result)."""
        with self._lock:
            first = problem not in self._reported
            if first:
                if len(self._reported) >= 10_000:
                    self._reported.clear()
                self._reported.add(problem)
        if first:
            logger.error("tracking plan cannot be used: %s; events are refused", problem)
        return Resolution(error=TrackingPlanError(problem))

    def _candidates_for(self, workspace_id: str | None) -> tuple[str, ...]:
        candidates = self._candidates.get(workspace_id)
        if candidates is None:
            found = []
            own = self.path_for(workspace_id)
            if own is not None:
                found.append(own)
            if self.default_path is not None:
                found.append(self.default_path)
            candidates = tuple(found)
            with self._lock:
                if len(self._candidates) >= 100_000:
                    self._candidates.clear()  # a bound, not a policy: rebuilt on the next event
                self._candidates[workspace_id] = candidates
        return candidates


def _failed(error: TrackingPlanError, last_good: CompiledPlan | None) -> Resolution:
    if last_good is None:
        return Resolution(error=error)
    return Resolution(
        plan=last_good,
        warning=f"The tracking plan file was changed but cannot be used ({error}); "
        "its previous version is still applied.",
    )
