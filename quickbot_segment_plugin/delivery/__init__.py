"""Background delivery to Segment through segment-analytics-python: one library client per
workspace, bounded queues, retries, shutdown within a deadline, and undeliverable events handed to
the dead-letter store. Every touchpoint with the library's internals is in `delivery.library`.
"""

from .outcomes import Outcome, OutcomeLedger
from .pool import DeliveryPool
from .settings import DeliverySettings

__all__ = [
    "DeliveryPool",
    "DeliverySettings",
    "Outcome",
    "OutcomeLedger",
]
