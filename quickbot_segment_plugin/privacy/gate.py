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
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..core import PLUGIN_CONTEXT, PluginError, ResultLog
from .consent import ConsentDecision
from .detectors import DETECTORS, find_spans, mask_span
from .policy import DEFAULT_POLICY, PolicyResolution, PolicyResolver, PrivacyPolicy, hash_key_missing, normal_key
from .settings import PrivacyVariables

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
UNSCANNED_CONTEXT: Final = PLUGIN_CONTEXT
_HAS_DIGIT = re.compile(r"[0-9]")
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_DIGITS = str.maketrans("", "", "0123456789")
_DIGIT_BYTES: Final = b"0123456789"
# Integers from here on (in absolute value) are scanned as text: a card number typed as a number
# arrives as an int; shorter ones are amounts, counts and scores.
_SCANNED_INT: Final = 10**7
_PATH_SAFE = re.compile(r"[^\w .\-\[\]]")


@dataclass(frozen=True)
class PrivacySettings:
    enabled: bool
    resolver: PolicyResolver
    hash_secret: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PrivacySettings:
        variables = PrivacyVariables.from_env(environ)
        secret = variables.hash_key.get_secret_value() or None
        if secret is not None and len(secret) < MIN_HASH_KEY_CHARS:
            raise PluginError(
                f"{HASH_KEY_ENV} must be at least {MIN_HASH_KEY_CHARS} characters long.", field=HASH_KEY_ENV
            )
        return cls(variables.privacy, PolicyResolver.from_env(environ), secret)


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
        # Policies compiled for the walk, by identity (the resolver keeps one object per file version),
        # and the last one used: nearly every event of an executor has the same policy, the default.
        self._rules = _Rules(DEFAULT_POLICY)
        self._compiled: dict[int, _Rules] = {id(DEFAULT_POLICY): self._rules}

    def settings(self) -> PrivacySettings:
        if self._settings is None:
            with self._lock:
                if self._settings is None:
                    self._settings = PrivacySettings.from_env(self._environ)
        return self._settings

    @property
    def enabled(self) -> bool:
        return (self._settings or self.settings()).enabled

    def policy_for(self, workspace_id: str, log: ResultLog) -> PrivacyPolicy | None:
        """The workspace's policy; None (logged as an error) when its file was never usable.

        `execute` looks it up once and hands it to `screen` and `hash`: each lookup stats the
        policy file, and both steps must apply the same version of it.
        """
        resolution = (self._settings or self.settings()).resolver.for_workspace(workspace_id)
        if resolution.policy is None or resolution.warning is not None:
            return _reported(resolution, log)
        return resolution.policy  # usable, no warning (nearly every event): nothing to log

    def screen(
        self,
        message: dict[str, Any],
        workspace_id: str,
        log: ResultLog,
        consent: ConsentDecision | None = None,
        *,
        policy: PrivacyPolicy | None = None,
    ) -> dict[str, Any] | None:
        """The message to send on (changed copies only where something changed), or None: refused.

        `policy` is `policy_for(workspace_id)`, looked up here when not given.
        """
        if consent is not None and consent.preferences:
            message = _with_consent(message, consent.preferences)
        if policy is None:  # given (execute): privacy is on; else look it up, if privacy is on
            if not self.enabled:
                return message
            policy = self.policy_for(workspace_id, log)
            if policy is None:
                return None
        rules = self._rules
        if rules.policy is not policy:
            rules = self._rules_for(policy)
        actions: list[tuple[str, str, str]] = []  # (path, action, rule)
        screened: dict[str, Any] | None = None
        try:
            for name in OBJECTS_BY_TYPE.get(str(message.get("type")), ("context",)):
                value = message.get(name)
                if isinstance(value, dict) and value:
                    walked = rules.object(value, (name,), actions, UNSCANNED_CONTEXT if name == "context" else None)
                    if walked is not value:
                        if screened is None:
                            screened = dict(message)
                        screened[name] = walked
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
        if not actions:
            return message
        for path, action, rule in actions:
            _log_action(log, workspace_id, path, action, rule)
        # Every change comes with an action; should a mask ever leave a text as it was, the contract still
        # holds: an action means a new top-level dict.
        return screened if screened is not None else dict(message)

    def value_checks(self, policy: PrivacyPolicy, action: str, path: tuple[str, ...]) -> list[Callable[[Any], bool]]:
        """What `screen` asks of a value at `path` of an `action` message, as tests of the value
        alone: each True when screening leaves it as it is and says nothing; none where screening
        does not look. The key's own verdict is not among them: it depends on the path only, so
        a message already screened untouched vouches for it (execution/slot_checks.py)."""
        if len(path) < 2 or path[0] not in OBJECTS_BY_TYPE.get(action, ("context",)):
            return []
        if path[0] == "context" and path[1] in UNSCANNED_CONTEXT:
            return []
        rules = self._rules if self._rules.policy is policy else self._rules_for(policy)
        return [rules.leaves]

    def _rules_for(self, policy: PrivacyPolicy) -> _Rules:
        rules = self._compiled.get(id(policy))
        if rules is None or rules.policy is not policy:  # `rules` holds its policy: an id is never reused here
            rules = _Rules(policy)
            with self._lock:
                if len(self._compiled) >= MAX_COMPILED_POLICIES:
                    self._compiled.clear()
                self._compiled[id(policy)] = rules
        self._rules = rules
        return rules

    def hash(
        self, message: dict[str, Any], workspace_id: str, log: ResultLog, *, policy: PrivacyPolicy | None = None
    ) -> dict[str, Any]:
        """The message with the policy's fields hashed; raises ConfigurationError without the key.

        `policy` is the one `screen` applied; looked up here (without logging again) when not given.
        """
        if policy is None:
            if not self.enabled:
                return message
            policy = (self._settings or self.settings()).resolver.for_workspace(workspace_id).policy
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


