"""Writing dead letters: `add` and its forms, which never raise into the delivery thread.

A failed write is logged once, then summarised at most once a minute while the failure
lasts, and the lost events are counted as `dead_letter_write_failed`: never raised, never silent.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ..core import DEAD_LETTER_WRITE_FAILED, Undeliverable, redact, stored_timestamp
from .config import FAILURE_LOG_INTERVAL, MAX_DETAIL_CHARS
from .database import logger
from .maintenance import StoreMaintenance
from .scrubbing import TOKEN_PREFIX, Row, Scrubber, clean_endpoint, clean_fingerprint

_INSERT: Final = (
    "INSERT INTO dead_letters (workspace_id, message_id, type, message, reason, detail, status, "
    "attempts, first_failed_at, last_failed_at, credentials_token, write_key_fingerprint, endpoint) "
    "VALUES (?,?,?,?,?,?,?,1,?,?,?,?,?) "
    "ON CONFLICT (workspace_id, message_id) DO UPDATE SET "
    # Columns named with their table: PostgreSQL finds `attempts` alone ambiguous next to `excluded`.
    "attempts = dead_letters.attempts + 1, reason = excluded.reason, detail = excluded.detail, "
    "status = excluded.status, last_failed_at = excluded.last_failed_at, replayed_at = NULL, "
    "in_doubt_since = NULL, "
    "credentials_token = COALESCE(excluded.credentials_token, dead_letters.credentials_token), "
    "write_key_fingerprint = excluded.write_key_fingerprint, endpoint = excluded.endpoint"
)


class StoreWrites(StoreMaintenance):
    """`add`, `add_undeliverable(s)`: one transaction per call, pruning now and then (`StoreMaintenance`)."""

    def add(
        self,
        workspace_id: str,
        messages: Sequence[Mapping[str, Any]],
        reason: str,
        detail: str = "",
        status: int | None = None,
        credentials_token: str | None = None,
        write_key_fingerprint: str = "",
        endpoint: str = "",
    ) -> int:
        """Store undeliverable messages; returns how many are now recorded (new rows plus rows
        whose messageId was already there and got attempts + 1), 0 when the write failed.

        Never raises: a failure is logged and counted as `dead_letter_write_failed`.
        """
        count = len(messages) if isinstance(messages, Sequence) else 0
        try:
            if not messages:
                return 0
            rows = [self._clean(message, workspace_id) for message in messages]
            token = self._clean_token(credentials_token)
            when = stored_timestamp(self._now())
            values = [
                (
                    str(workspace_id),
                    row.message_id,
                    row.type,
                    row.message_json,
                    str(reason),
                    redact(str(detail or ""))[:MAX_DETAIL_CHARS],
                    status if isinstance(status, int) and not isinstance(status, bool) else None,
                    when,
                    when,
                    token,
                    clean_fingerprint(write_key_fingerprint),
                    clean_endpoint(endpoint),
                )
                for row in rows
            ]
            with self._transaction() as db:
                db.executemany(_INSERT, values)
        except Exception as error:
            self._write_failed(str(workspace_id), count, str(reason), error)
            return 0
        self._write_succeeded()
        self._counters.dead_lettered(str(workspace_id), len(rows))
        self._maybe_prune(len(rows))
        return len(rows)

    def add_undeliverables(self, entries: Sequence[tuple[Undeliverable, str | None]]) -> int:
        """Many `add_undeliverable`s in one transaction: a shutdown that gives up on thousands of
        workspaces at its deadline must not spend a commit on each. Never raises (as `add`)."""
        total = sum(len(undeliverable.messages) for undeliverable, _ in entries)
        try:
            when = stored_timestamp(self._now())
            values = []
            per_workspace: dict[str, int] = {}
            for undeliverable, credentials_token in entries:
                token = self._clean_token(credentials_token)
                detail = redact(str(undeliverable.detail or ""))[:MAX_DETAIL_CHARS]
                status = undeliverable.status
                status = status if isinstance(status, int) and not isinstance(status, bool) else None
                fingerprint = clean_fingerprint(undeliverable.write_key_fingerprint)
                endpoint = clean_endpoint(undeliverable.endpoint)
                workspace_id = str(undeliverable.workspace_id)
                for message in undeliverable.messages:
                    row = self._clean(message, workspace_id)
                    values.append(
                        (
                            workspace_id, row.message_id, row.type, row.message_json, str(undeliverable.reason),
                            detail, status, when, when, token, fingerprint, endpoint,
                        )
                    )  # fmt: skip
                    per_workspace[workspace_id] = per_workspace.get(workspace_id, 0) + 1
            if not values:
                return 0
            with self._transaction() as db:
                db.executemany(_INSERT, values)
        except Exception as error:
            self._write_failed("(several)", total, "(several)", error)
            return 0
        self._write_succeeded()
        for workspace_id, count in per_workspace.items():
            self._counters.dead_lettered(workspace_id, count)
        self._maybe_prune(len(values))
        return len(values)

    def add_undeliverable(self, undeliverable: Undeliverable, credentials_token: str | None = None) -> int:
        """`add` for what the delivery pool reports."""
        return self.add(
            undeliverable.workspace_id,
            undeliverable.messages,
            undeliverable.reason,
            undeliverable.detail,
            undeliverable.status,
            credentials_token,
            undeliverable.write_key_fingerprint,
            undeliverable.endpoint,
        )

    def _clean(self, message: Mapping[str, Any], workspace_id: object) -> Row:
        if not isinstance(message, Mapping):
            message = {"unreadable": str(message)}
        scrubber = Scrubber()
        cleaned: dict[str, Any] = scrubber.value(message)
        if scrubber.removed_something:
            logger.warning(
                "removed what looked like a write key from a dead-lettered message of workspace %s before storing it",
                workspace_id,
                extra={"workspace": workspace_id},
            )
        message_id = cleaned.get("messageId")
        if message_id is None or message_id == "":
            # A replay must carry a stable id for Segment to deduplicate it; give it one now.
            message_id = str(uuid.uuid4())
            cleaned["messageId"] = message_id
        kind = cleaned.get("type")
        text = json.dumps(cleaned, ensure_ascii=True, separators=(",", ":"), default=str)
        return Row(str(message_id), kind if isinstance(kind, str) else None, text)

    def _clean_token(self, token: str | None) -> str | None:
        """Only a sealed token is stored; anything else (a raw key passed by mistake) is dropped."""
        if token is None or token == "":
            return None
        if isinstance(token, str) and token.startswith(TOKEN_PREFIX) and redact(token) == token:
            return token
        if not self._warned_raw_token:
            self._warned_raw_token = True
            logger.error(
                "a dead letter came with credentials that are not a sealed token (%s...); they were not stored, "
                "so these events cannot be replayed",
                TOKEN_PREFIX,
            )
        return None

    # --- write failures: never raised, never silent -----------------------------------------

    def _write_failed(self, workspace_id: str, count: int, reason: str, error: Exception) -> None:
        try:
            self._counters.inc(workspace_id, DEAD_LETTER_WRITE_FAILED, count)
            with self._lock:
                if isinstance(error, self.backend.errors):
                    self._drop_connection()
                now = time.monotonic()
                self._lost_unlogged += count
                self._lost_in_episode += count
                first = not self._failing
                if not first and now - self._last_failure_log < FAILURE_LOG_INTERVAL:
                    return
                lost, self._lost_unlogged = self._lost_unlogged, 0
                self._failing, self._last_failure_log = True, now
            what = "could not write" if first else "still cannot write"
            logger.error(
                "%s %d undeliverable Segment event(s) (workspace %s, reason %s) to the dead-letter store %s: %s; "
                "they are lost (counted as %s)",
                what,
                lost,
                workspace_id,
                reason,
                self.location,
                redact(f"{type(error).__name__}: {error}")[:MAX_DETAIL_CHARS],
                DEAD_LETTER_WRITE_FAILED,
                extra={"workspace": workspace_id, "count": lost, "reason": reason},
            )
        except Exception:  # logging itself failed (a broken handler): nothing more can be done here
            pass

    def _write_succeeded(self) -> None:
        if not self._failing:
            return
        with self._lock:
            if not self._failing:
                return
            lost, unlogged = self._lost_in_episode, self._lost_unlogged
            self._failing, self._lost_in_episode, self._lost_unlogged = False, 0, 0
        logger.warning(
            "the dead-letter store %s is writable again; %d event(s) were lost while it was not "
            "(%d not reported before)",
            self.location,
            lost,
            unlogged,
            extra={"count": lost, "reason": DEAD_LETTER_WRITE_FAILED},
        )
