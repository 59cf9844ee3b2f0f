"""Scripted failures for the embedded collector, so retry paths can be exercised on purpose.

A real Segment outage cannot be summoned in a test or a demo; a script of faults can. Each
request to `/v1/*` takes the next fault from the script (a fault with `repeat=N` serves N
requests); once the script is empty the collector behaves normally again. A faulted request
never stores its events: that is what makes "retried, then arrives exactly once" checkable.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeAlias

from ..core import PluginError

JsonBody: TypeAlias = "Mapping[str, Any] | Sequence[Any] | str | None"


class FaultError(PluginError):
    """A fault description (Python or `POST /_admin/faults`) that cannot be served."""


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour of the collector.

    - `status`: answer with this HTTP status (and `retry_after` as the `Retry-After` header,
      `body` as the body: a JSON-able object, or a string sent as text). `Fault(status=200)`
      answers success and still drops the events, as Segment does for an unknown write key.
    - `delay`: seconds to wait before answering; with no `status` the connection is then
      closed without an answer, like a gateway that gave up (make it longer than the
      client's `timeout` to exercise a read timeout).
    - `drop`: close the connection without answering (after `delay`, if any).
    - `repeat`: how many consecutive requests this fault serves.
    """

    status: int | None = None
    retry_after: int | str | None = None
    body: JsonBody = None
    delay: float = 0.0
    drop: bool = False
    repeat: int = 1

    def __post_init__(self) -> None:
        if self.status is not None and (
            isinstance(self.status, bool) or not isinstance(self.status, int) or not 200 <= self.status <= 599
        ):
            raise FaultError(f"status must be an HTTP status from 200 to 599, got {self.status!r}.", field="status")
        if self.status is not None and self.drop:
            raise FaultError("a fault either answers (status) or drops the connection, not both.", field="drop")
        if self.status is None and not self.drop and not self.delay:
            raise FaultError("a fault needs a status, a delay or drop=True.", field="status")
        if isinstance(self.delay, bool) or not isinstance(self.delay, (int, float)) or not 0 <= self.delay <= 3600:
            raise FaultError(f"delay must be a number of seconds from 0 to 3600, got {self.delay!r}.", field="delay")
        if isinstance(self.repeat, bool) or not isinstance(self.repeat, int) or self.repeat < 1:
            raise FaultError(f"repeat must be a whole number of at least 1, got {self.repeat!r}.", field="repeat")
        if self.retry_after is not None and not _valid_retry_after(self.retry_after):
            raise FaultError(
                f"retry_after must be whole seconds (0 or more) or an HTTP date, got {self.retry_after!r}.",
                field="retry_after",
            )
        if self.retry_after is not None and self.status is None:
            raise FaultError("retry_after needs a status to be sent with.", field="retry_after")

    @property
    def answers(self) -> bool:
        """Whether the client gets an HTTP response at all."""
        return self.status is not None

    def response_headers(self) -> list[tuple[str, str]]:
        """`Retry-After` (and `X-RateLimit-Reset`, which Segment sends with its 429s)."""
        if self.retry_after is None:
            return []
        headers = [("Retry-After", str(self.retry_after))]
        if isinstance(self.retry_after, int):
            headers.append(("X-RateLimit-Reset", str(self.retry_after)))
        return headers

    def response_body(self) -> tuple[bytes, str]:
        """The body and its content type: the given body, or a Segment-shaped error object."""
        if isinstance(self.body, str):
            return self.body.encode("utf-8"), "text/plain; charset=utf-8"
        body: Any = self.body
        if body is None:
            status = self.status or 200
            if 200 <= status < 300:
                body = {"success": True}
            else:
                phrase = reason_phrase(status)
                body = {
                    "code": phrase.lower().replace(" ", "_"),
                    "message": f"Injected fault: {status} {phrase}",
                }
        return json.dumps(body).encode("utf-8"), "application/json"

    @classmethod
    def from_json(cls, value: object, *, where: str = "fault") -> Fault:
        """Builds a fault from the admin endpoint's JSON, naming the offending key on error."""
        if not isinstance(value, dict):
            raise FaultError(f"{where} must be a JSON object, got {type(value).__name__}.", field=where)
        unknown = sorted(set(value) - _FIELDS)
        if unknown:
            raise FaultError(
                f"{where} has unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_FIELDS))}.",
                field=f"{where}.{unknown[0]}",
            )
        try:
            return cls(**value)
        except FaultError as error:
            raise FaultError(f"{where}: {error.message}", field=f"{where}.{error.field}") from None
        except TypeError as error:  # pragma: no cover - guarded by the key check above
            raise FaultError(f"{where}: {error}", field=where) from None


_FIELDS = frozenset({"status", "retry_after", "body", "delay", "drop", "repeat"})


def reason_phrase(status: int, unknown: str = "Error") -> str:
    """The standard reason phrase of `status` ("Too Many Requests"), or `unknown` for a code without one."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return unknown


def _valid_retry_after(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable() and "\n" not in value


def faults_from_json(value: object) -> list[Fault]:
    """The body of `POST /_admin/faults`: a JSON list of fault objects (or one object)."""
    items = value if isinstance(value, list) else [value]
    if len(items) > 10_000:
        raise FaultError("at most 10000 faults can be scripted at once.", field="faults")
    return [Fault.from_json(item, where=f"faults[{index}]") for index, item in enumerate(items)]


class FaultScript:
    """The queue of pending faults, shared by every handler thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque[list[Any]] = deque()  # [fault, remaining uses]

    def extend(self, faults: Iterable[Fault]) -> None:
        checked = list(faults)
        for fault in checked:
            if not isinstance(fault, Fault):
                raise FaultError(f"expected Fault objects, got {type(fault).__name__}.", field="faults")
        with self._lock:
            self._pending.extend([fault, fault.repeat] for fault in checked)

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def take(self) -> Fault | None:
        """The fault the current request must suffer, or None to behave normally."""
        with self._lock:
            if not self._pending:
                return None
            entry = self._pending[0]
            entry[1] -= 1
            if entry[1] <= 0:
                self._pending.popleft()
            fault: Fault = entry[0]
            return fault

    @property
    def pending(self) -> int:
        """How many more requests will be faulted."""
        with self._lock:
            return sum(int(remaining) for _, remaining in self._pending)

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            entries = [(fault, remaining) for fault, remaining in self._pending]
        return [
            {
                "status": fault.status,
                "retry_after": fault.retry_after,
                "delay": fault.delay,
                "drop": fault.drop,
                "remaining": remaining,
            }
            for fault, remaining in entries
        ]
