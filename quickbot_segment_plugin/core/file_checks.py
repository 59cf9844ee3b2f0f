"""How often a workspace's policy and plan files are looked at: at most once per recheck interval.

Every event asks whether its workspace's privacy policy and tracking plan changed, and that
was an `os.stat` each, plus one of the directory when the file does not exist. A system call
releases the GIL; while a delivery thread is busy (serialising, compressing) the conversation
thread then waits to get it back, and those waits were a fifth of a planned, policed `execute`
(bench_execute.py, the heavy block). So each answer (the file's stat, or the error) is kept
for `QUICKBOT_SEGMENT_WORKSPACE_FILES_RECHECK_MS` (1 second by default): an edited, added or
removed file applies from the first event after that, and 0 looks on every event.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from typing import ClassVar, Final, TypeVar, cast

from pydantic import Field

from .settings import Settings

MAX_REMEMBERED: Final = 100_000  # paths; workspace ids come from the host, so the map is bounded

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class WorkspaceFileSettings(Settings):
    title: ClassVar[str] = "Workspace files"

    workspace_files_recheck_ms: int = Field(
        1000,
        ge=0,
        le=60_000,
        description="How long a workspace's privacy policy and tracking plan files are trusted unchanged, in "
        "milliseconds: an edit applies from the first event after it (0: the files are looked at on every event).",
    )


class FileChecks:
    """`os.stat` and `os.path.isdir`, each answer kept for the recheck interval; thread-safe."""

    def __init__(self, recheck_seconds: float) -> None:
        self.recheck_seconds = recheck_seconds
        self._answers: dict[tuple[str, bool], tuple[float, os.stat_result | OSError | bool]] = {}
        self._conclusions: dict[tuple[object, object], tuple[float, object]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FileChecks:
        return cls(WorkspaceFileSettings.from_env(environ).workspace_files_recheck_ms / 1000)

    def stat(self, path: str) -> os.stat_result:
        """`os.stat(path)`, or the OSError it raised, as of at most the recheck interval ago."""
        answer = self._answer(path, False)
        if isinstance(answer, OSError):
            # A new exception each time: raising the kept one again would grow its traceback.
            raise OSError(answer.errno, answer.strerror, answer.filename)
        return cast(os.stat_result, answer)

    def is_dir(self, path: str) -> bool:
        return self._answer(path, True) is True

    def concluded(self, conclude: Callable[[K], T], key: K) -> T:
        """`conclude(key)`, as of at most the recheck interval ago.

        For what is concluded from these answers alone (which policy or plan applies to a
        workspace): it may be kept as long as they are. Working it out on every event (a path
        joined, a missing file's error raised again, the directory asked) cost more than the
        rest of the look-up (bench_execute.py, the heavy block).
        """
        if self.recheck_seconds <= 0:
            return conclude(key)
        now = time.monotonic()
        kept = self._conclusions.get((conclude, key))
        if kept is not None and kept[0] > now:
            return cast(T, kept[1])
        conclusion = conclude(key)
        with self._lock:
            if len(self._conclusions) >= MAX_REMEMBERED:
                self._conclusions.clear()
            self._conclusions[(conclude, key)] = (now + self.recheck_seconds, conclusion)
        return conclusion

    def _answer(self, path: str, directory: bool) -> os.stat_result | OSError | bool:
        if self.recheck_seconds <= 0:
            return _look(path, directory)
        now = time.monotonic()
        kept = self._answers.get((path, directory))
        if kept is not None and kept[0] > now:
            return kept[1]
        answer = _look(path, directory)
        with self._lock:
            if len(self._answers) >= MAX_REMEMBERED:
                self._answers.clear()
            self._answers[(path, directory)] = (now + self.recheck_seconds, answer)
        return answer


def _look(path: str, directory: bool) -> os.stat_result | OSError | bool:
    if directory:
        return os.path.isdir(path)
    try:
        return os.stat(path)
    except OSError as error:
        return error