def _reported(resolution: PolicyResolution, log: ResultLog) -> PrivacyPolicy | None:
    if resolution.warning is not None:
        log.warning(resolution.warning, rule="privacy_policy")
    if resolution.policy is None:
        log.error(
            f"The privacy policy of this workspace cannot be used ({resolution.error}); the event was not "
            "sent. Fix the policy file, or remove it to apply the default policy.",
            rule="privacy_policy",
        )
    return resolution.policy


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


_NOT_DENIED: Final = 0
_DENIED_NAME: Final = 1  # denied wherever it is
_PATH_END: Final = 2  # the last part of a denied path: denied or not, depending on where it is
MAX_KEY_VERDICTS: Final = 4096  # per kind of verdict: keys can come from user input
MAX_COMPILED_POLICIES: Final = 128
MAX_CLEAN_TEXTS: Final = 4096  # per policy: texts can come from user input


class _Rules:
    """One policy, compiled for the walk; the walk is copy-on-write, so a host's dict is never modified.

    A key is denied when its normal form is a denied name, its path is a denied path, or its path
    inside traits/properties/context is a denied any-object path. Building every key's path to look
    it up dominated the walk, so each key gets a verdict, once: not denied anywhere (nearly every key:
    one set lookup from then on), denied everywhere, or the last part of some denied path (only then
    is its path built). Values no detector can match are recognised by their exact type and size
    before a path is built for them.
    """

    def __init__(self, policy: PrivacyPolicy) -> None:
        self.policy = policy
        self.deny_paths = policy.deny_paths
        self.deny_any_object_paths = policy.deny_any_object_paths
        self.path_ends = frozenset(path[-1] for path in (*policy.deny_paths, *policy.deny_any_object_paths))
        # Plain `str` keys only (a subclass may have its own `__str__`, which the rule applies to).
        # Never holds an UNSCANNED_CONTEXT name, so those always reach the `skip` test.
        self.clean: set[str] = set()
        self.flagged: dict[str, int] = {}  # every other key's verdict
        # Texts with digits that no detector matched: a block's static values (a date, a plan code)
        # come back on every event, and scanning them again cost more than this look-up
        # (bench_execute.py, the heavy block). A detector's verdict depends on the text alone.
        self.clean_texts: set[str] = set()
        self.detectors = tuple((name, action, DETECTORS[name]) for name, action in policy.detectors)
        # A text shorter, or with fewer digits, than every detector needs cannot match any: most texts.
        self.min_length = min((detector.min_length for _, _, detector in self.detectors), default=sys.maxsize)
        # At least 1: a text without digits is never scanned, whatever a detector says it needs.
        self.min_digits = max(1, min((detector.needs_digits for _, _, detector in self.detectors), default=1))

    def verdict(self, key: Any) -> int:
        exact = type(key) is str
        if exact:
            known = self.flagged.get(key)
            if known is not None:
                return known
        name = str(key)
        if normal_key(name) in self.policy.deny_names:
            verdict = _DENIED_NAME
        elif name in self.path_ends:
            verdict = _PATH_END
        else:
            verdict = _NOT_DENIED
        if exact:
            if verdict == _NOT_DENIED and key not in UNSCANNED_CONTEXT:
                if len(self.clean) >= MAX_KEY_VERDICTS:
                    self.clean.clear()
                self.clean.add(key)
            else:
                if len(self.flagged) >= MAX_KEY_VERDICTS:
                    self.flagged.clear()
                self.flagged[key] = verdict
        return verdict

    def object(
        self,
        value: dict[str, Any],
        path: tuple[str, ...],
        actions: list[tuple[str, str, str]],
        skip: frozenset[str] | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] | None = None
        clean = self.clean
        min_length = self.min_length
        for key, item in value.items():
            if type(key) is not str or key not in clean:
                if skip is not None and key in skip:
                    continue
                verdict = self.verdict(key)
                if verdict:
                    child_path = (*path, str(key))
                    if (
                        verdict == _DENIED_NAME
                        or child_path in self.deny_paths
                        or child_path[1:] in self.deny_any_object_paths
                    ):
                        if result is None:
                            result = dict(value)
                        del result[key]
                        actions.append((_dotted(child_path), "dropped", "privacy_denylist"))
                        continue
            # `value`, unrolled on the exact type: what no detector can match is passed over before
            # a path is built for it. Subclasses (an IntEnum, a str subclass) take `value` itself.
            kind = type(item)
            if kind is str:
                if len(item) < min_length or item.isalpha():  # isalpha: a cheap no for single words
                    continue
                if item.isascii():  # `_digit_count`, inlined: nearly every remaining text ends here
                    raw = item.encode("ascii")
                    if len(raw) - len(raw.translate(None, _DIGIT_BYTES)) < self.min_digits:
                        continue
                elif not _HAS_DIGIT.search(item):
                    continue
                screened = self.text(item, (*path, str(key)), actions)
            elif kind is dict:
                screened = self.object(item, (*path, str(key)), actions)
            elif kind is int:
                if -_SCANNED_INT < item < _SCANNED_INT:
                    continue
                screened = self.value(item, (*path, str(key)), actions)
            elif kind is float or kind is bool or item is None:
                continue
            elif kind is list:
                screened = self.sequence(item, (*path, str(key)), actions)
            else:
                screened = self.value(item, (*path, str(key)), actions)
            if screened is not item:
                if result is None:
                    result = dict(value)
                if screened is _DROP:
                    del result[key]
                else:
                    result[key] = screened
        return value if result is None else result

    def value(self, item: Any, path: tuple[str, ...], actions: list[tuple[str, str, str]]) -> Any:
        """The general rule, for any value; `object` and `sequence` skip it for what cannot match."""
        if isinstance(item, str):
            return self.text(item, path, actions) if _HAS_DIGIT.search(item) else item
        if isinstance(item, int) and not isinstance(item, bool):
            if item >= _SCANNED_INT or item <= -_SCANNED_INT:
                text = str(item)
                screened = self.text(text, path, actions)
                return item if screened == text else screened
            return item
        if isinstance(item, dict):
            return self.object(item, path, actions)
        if isinstance(item, list):
            return self.sequence(item, path, actions)
        return item

    def sequence(self, item: list[Any], path: tuple[str, ...], actions: list[tuple[str, str, str]]) -> Any:
        changed = False
        items: list[Any] = []
        for index, element in enumerate(item):
            kind = type(element)
            if kind is dict:
                screened = self.object(element, (*path[:-1], f"{path[-1]}[{index}]"), actions)
            elif self.inert(element, kind):
                items.append(element)
                continue
            else:
                screened = self.value(element, (*path[:-1], f"{path[-1]}[{index}]"), actions)
            if screened is not element:
                changed = True
            if screened is not _DROP:
                items.append(screened)
        return items if changed else item

    def leaves(self, item: Any) -> bool:
        """True when `value` returns `item` as it is with no action: `object`'s answer for one value
        whose key is not denied (a container is not answered for: False)."""
        kind = type(item)
        if self.inert(item, kind):
            return True
        if kind is str or kind is int:
            actions: list[tuple[str, str, str]] = []
            try:
                screened = self.value(item, ("",), actions)
            except _Refused:
                return False
            return screened is item and not actions
        return False

    def inert(self, item: Any, kind: type) -> bool:
        """True when `value` would certainly return the item as it is: no detector can match it."""
        if kind is str:
            return len(item) < self.min_length or item.isalpha() or _digit_count(item) < self.min_digits
        if kind is int:
            return bool(-_SCANNED_INT < item < _SCANNED_INT)
        return kind is float or kind is bool or item is None

    def text(self, text: str, path: tuple[str, ...], actions: list[tuple[str, str, str]]) -> Any:
        if text in self.clean_texts:
            return text
        digits = _digit_count(text)
        if digits < self.min_digits:
            return text
        original, matched = text, False
        for name, action, detector in self.detectors:
            spans = find_spans(detector, text, digits)
            if not spans:
                continue
            where = _dotted(path)
            if action == "refuse":
                raise _Refused(where, name)
            if action == "drop":
                actions.append((where, "dropped", f"privacy_{name}"))
                return _DROP
            for span in reversed(spans):
                text = mask_span(text, span)
            digits = _digit_count(text)
            actions.append((where, "masked", f"privacy_{name}"))
            matched = True
        if not matched:
            if len(self.clean_texts) >= MAX_CLEAN_TEXTS:
                self.clean_texts.clear()
            self.clean_texts.add(original)
        return text


def _digit_count(text: str) -> int:
    if text.isascii():  # bytes.translate deletes with a table lookup; str.translate goes through a dict
        raw = text.encode("ascii")
        return len(raw) - len(raw.translate(None, _DIGIT_BYTES))
    return len(text) - len(text.translate(_DIGITS))


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
