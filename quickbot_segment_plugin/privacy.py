"""Privacy by default: every built message is screened before anything else sees it.

`execute` calls `PrivacyGate.screen` right after building the message, before cleaning and
the tracking plan, for dry runs too: a refused card number must never reach a result log,
a dead letter, a counter label or the collector, and every later step only ever sees the
screened message. Screening drops denied keys, runs the value detectors over every text
and number in traits, properties and context, and stamps the consent state into
`context.consent`. Hashing (`PrivacyGate.hash`) runs last, after the tracking plan: the plan
and cleaning check the readable address (an email trait must look like one), and the hash is
of the cleaned value, the form ad platforms match on.

Every action is logged with the field's path and the rule, never the value: the result log
(what the bot builder sees) gets a sentence, the server log a line with the workspace.
`QUICKBOT_SEGMENT_PRIVACY=off` turns screening and hashing off; consent still applies, as the
block's own options ask for it. Policy files and defaults: `privacy_policy.py`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .errors import PluginError
from .privacy_consent import ConsentDecision
from .privacy_detectors import DETECTORS, find_spans, mask_span
from .privacy_policy import (
    PolicyResolver,
    PrivacyPolicy,
    hash_key_missing,
    normal_key,
)
from .results import ResultLog
from .settings import env_bool, env_str

__all__ = ["HASH_KEY_ENV", "PRIVACY_ENV", "PrivacyGate", "PrivacySettings", "hash_value", "workspace_hash_key"]

logger = logging.getLogger("quickbot_segment_plugin.privacy")

PRIVACY_ENV: Final = "QUICKBOT_SEGMENT_PRIVACY"
HASH_KEY_ENV: Final = "QUICKBOT_SEGMENT_HASH_KEY"
MIN_HASH_KEY_CHARS: Final = 32
OBJECTS_BY_TYPE: Final[Mapping[str, tuple[str, ...]]] = {
    "identify": ("traits", "context"),
    "group": ("traits", "context"),
    "track": ("properties", "context"),
    "page": ("properties", "context"),
    "screen": ("properties", "context"),
    "alias": ("context",),
}
# Context entries the plugin writes itself: nothing an end user typed.
UNSCANNED_CONTEXT: Final = frozenset({"library", "consent", "quickbot"})
_HAS_DIGIT = re.compile(r"[0-9]")
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_DIGITS = str.maketrans("", "", "0123456789")
_PATH_SAFE = re.compile(r"[^\w .\-\[\]]")


@dataclass(frozen=True)
class PrivacySettings:
    enabled: bool
    resolver: PolicyResolver
    hash_secret: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PrivacySettings:
        secret = env_str(HASH_KEY_ENV, "", environ) or None
        if secret is not None and len(secret) < MIN_HASH_KEY_CHARS:
            raise PluginError(
                f"{HASH_KEY_ENV} must be at least {MIN_HASH_KEY_CHARS} characters long.", field=HASH_KEY_ENV
            )
        return cls(env_bool(PRIVACY_ENV, True, environ), PolicyResolver.from_env(environ), secret)


class _Refused(Exception):
    def __init__(self, path: str, detector: str) -> None:
        self.path = path
        self.detector = detector


class PrivacyGate:
    """Shared by every conversation of an executor; settings are read on first use, once."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ
        self._lock = threading.Lock()
        self._settings: PrivacySettings | None = None
        self._keys: dict[str, bytes] = {}

    def settings(self) -> PrivacySettings:
        if self._settings is None:
            with self._lock:
                if self._settings is None:
                    self._settings = PrivacySettings.from_env(self._environ)
        return self._settings

    def policy_for(self, workspace_id: str, log: ResultLog) -> PrivacyPolicy | None:
        """The workspace's policy; None (logged as an error) when its file was never usable."""
        resolution = self.settings().resolver.for_workspace(workspace_id)
        if resolution.warning is not None:
            log.warning(resolution.warning, rule="privacy_policy")
        if resolution.policy is None:
            log.error(
                f"The privacy policy of this workspace cannot be used ({resolution.error}); the event was not "
                "sent. Fix the policy file, or remove it to apply the default policy.",
                rule="privacy_policy",
            )
        return resolution.policy

    def screen(
        self,
        message: dict[str, Any],
        workspace_id: str,
        log: ResultLog,
        consent: ConsentDecision | None = None,
    ) -> dict[str, Any] | None:
        """The message to send on (changed copies only where something changed), or None: refused."""
        if consent is not None and consent.preferences:
            message = _with_consent(message, consent.preferences)
        settings = self.settings()
        if not settings.enabled:
            return message
        policy = self.policy_for(workspace_id, log)
        if policy is None:
            return None
        actions: list[tuple[str, str, str]] = []  # (path, action, rule)
        screened = dict(message)
        try:
            for name in OBJECTS_BY_TYPE.get(str(message.get("type")), ("context",)):
                value = message.get(name)
                if isinstance(value, dict) and value:
                    screened[name] = _Screen(policy, actions).object(value, (name,))
        except _Refused as refused:
            detector = DETECTORS[refused.detector]
            log.error(
                f"Privacy: {refused.path} contains {detector.title}; the privacy policy refuses such events, "
                "so the event was not sent.",
                field=refused.path,
                rule=f"privacy_{refused.detector}",
                action="refused",
            )
            logger.info(
                "privacy: refused an event of workspace %s: %s (%s)",
                workspace_id,
                refused.path,
                refused.detector,
                extra={"workspace": workspace_id, "field": refused.path, "action": "refused"},
            )
            return None
        for path, action, rule in actions:
            _log_action(log, workspace_id, path, action, rule)
        return screened if actions else message

    def hash(self, message: dict[str, Any], workspace_id: str, log: ResultLog) -> dict[str, Any]:
        """The message with the policy's fields hashed; raises ConfigurationError without the key."""
        settings = self.settings()
        if not settings.enabled:
            return message
        resolution = settings.resolver.for_workspace(workspace_id)
        policy = resolution.policy
        if policy is None or not policy.hashes:
            return message
        hashed = dict(message)
        originals: list[str] = []
        for rule in policy.hashes:
            container: Any = hashed
            for part in rule.path[:-1]:
                child = container.get(part) if isinstance(container, dict) else None
                if not isinstance(child, dict):
                    container = None
                    break
                child = dict(child)
                container[part] = child
                container = child
            if not isinstance(container, dict) or rule.path[-1] not in container:
                continue
            value = container[rule.path[-1]]
            if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
                continue
            if isinstance(value, str) and _HEX_DIGEST.match(value):
                continue  # already hashed (a replay, or a hash sent on purpose): hashing twice breaks matching
            key = self._key(workspace_id) if rule.method == "hmac-sha256" else None  # only when a value needs it
            container[rule.path[-1]] = hash_value(str(value), rule.normalise, key)
            originals.append(str(value))
            _log_action(log, workspace_id, rule.dotted, "hashed", f"privacy_{rule.method}")
        _unquote(log, originals)
        return hashed

    def _key(self, workspace_id: str) -> bytes:
        key = self._keys.get(workspace_id)
        if key is None:
            secret = self.settings().hash_secret
            if secret is None:
                raise hash_key_missing(HASH_KEY_ENV)
            key = workspace_hash_key(secret, workspace_id)
            with self._lock:
                if len(self._keys) >= 100_000:
                    self._keys.clear()
                self._keys[workspace_id] = key
        return key


