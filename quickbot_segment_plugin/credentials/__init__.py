"""Credentials: the write key and region a builder enters, sealed into an encrypted token
that the host stores, and opened again (with key rotation) when a block runs.
"""

from .keyring import (
    ENCRYPTION_KEYS_ENV,
    WRITE_KEY_CHARS,
    WRITE_KEY_MAX_CHARS,
    WRITE_KEY_MIN_CHARS,
    Credentials,
    CredentialsError,
    KeyRing,
    WriteKey,
    generate_key,
    shared_keyring,
)
from .settings import CredentialsSettings

__all__ = [
    "ENCRYPTION_KEYS_ENV",
    "WRITE_KEY_CHARS",
    "WRITE_KEY_MAX_CHARS",
    "WRITE_KEY_MIN_CHARS",
    "Credentials",
    "CredentialsError",
    "CredentialsSettings",
    "KeyRing",
    "WriteKey",
    "generate_key",
    "shared_keyring",
]
