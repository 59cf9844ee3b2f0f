"""The shared core every subsystem builds on: errors, environment parsing, redaction of secrets,
the Segment message's facts, result logs, counters, regions, and the undeliverable-event record.

Nothing here imports another subpackage; everything above may import what is listed in `__all__`.
"""

from .counters import (
    COUNTERS,
    DEAD_LETTER_WRITE_FAILED,
    DEAD_LETTERS_PRUNED,
    EXECUTED,
    FAILED,
    QUEUED,
    CounterFlusher,
    Counters,
)
from .env import env_bool, env_float, env_int, env_str
from .erasure import truncate_write_ahead_log, user_condition
from .errors import ConfigurationError, PluginError
from .lru import LruCache
from .message import (
    MAX_MESSAGE_BYTES,
    PAYLOAD_OBJECTS,
    PLUGIN_CONTEXT,
    MessageError,
    MessageParts,
    build_message,
    check_size,
    key_path,
    library_context,
    message_id_for,
    set_nested,
)
from .redaction import REDACTED, fingerprint, known_secrets, redact
from .redaction import install as install_redaction
from .regions import ENDPOINT_ENV, REGION_HOSTS, REGION_TITLES, Region, endpoint_for
from .results import Level, ResultLog
from .settings import Flag, Settings, env_name
from .truth import parse_truth
from .undeliverable import (
    CLIENT_CLOSED,
    QUEUE_FULL,
    REASONS,
    REJECTED,
    RETRIES_EXHAUSTED,
    SHUTDOWN_DEADLINE,
    SHUTTING_DOWN,
    DeliveryError,
    Undeliverable,
)

__all__ = [
    "CLIENT_CLOSED",
    "COUNTERS",
    "DEAD_LETTERS_PRUNED",
    "DEAD_LETTER_WRITE_FAILED",
    "ENDPOINT_ENV",
    "EXECUTED",
    "FAILED",
    "MAX_MESSAGE_BYTES",
    "PAYLOAD_OBJECTS",
    "PLUGIN_CONTEXT",
    "QUEUED",
    "QUEUE_FULL",
    "REASONS",
    "REDACTED",
    "REGION_HOSTS",
    "REGION_TITLES",
    "REJECTED",
    "RETRIES_EXHAUSTED",
    "SHUTDOWN_DEADLINE",
    "SHUTTING_DOWN",
    "ConfigurationError",
    "CounterFlusher",
    "Counters",
    "DeliveryError",
    "Flag",
    "Level",
    "LruCache",
    "MessageError",
    "MessageParts",
    "PluginError",
    "Region",
    "ResultLog",
    "Settings",
    "Undeliverable",
    "build_message",
    "check_size",
    "endpoint_for",
    "env_bool",
    "env_float",
    "env_int",
    "env_name",
    "env_str",
    "fingerprint",
    "install_redaction",
    "key_path",
    "known_secrets",
    "library_context",
    "message_id_for",
    "parse_truth",
    "redact",
    "set_nested",
    "truncate_write_ahead_log",
    "user_condition",
]