def _unquote(log: ResultLog, originals: list[str]) -> None:
    """Earlier notes (cleaning quotes a normalised email) must not show what is now sent hashed."""
    quoted = [value for value in originals if len(value) >= 3]
    if not quoted:
        return
    for entry in log.entries:
        for value in quoted:
            if value in entry["message"]:
                entry["message"] = entry["message"].replace(value, "[hashed]")


def workspace_hash_key(secret: str, workspace_id: str) -> bytes:
    """HKDF-SHA256 of the operator's secret, one key per workspace: a hash from one workspace
    cannot be joined with another's, and rotating the secret re-keys every workspace."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    derive = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"quickbot-segment-privacy-v1",
        info=b"workspace:" + workspace_id.encode("utf-8"),
    )
    return derive.derive(secret.encode("utf-8"))


def normalise(value: str, how: str) -> str:
    """The form ad platforms hash: emails trimmed and lower-cased; phones as digits only
    (country code included, no `+`, as Meta's Conversions API wants); text trimmed, lower-cased."""
    if how == "none":
        return value
    if how == "phone":
        return "".join(char for char in value if char.isdigit())
    return value.strip().lower()


def hash_value(value: str, how: str, key: bytes | None) -> str:
    data = normalise(value, how).encode("utf-8")
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


class _Screen:
    """One message's walk: copy-on-write, so a host's variable (a dict) is never modified."""

    def __init__(self, policy: PrivacyPolicy, actions: list[tuple[str, str, str]]) -> None:
        self.policy = policy
        self.actions = actions

    def object(self, value: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
        result: dict[str, Any] | None = None
        policy = self.policy
        for key, item in value.items():
            child_path = (*path, str(key))
            if path == ("context",) and key in UNSCANNED_CONTEXT:
                continue
            if (
                normal_key(str(key)) in policy.deny_names
                or child_path in policy.deny_paths
                or child_path[1:] in policy.deny_any_object_paths
            ):
                if result is None:
                    result = dict(value)
                del result[key]
                self.actions.append((_dotted(child_path), "dropped", "privacy_denylist"))
                continue
            screened = self.value(item, child_path)
            if screened is not item:
                if result is None:
                    result = dict(value)
                if screened is _DROP:
                    del result[key]
                else:
                    result[key] = screened
        return value if result is None else result

    def value(self, item: Any, path: tuple[str, ...]) -> Any:
        if isinstance(item, str):
            return self.text(item, path) if _HAS_DIGIT.search(item) else item
        if isinstance(item, int) and not isinstance(item, bool):
            if item >= 10**7 or item <= -(10**7):
                text = str(item)
                screened = self.text(text, path)
                return item if screened == text else screened
            return item
        if isinstance(item, dict):
            return self.object(item, path)
        if isinstance(item, list):
            changed = False
            items: list[Any] = []
            for index, element in enumerate(item):
                screened = self.value(element, (*path[:-1], f"{path[-1]}[{index}]"))
                if screened is not element:
                    changed = True
                if screened is not _DROP:
                    items.append(screened)
            return items if changed else item
        return item

    def text(self, text: str, path: tuple[str, ...]) -> Any:
        digits = len(text) - len(text.translate(_DIGITS))
        for name, action in self.policy.detectors:
            detector = DETECTORS[name]
            spans = find_spans(detector, text, digits)
            if not spans:
                continue
            where = _dotted(path)
            if action == "refuse":
                raise _Refused(where, name)
            if action == "drop":
                self.actions.append((where, "dropped", f"privacy_{name}"))
                return _DROP
            for span in reversed(spans):
                text = mask_span(text, span)
            digits = len(text) - len(text.translate(_DIGITS))
            self.actions.append((where, "masked", f"privacy_{name}"))
        return text


_DROP: Final = object()


def _dotted(path: tuple[str, ...]) -> str:
    return _PATH_SAFE.sub("?", ".".join(path))[:200]


def _with_consent(message: dict[str, Any], preferences: dict[str, bool]) -> dict[str, Any]:
    context = dict(message.get("context") or {})
    existing = context.get("consent")
    consent = dict(existing) if isinstance(existing, dict) else {}
    consent["categoryPreferences"] = dict(preferences)
    context["consent"] = consent
    return {**message, "context": context}


_SENTENCES: Final = {
    "dropped": "was removed",
    "masked": "was masked (last 4 kept)",
    "hashed": "was hashed",
}


def _log_action(log: ResultLog, workspace_id: str, path: str, action: str, rule: str) -> None:
    reason = {
        "privacy_denylist": "its key is on the privacy denylist",
        "privacy_sha256": "the privacy policy hashes it (SHA-256)",
        "privacy_hmac-sha256": "the privacy policy hashes it (HMAC-SHA256, keyed per workspace)",
    }.get(rule)
    if reason is None:
        detector = DETECTORS[rule.removeprefix("privacy_")]
        reason = f"it contained {detector.title}"
    log.info(f"Privacy: {path} {_SENTENCES[action]}: {reason}.", field=path, rule=rule, action=action)
    logger.info(
        "privacy: %s %s in an event of workspace %s (%s)",
        action,
        path,
        workspace_id,
        rule,
        extra={"workspace": workspace_id, "field": path, "action": action},
    )
