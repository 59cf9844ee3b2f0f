"""`DeadLetterRecorder`: connects the delivery pool's reports to the store, with the token.

The pool only knows a write key's fingerprint; the sealed token that makes a replay possible
is known to the block. The recorder remembers one for the other.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ..delivery_types import Undeliverable
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
        self._max_tokens = max(1, max_tokens)
        self._tokens: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def remember_token(self, workspace_id: str, write_key_fingerprint: str, token: str) -> None:
        """Cheap enough for every execute: one lock and one dict update."""
        key = (workspace_id, write_key_fingerprint)
        with self._lock:
            if self._tokens.get(key) == token:
                self._tokens.move_to_end(key)
                return
            self._tokens[key] = token
            self._tokens.move_to_end(key)
            if len(self._tokens) > self._max_tokens:
                self._tokens.popitem(last=False)

    def token_for(self, workspace_id: str, write_key_fingerprint: str) -> str | None:
        with self._lock:
            return self._tokens.get((workspace_id, write_key_fingerprint))

    def __call__(self, undeliverable: Undeliverable) -> None:
        token = self.token_for(undeliverable.workspace_id, undeliverable.write_key_fingerprint)
        self.store.add_undeliverable(undeliverable, token)
