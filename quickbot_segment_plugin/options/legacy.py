"""Upgrading options saved by the Typebot-style Segment block to version 1.

Flows built with a Typebot-derived editor hold `{"action": "Track", "eventName": ...,
"properties": [{"id": ..., "key": ..., "value": ...}]}`. Upgrading them on read, instead of
asking every bot builder to re-save every flow, keeps existing bots working; the renames are
remembered so a problem is reported at the path of the options as they were given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .models import ITEM_LIST_FIELDS, MODELS_BY_ACTION

# The labels the old block saved, and the documentation's own names for the actions.
LEGACY_ACTION_LABELS: dict[str, str] = {
    "alias": "alias",
    "identify user": "identify",
    "identify": "identify",
    "track": "track",
    "track event": "track",
    "page": "page",
    "page view": "page",
    "track page": "page",
    "group": "group",
    "screen": "screen",
}

# Old field name -> version 1 name, per action.
LEGACY_FIELD_NAMES: dict[str, dict[str, str]] = {"track": {"eventName": "event"}}

# Editor bookkeeping the old block stored beside the options; it carries no meaning here.
LEGACY_IGNORED_FIELDS = frozenset({"credentialsId", "blockId"})


@dataclass
class UpgradedOptions:
    options: dict[str, Any]
    # version 1 field name -> the name it had in the options as given
    renamed: dict[str, str] = field(default_factory=dict)
    legacy: bool = False

    def given_path(self, path: str) -> str:
        """Map a JSON Pointer into the upgraded options back to the options as given."""
        head, _, rest = path.partition("/")
        original = self.renamed.get(head, head)
        return f"{original}/{rest}" if rest else original


def upgrade(options: Mapping[str, Any]) -> UpgradedOptions:
    """Return version 1 options; version 1 input comes back unchanged (same keys, same values)."""
    result = UpgradedOptions(options=dict(options))
    upgraded = result.options
    action = upgraded.get("action")
    if isinstance(action, str) and action not in MODELS_BY_ACTION:
        normalised = LEGACY_ACTION_LABELS.get(" ".join(action.split()).lower())
        if normalised is not None:
            upgraded["action"] = normalised
            result.legacy = True
    action_id = upgraded.get("action")
    for old, new in LEGACY_FIELD_NAMES.get(action_id if isinstance(action_id, str) else "", {}).items():
        if old in upgraded and new not in upgraded:
            upgraded[new] = upgraded.pop(old)
            result.legacy = True
        if result.legacy and new not in options:
            # The editor that saved these options shows the old name: report problems there.
            result.renamed[new] = old
    for name in LEGACY_IGNORED_FIELDS & upgraded.keys():
        del upgraded[name]
        result.legacy = True
    for name in ITEM_LIST_FIELDS:
        items = upgraded.get(name)
        if isinstance(items, list) and any(isinstance(item, Mapping) and "id" in item for item in items):
            upgraded[name] = [_upgrade_item(item) for item in items]
            result.legacy = True
    return result


def _upgrade_item(item: Any) -> Any:
    if not isinstance(item, Mapping):
        return item
    upgraded = {key: value for key, value in item.items() if key != "id"}
    if upgraded.get("value") is None:
        # The old editor saved an untouched value as null or left it out.
        upgraded["value"] = ""
    return upgraded
