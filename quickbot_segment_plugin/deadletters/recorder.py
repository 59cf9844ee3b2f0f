"""`DeadLetterRecorder`: connects the delivery pool's reports to the store, with the token.

The pool only knows a write key's fingerprint; the sealed token that makes a replay possible
is known to the block. The recorder remembers one for the other.
"""

from __future__ import annotations

from ..core import LruCache, Undeliverable
from .store import DeadLetterStore


class DeadLetterRecorder:
    """The delivery pool's `on_undeliverable`: stores what it reports, with the sealed token.

    The pool knows only a key's fingerprint, never the token the host gave; the block calls
    `remember_token` when it opens credentials, so a dead letter can be replayed later. The
    map is a bounded LRU (`max_tokens`), so memory stays bounded however many workspaces;
    a forgotten token only means a dead letter that cannot be replayed, which `list` shows.
    """

    def __init__(self, store: DeadLetterStore, max_tokens: int = 10_000) -> None:
        self.store = store
        self._tokens: LruCache[tuple[str, str], str] = LruCache(max(1, max_tokens))

    def remember_token(self, workspace_id: str, write_key_fingerprint: str, token: str) -> None:
        """Cheap enough for every execute: one lock and one dict update."""
        self._tokens.put((workspace_id, write_key_fingerprint), token)

    def token_for(self, workspace_id: str, write_key_fingerprint: str) -> str | None:
        return self._tokens.get((workspace_id, write_key_fingerprint))

    def __call__(self, undeliverable: Undeliverable) -> int:
        """How many events the store kept: 0 when the write failed (the pool then keeps them spooled)."""
        token = self.token_for(undeliverable.workspace_id, undeliverable.write_key_fingerprint)
        return self.store.add_undeliverable(undeliverable, token)

    def record_many(self, undeliverables: list[Undeliverable]) -> int:
        """Many reports in one transaction (a shutdown deadline giving up on many workspaces);
        returns how many events were kept (0 when the write failed)."""
        entries = [
            (undeliverable, self.token_for(undeliverable.workspace_id, undeliverable.write_key_fingerprint))
            for undeliverable in undeliverables
        ]
        return self.store.add_undeliverables(entries)
