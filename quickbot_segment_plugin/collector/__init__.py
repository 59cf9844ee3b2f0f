"""The embedded local collector: a Segment-compatible HTTP API on 127.0.0.1 that stores events in
SQLite, with fault injection and the debugger page. It depends on `core` only, so it can ship as
its own distribution later.
"""

from .faults import Fault, FaultError
from .limits import DEFAULT_MAX_STORED_EVENTS, DEFAULT_MAX_STORED_MB
from .origin import parse_allowed_origins
from .service import Collector, CollectorError
from .settings import DEFAULT_MAX_CONNECTIONS, DEFAULT_PORT, CollectorSettings
from .store import EventStore

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_STORED_EVENTS",
    "DEFAULT_MAX_STORED_MB",
    "DEFAULT_PORT",
    "Collector",
    "CollectorError",
    "CollectorSettings",
    "EventStore",
    "Fault",
    "FaultError",
    "parse_allowed_origins",
]
