"""Background delivery to Segment through segment-analytics-python: one library client per
workspace, bounded queues, retries, shutdown within a deadline, and undeliverable events handed to
the dead-letter store. Every touchpoint with the library's internals is in `delivery.library`.
"""

from ..core import DeliveryError, Undeliverable
from .outcomes import Outcome, OutcomeLedger
from .pool import DeliveryPool
from .recovery import Recovery, start_recovery, status
from .settings import DeliverySettings
from .spool import Spool
from .spool_settings import Durability, SpoolSettings, SpoolVariables
from .types import EnqueueOutcome, ShutdownReport

__all__ = [
    "DeliveryError",
    "DeliveryPool",
    "DeliverySettings",
    "Durability",
    "EnqueueOutcome",
    "Outcome",
    "OutcomeLedger",
    "Recovery",
    "ShutdownReport",
    "Spool",
    "SpoolSettings",
    "SpoolVariables",
    "Undeliverable",
    "start_recovery",
    "status",
]
