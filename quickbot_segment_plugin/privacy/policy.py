"""A workspace's privacy policy: what it says, how it is read, and the default every workspace has.

The policy file is `<workspace>.privacy.json` in `QUICKBOT_SEGMENT_PRIVACY_DIR`, else in
`QUICKBOT_SEGMENT_TRACKING_PLAN_DIR` (beside the workspace's tracking plan, so one directory
holds a workspace's data rules). A workspace without a file gets `DEFAULT_POLICY`: privacy is
on by default, because the data at risk is typed by end users the bot builder never sees.
Files are read like tracking plans: cached by path, modification time and size, so an edit
is in force from the next event, and a file edited into something unusable leaves its last
good version in force (with a warning). A file that was never usable refuses the workspace's
events: sending unscreened data because of a typo is the failure this policy exists to prevent.

File format (every key optional):

    {
      "deny_keys":  ["national_id", "traits.address.street"],   # added to the default list
      "keep_keys":  ["pin"],                                     # removed from the default list
      "detectors":  {"card": "refuse", "iban": "mask", "ssn": "mask", "phone": "mask"},
      "hash":       [{"path": "traits.email", "method": "sha256", "normalise": "email"}]
    }

A key without a dot is a key name, dropped at any depth of traits, properties and context;
names compare without case, spaces, `_` or `-` (`credit_card_number` = `creditCardNumber`).
A key with dots is a path: `traits.address.street`, or `address.street` in any of the three.
Detector actions: `drop` (remove the field), `mask` (keep the last 4), `refuse` (do not send
the event), `off`. Hash methods: `sha256`, or `hmac-sha256` keyed per workspace from
`QUICKBOT_SEGMENT_HASH_KEY` (never a key in the file).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final, Literal

from ..core import ConfigurationError, FileChecks, PluginError, env_str, file_stem
from .detectors import DETECTORS
from .settings import PrivacyVariables

__all__ = [
    "ACTIONS",
    "DEFAULT_DENY_KEYS",
    "DEFAULT_POLICY",
    "HASH_METHODS",
    "NORMALISERS",
    "PRIVACY_DIR_ENV",
    "HashRule",
    "PolicyResolution",
    "PolicyResolver",
    "PrivacyPolicy",
    "PrivacyPolicyError",
    "normal_key",
    "parse_policy",
]

logger = logging.getLogger("quickbot_segment_plugin.privacy")

PRIVACY_DIR_ENV: Final = "QUICKBOT_SEGMENT_PRIVACY_DIR"
PLAN_DIR_ENV: Final = "QUICKBOT_SEGMENT_TRACKING_PLAN_DIR"
POLICY_SUFFIX: Final = ".privacy.json"
MAX_POLICY_BYTES: Final = 1024 * 1024
SCANNED_OBJECTS: Final = ("traits", "properties", "context")

Action = Literal["drop", "mask", "refuse", "off"]
ACTIONS: Final[tuple[Action, ...]] = ("drop", "mask", "refuse", "off")
HashMethod = Literal["sha256", "hmac-sha256"]
HASH_METHODS: Final[tuple[HashMethod, ...]] = ("sha256", "hmac-sha256")
NORMALISERS: Final = ("email", "phone", "text", "none")

# Key names never worth sending to an analytics tool; compared through `normal_key`.
DEFAULT_DENY_KEYS: Final = (
    "password",
    "passwd",
    "pwd",
    "passcode",
    "pin",
    "pin_code",
    "card_number",
    "credit_card",
    "credit_card_number",
    "cc_number",
    "card_no",
    "cvv",
    "cvv2",
    "cvc",
    "cvc2",
    "security_code",
    "card_verification_code",
    "ssn",
    "social_security_number",
    "national_insurance_number",
    "iban",
    "bank_account",
    "bank_account_number",
    "account_number",
    "routing_number",
    "sort_code",
    "secret",
    "api_key",
    "access_token",
)
# Card numbers and IBANs are masked, not refused: the last four are what PCI DSS lets anyone
# display, the event (often the one that says a payment step happened) still arrives, and
# the full number never leaves the bot. SSNs in their dashed form are specific enough to
# mask too. Phone detection is off: dates, amounts and order numbers trip it too often.
# Run in this order: an IBAN's digits can hold a Luhn-valid run, so IBANs are masked first.
DEFAULT_DETECTORS: Final[Mapping[str, Action]] = {"iban": "mask", "card": "mask", "ssn": "mask", "phone": "off"}
_NOT_KEY_CHARS = re.compile(r"[\s_\-]+")


class PrivacyPolicyError(PluginError):
    """A policy file cannot be read; the message names the file and the place in it."""


@lru_cache(maxsize=8192)
def normal_key(key: str) -> str:
    """`credit_card_number`, `Credit Card Number` and `creditCardNumber` are the same key."""
    return _NOT_KEY_CHARS.sub("", key).lower()


@dataclass(frozen=True)
class HashRule:
    path: tuple[str, ...]  # ("traits", "email")
    method: HashMethod
    normalise: str

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class PrivacyPolicy:
    name: str  # "default" or the file's path
    deny_names: frozenset[str]  # normalised key names, any depth
    deny_paths: frozenset[tuple[str, ...]]  # full paths from the message root
    deny_any_object_paths: frozenset[tuple[str, ...]]  # paths inside traits/properties/context
    detectors: tuple[tuple[str, Action], ...]  # in the order they run, without "off"
    hashes: tuple[HashRule, ...] = field(default=())

    @property
    def needs_hash_key(self) -> bool:
        return any(rule.method == "hmac-sha256" for rule in self.hashes)


def parse_policy(document: Any, name: str) -> PrivacyPolicy:
    """A policy from its JSON document; raises PrivacyPolicyError naming what is wrong."""
    if not isinstance(document, Mapping):
        raise PrivacyPolicyError(f"{name}: a privacy policy must be a JSON object.")
    unknown = sorted(set(document) - {"deny_keys", "keep_keys", "detectors", "hash", "description"})
    if unknown:
        raise PrivacyPolicyError(f"{name}: unknown key(s) {', '.join(map(repr, unknown))}.", field=unknown[0])
    keep = {normal_key(key) for key in _strings(document.get("keep_keys", []), name, "keep_keys")}
    names = {normal_key(key) for key in DEFAULT_DENY_KEYS} - keep
    paths: set[tuple[str, ...]] = set()
    inside: set[tuple[str, ...]] = set()
    for entry in _strings(document.get("deny_keys", []), name, "deny_keys"):
        parts = tuple(part.strip() for part in entry.split("."))
        if any(not part for part in parts):
            raise PrivacyPolicyError(f"{name}: deny_keys entry {entry!r} has an empty part.", field="deny_keys")
        if len(parts) == 1:
            names.add(normal_key(parts[0]))
        elif parts[0] in SCANNED_OBJECTS:
            paths.add(parts)
        else:
            inside.add(parts)
    detectors = dict(DEFAULT_DETECTORS)
    chosen = document.get("detectors", {})
    if not isinstance(chosen, Mapping):
        raise PrivacyPolicyError(f"{name}: detectors must be an object of detector -> action.", field="detectors")
    for detector, action in chosen.items():
        if detector not in DETECTORS:
            raise PrivacyPolicyError(
                f"{name}: unknown detector {detector!r}; the detectors are {', '.join(DETECTORS)}.",
                field=f"detectors.{detector}",
            )
        if action not in ACTIONS:
            raise PrivacyPolicyError(
                f"{name}: detectors.{detector} must be one of {', '.join(ACTIONS)}, got {action!r}.",
                field=f"detectors.{detector}",
            )
        detectors[detector] = action
    return PrivacyPolicy(
        name=name,
        deny_names=frozenset(names),
        deny_paths=frozenset(paths),
        deny_any_object_paths=frozenset(inside),
        detectors=tuple((detector, action) for detector, action in detectors.items() if action != "off"),
        hashes=_hash_rules(document.get("hash", []), name),
    )


def _strings(value: Any, name: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise PrivacyPolicyError(f"{name}: {key} must be a list of non-empty strings.", field=key)
    return [item.strip() for item in value]


def _hash_rules(value: Any, name: str) -> tuple[HashRule, ...]:
    if not isinstance(value, list):
        raise PrivacyPolicyError(f"{name}: hash must be a list of {{path, method, normalise}} objects.", field="hash")
    rules = []
    for index, entry in enumerate(value):
        where = f"hash[{index}]"
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
            raise PrivacyPolicyError(f"{name}: {where} needs a path such as 'traits.email'.", field=where)
        unknown = sorted(set(entry) - {"path", "method", "normalise"})
        if unknown:
            raise PrivacyPolicyError(
                f"{name}: {where} has unknown key(s) {', '.join(map(repr, unknown))}.", field=where
            )
        path = tuple(part.strip() for part in entry["path"].split("."))
        if len(path) < 2 or path[0] not in SCANNED_OBJECTS or any(not part for part in path):
            raise PrivacyPolicyError(
                f"{name}: {where}.path must start with traits, properties or context and name a key "
                f"(like 'traits.email'), got {entry['path']!r}.",
                field=where,
            )
        method = entry.get("method", "sha256")
        if method not in HASH_METHODS:
            raise PrivacyPolicyError(
                f"{name}: {where}.method must be one of {', '.join(HASH_METHODS)}, got {method!r}.", field=where
            )
        normalise = entry.get("normalise", _default_normaliser(path[-1]))
        if normalise not in NORMALISERS:
            raise PrivacyPolicyError(
                f"{name}: {where}.normalise must be one of {', '.join(NORMALISERS)}, got {normalise!r}.", field=where
            )
        rules.append(HashRule(path, method, normalise))
    return tuple(rules)


def _default_normaliser(key: str) -> str:
    lowered = key.lower()
    if "email" in lowered:
        return "email"
    if "phone" in lowered or "mobile" in lowered:
        return "phone"
    return "text"


DEFAULT_POLICY: Final = parse_policy({}, "default")


@dataclass(frozen=True)
class PolicyResolution:
    policy: PrivacyPolicy | None
    error: str | None = None  # the file cannot be used and nothing good came before it
    warning: str | None = None  # the file cannot be used; its last good version is applied


class PolicyResolver:
    """Finds each workspace's policy file; a `stat` per recheck interval (core/file_checks.py),
    a parse only when it changed."""

    def __init__(self, directory: str | None, files: FileChecks | None = None) -> None:
        self.directory = os.path.abspath(directory) if directory else None
        self._files = files if files is not None else FileChecks(0)
        self._lock = threading.Lock()
        self._state: dict[str, tuple[tuple[int, int], PrivacyPolicy | None, PolicyResolution]] = {}
        self._reported: set[tuple[str, str]] = set()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PolicyResolver:
        directory = PrivacyVariables.from_env(environ).privacy_dir
        # Tracking plans' directory is quality's setting; read by name, as privacy sits beside quality.
        return cls(directory or env_str(PLAN_DIR_ENV, "", environ) or None, FileChecks.from_env(environ))

    def path_for(self, workspace_id: str) -> str | None:
        """The workspace's policy file (`workspace_files` encodes the id); None without a directory or a name."""
        stem = file_stem(workspace_id)
        if self.directory is None or stem is None:
            return None
        return os.path.join(self.directory, f"{stem}{POLICY_SUFFIX}")

    def describe(self, workspace_id: str) -> str:
        """Which file applies to the workspace, in a sentence for `privacy check` and `validate`."""
        if self.directory is None:
            return f"no policy directory ({PRIVACY_DIR_ENV} or {PLAN_DIR_ENV}): the default policy applies"
        path = self.path_for(workspace_id)
        if path is None:
            return f"the workspace id {workspace_id!r} has no policy file name: its events are refused"
        if os.path.lexists(path):
            return f"{path} applies"
        if not os.path.isdir(self.directory):
            return f"the policy directory {self.directory} does not exist: events are refused"
        return f"{path} does not exist: the default policy applies"

    def for_workspace(self, workspace_id: str) -> PolicyResolution:
        """The policy in force; an `error` (the event is refused) whenever the configured directory
        cannot say which policy applies: a policy must never be skipped for the default one."""
        if self.directory is None:
            return _DEFAULT
        return self._files.concluded(self._resolve, workspace_id)

    def _resolve(self, workspace_id: str) -> PolicyResolution:
        directory = self.directory
        if directory is None:
            return _DEFAULT
        path = self.path_for(workspace_id)
        if path is None:
            return self._unusable(
                directory, f"the workspace id {workspace_id!r} cannot be mapped to a policy file name"
            )
        try:
            stat = self._files.stat(path)
        except FileNotFoundError:
            if self._files.is_dir(directory):
                return _DEFAULT
            return self._unusable(directory, f"the policy directory {directory} does not exist")
        except OSError as error:
            return self._unusable(path, f"{path}: cannot be read ({error.strerror or error})")
        stat_key = (stat.st_mtime_ns, stat.st_size)
        state = self._state.get(path)
        if state is not None and state[0] == stat_key:
            return state[2]
        last_good = state[1] if state is not None else None
        policy: PrivacyPolicy | None
        try:
            policy = load_policy(path)
            resolution = PolicyResolution(policy)
        except PrivacyPolicyError as error:
            logger.error("privacy policy %s cannot be used: %s", path, error)
            policy = last_good
            resolution = (
                PolicyResolution(
                    last_good,
                    warning=f"The privacy policy file was changed but cannot be used "
                    f"({error}); its previous version is still applied.",
                )
                if last_good is not None
                else PolicyResolution(None, error=str(error))
            )
        with self._lock:
            if len(self._state) >= 100_000:
                self._state.clear()
            self._state[path] = (stat_key, policy, resolution)
        return resolution

    def _unusable(self, where: str, problem: str) -> PolicyResolution:
        """Logged once per file and problem (every event gets it in its result)."""
        with self._lock:
            first = (where, problem) not in self._reported
            if first:
                if len(self._reported) >= 10_000:
                    self._reported.clear()
                self._reported.add((where, problem))
        if first:
            logger.error("privacy policy %s cannot be used: %s; events are refused", where, problem)
        return PolicyResolution(None, error=problem)


_DEFAULT: Final = PolicyResolution(DEFAULT_POLICY)


def load_policy(path: str) -> PrivacyPolicy:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_POLICY_BYTES + 1)
    except OSError as error:
        raise PrivacyPolicyError(f"{path}: cannot be read ({error.strerror}).") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PrivacyPolicyError(f"{path}: larger than {MAX_POLICY_BYTES // 1024} KB.")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PrivacyPolicyError(f"{path}: not valid JSON ({error}).") from None
    return parse_policy(document, path)


def hash_key_missing(variable: str) -> ConfigurationError:
    return ConfigurationError(
        f"The privacy policy asks for a keyed hash (hmac-sha256), but {variable} is not set: set it to a "
        "long random secret (at least 32 characters). The event was not sent.",
        field=variable,
    )
