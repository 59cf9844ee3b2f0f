"""The shared core every subsystem builds on: errors, environment parsing, redaction of secrets,
the Segment message's facts, timestamps, values quoted in messages, result logs, counters, regions,
and the undeliverable-event record.

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
from .endpoints import parse_endpoint
from .env import env_str
from .erasure import truncate_write_ahead_log, user_condition
from .erasure_values import ERASED, ErasureReport, identifiers_of, scrub, search_terms
from .errors import ConfigurationError, PluginError
from .file_checks import FileChecks, WorkspaceFileSettings
from .lru import LruCache
from .message import (
    HOST_CONTEXT_KEYS,
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
from .private_sqlite import (
    COLLECTOR_STORE,
    DEAD_LETTER_STORE,
    StoreFileError,
    keep_side_files_private,
    open_private_database,
)
from .redaction import REDACTED, fingerprint, known_secrets, redact
from .redaction import install as install_redaction
from .redaction_forms import server_text
from .regions import ENDPOINT_ENV, REGION_HOSTS, REGION_TITLES, EndpointSettings, Region, endpoint_for
from .results import Level, ResultLog
from .settings import Flag, Settings, env_name
from .text import describe, excerpt, shorten
from .timestamps import (
    LIBRARY_TIMESTAMP,
    library_timestamp,
    parse_iso8601,
    parse_segment_timestamp,
    parse_stored_timestamp,
    segment_timestamp,
    stored_timestamp,
    utc_now_text,
)
from .truth import FALSE_LIST, FALSE_WORDS, TRUE_LIST, TRUE_WORDS, Truth, condition_is_true, truth_of
from .undeliverable import (
    CLIENT_CLOSED,
    QUEUE_FULL,
    REASONS,
    RECOVERY_FAILED,
    REJECTED,
    RETRIES_EXHAUSTED,
    SHUTDOWN_DEADLINE,
    SHUTTING_DOWN,
    SPOOL_FAILED,
    DeliveryError,
    Undeliverable,
)
from .workspace_files import file_stem

__all__ = [
    "CLIENT_CLOSED",
    "COLLECTOR_STORE",
    "COUNTERS",
    "DEAD_LETTERS_PRUNED",
    "DEAD_LETTER_STORE",
    "DEAD_LETTER_WRITE_FAILED",
    "ENDPOINT_ENV",
    "ERASED",
    "EXECUTED",
    "FAILED",
    "FALSE_LIST",
    "FALSE_WORDS",
    "HOST_CONTEXT_KEYS",
    "LIBRARY_TIMESTAMP",
    "MAX_MESSAGE_BYTES",
    "PAYLOAD_OBJECTS",
    "PLUGIN_CONTEXT",
    "QUEUED",
    "QUEUE_FULL",
    "REASONS",
    "RECOVERY_FAILED",
    "REDACTED",
    "REGION_HOSTS",
    "REGION_TITLES",
    "REJECTED",
    "RETRIES_EXHAUSTED",
    "SHUTDOWN_DEADLINE",
    "SHUTTING_DOWN",
    "SPOOL_FAILED",
    "TRUE_LIST",
    "TRUE_WORDS",
    "ConfigurationError",
    "CounterFlusher",
    "Counters",
    "DeliveryError",
    "EndpointSettings",
    "ErasureReport",
    "FileChecks",
    "Flag",
    "Level",
    "LruCache",
    "MessageError",
    "MessageParts",
    "PluginError",
    "Region",
    "ResultLog",
    "Settings",
    "StoreFileError",
    "Truth",
    "Undeliverable",
    "WorkspaceFileSettings",
    "build_message",
    "check_size",
    "condition_is_true",
    "describe",
    "endpoint_for",
    "env_name",
    "env_str",
    "excerpt",
    "file_stem",
    "fingerprint",
    "identifiers_of",
    "install_redaction",
    "keep_side_files_private",
    "key_path",
    "known_secrets",
    "library_context",
    "library_timestamp",
    "message_id_for",
    "open_private_database",
    "parse_endpoint",
    "parse_iso8601",
    "parse_segment_timestamp",
    "parse_stored_timestamp",
    "redact",
    "scrub",
    "search_terms",
    "segment_timestamp",
    "server_text",
    "set_nested",
    "shorten",
    "stored_timestamp",
    "truncate_write_ahead_log",
    "truth_of",
    "user_condition",
    "utc_now_text",
]
