"""Privacy's operator settings: on or off, where policies live, and the key hashes are made with."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from ..core import Flag, Settings


class PrivacyVariables(Settings):
    title: ClassVar[str] = "Privacy"

    privacy: Flag = Field(True, description="Screen every event with the workspace's privacy policy.")
    privacy_dir: str = Field(
        "",
        description="Directory of `<workspace>.privacy.json` policies (unset: QUICKBOT_SEGMENT_TRACKING_PLAN_DIR, "
        "else the default policy only). With a directory, an unreadable or invalid policy refuses the event.",
    )
    hash_key: SecretStr = Field(
        SecretStr(""),
        description="Secret (16 characters or more) for the `hash` rule's HMAC; required when a policy hashes.",
    )
