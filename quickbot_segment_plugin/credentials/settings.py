"""The credentials' operator settings: the encryption keys and the opened-token cache."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from ..core import Settings

DEFAULT_CACHE_SIZE = 1024


class CredentialsSettings(Settings):
    title: ClassVar[str] = "Credentials"
    env_prefix: ClassVar[str] = "QUICKBOT_"

    encryption_keys: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated `id:key` list of 32-byte base64 keys (`quickbot-segment keygen`); the first "
        "seals new tokens, every one opens them. Required to seal or open credentials.",
    )
    credentials_cache_size: int = Field(
        DEFAULT_CACHE_SIZE, ge=0, le=10_000_000, description="Opened credential tokens kept in memory (0: none)."
    )
