"""The Segment block type: the object the host holds and calls (host contract, "The block-type object").

One instance per process serves every workspace. Its collaborators (template engine, key
ring, delivery pool) are created on first use, so loading the plugin costs nothing and a
host that only shows the editor never reads a key or starts a thread.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from . import __version__, schemas
from .core import COUNTERS
from .credentials import KeyRing
from .deadletters import DeadLetterRecorder, DeadLetterStore, beside_store
from .execution import Executor, check_options
from .quality import lint
from .templating import default_engine

if TYPE_CHECKING:
    from .delivery import DeliveryPool


class SegmentBlock:
    id = "segment"
    name = "Segment"
    api_version = 1

    def __init__(self) -> None:
        self.version = __version__
        self._lock = threading.Lock()
        self.counters = COUNTERS
        self._keyring: KeyRing | None = None
        self._pool: DeliveryPool | None = None
        self._recorder: DeadLetterRecorder | None = None
        self._executor: Executor | None = None

    def __repr__(self) -> str:
        return f"<SegmentBlock id={self.id!r} version={self.version!r}>"

    @property
    def options_schema(self) -> dict[str, Any]:
        return schemas.load_copy("options")

    @property
    def credentials_schema(self) -> dict[str, Any]:
        return schemas.load_copy("credentials")

    def validate(self, options: dict[str, Any]) -> list[dict[str, str]]:
        return [problem.as_dict() for problem in check_options(options, default_engine()).problems]

    def lint(self, options: dict[str, Any], workspace_id: str | None = None) -> list[dict[str, str]]:
        """Naming-convention warnings (quality.naming): kept out of `validate`, which lists only errors."""
        return lint(options, workspace_id)

    def seal_credentials(self, values: dict[str, Any], *, workspace_id: str) -> str:
        return self.keyring().seal(values, workspace_id)

    def execute(self, options: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        return self.executor().execute(options, context)

    def keyring(self) -> KeyRing:
        if self._keyring is None:
            with self._lock:
                if self._keyring is None:
                    self._keyring = KeyRing.from_env()
        return self._keyring

    def pool(self) -> DeliveryPool:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    # Imported here: the library pulls in requests, which probes the network
                    # stack on import; the host contract forbids that when the plugin loads.
                    from .delivery import (
                        DeliveryPool,
                        DeliverySettings,
                        Durability,
                        Recovery,
                        Spool,
                        SpoolSettings,
                        start_recovery,
                    )

                    settings = DeliverySettings.from_env()
                    spool_settings = SpoolSettings.from_env(default_directory=beside_store("spool"))
                    spool = Spool(spool_settings) if spool_settings.durability is not Durability.OFF else None
                    recorder = self.dead_letters()
                    pool = DeliveryPool(settings, recorder, self.counters, spool=spool)
                    if spool is not None:
                        # What stopped processes left in the spool is delivered in the background.
                        start_recovery(Recovery(pool, self.keyring, recorder.remember_token))
                    # No counter flusher here: a server that wants counters in the store calls
                    # `start_counter_flusher()` itself; a CLI demo run must not write them.
                    self._pool = pool
        return self._pool

    def dead_letters(self) -> DeadLetterRecorder:
        """Where every event the pool cannot deliver is written (created on first use)."""
        if self._recorder is None:
            self._recorder = DeadLetterRecorder(DeadLetterStore(counters=self.counters))
        return self._recorder

    def stats(self) -> dict[str, Any]:
        """This process's counters per workspace and in total (executed, queued, delivered, ...)."""
        return self.counters.snapshot()

    def executor(self) -> Executor:
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = Executor(
                        default_engine(), self.keyring, self.pool, self.dead_letters, self.counters
                    )
        return self._executor

    def shutdown(self, timeout: float) -> None:
        """Flush what was accepted, within `timeout`; the block can be used again afterwards."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(timeout)


_current: SegmentBlock | None = None
_current_lock = threading.Lock()


def current_block() -> SegmentBlock:
    """The process's block; the same object for every `quickbot_block_types` call."""
    global _current
    with _current_lock:
        if _current is None:
            _current = SegmentBlock()
        return _current


def shutdown_current_block(timeout: float) -> None:
    with _current_lock:
        block = _current
    if block is not None:
        block.shutdown(timeout)
