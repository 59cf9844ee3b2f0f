"""This package's copy of the QuickBot plugin API, version 1, and a reference host.

No QuickBot package exists to import, so the contract lives here: the hook specifications,
the two markers under the project name ``"quickbot"``, and `ReferenceHost`, a small host built
only from the contract (entry points -> pluggy -> block types). The CLI and the tests drive the
plugin through it, so what they prove holds for any host written from the contract page.

pluggy ignores an implementation marked with another project name without a word; that is
why `ReferenceHost.load` calls `check_pending()` and the tests assert the hooks were found.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pluggy

PROJECT_NAME = "quickbot"
ENTRY_POINT_GROUP = "quickbot.plugins"
API_VERSION = 1
DISABLE_PLUGINS_ENV = "QUICKBOT_DISABLE_PLUGINS"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

logger = logging.getLogger("quickbot_segment_plugin.host")


class BlockType(Protocol):
    """What `quickbot_block_types()` returns a list of (host contract, "The block-type object")."""

    id: str
    name: str
    version: str
    api_version: int
    options_schema: dict[str, Any]
    credentials_schema: dict[str, Any]

    def validate(self, options: dict[str, Any]) -> list[dict[str, str]]: ...

    def seal_credentials(self, values: dict[str, Any], *, workspace_id: str) -> str: ...

    def execute(self, options: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]: ...


class QuickbotHookSpecs:
    """The hooks a QuickBot host calls on every plugin."""

    @hookspec
    def quickbot_block_types(self) -> list[BlockType]:  # type: ignore[empty-body]
        """Called once at host start; returns the block types the plugin provides."""

    @hookspec
    def quickbot_shutdown(self, timeout: float) -> None:
        """Called once at host stop; must return within `timeout` seconds, having flushed what it can."""


@dataclass(frozen=True)
class LoadedPlugin:
    """One plugin the host registered, as `quickbot-segment plugins` lists it."""

    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...]


class ReferenceHost:
    """A QuickBot host reduced to the contract: discover, list block types, run, shut down."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.manager = pluggy.PluginManager(PROJECT_NAME)
        self.manager.add_hookspecs(QuickbotHookSpecs)
        env = os.environ if environ is None else environ
        self.disabled = frozenset(name.strip() for name in env.get(DISABLE_PLUGINS_ENV, "").split(",") if name.strip())
        self._block_types: dict[str, BlockType] | None = None

    def load(self) -> ReferenceHost:
        """Load every `quickbot.plugins` entry point not disabled, and check the hooks match the specs."""
        for name in self.disabled:
            self.manager.set_blocked(name)
        count = self.manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        self.manager.check_pending()
        logger.debug("loaded %d QuickBot plugin(s)", count, extra={"plugins": count})
        return self

    def plugins(self) -> list[LoadedPlugin]:
        loaded = []
        for plugin, dist in self.manager.list_plugin_distinfo():
            name = self.manager.get_name(plugin) or "?"
            callers = self.manager.get_hookcallers(plugin) or []
            loaded.append(
                LoadedPlugin(
                    name=name,
                    distribution=dist.project_name,
                    version=dist.version,
                    hooks=tuple(sorted(caller.name for caller in callers)),
                )
            )
        return sorted(loaded, key=lambda plugin: plugin.name)

    def block_types(self) -> dict[str, BlockType]:
        """Block types by id, from the one `quickbot_block_types` call a host makes at start."""
        if self._block_types is None:
            found: dict[str, BlockType] = {}
            for block_types in self.manager.hook.quickbot_block_types():
                for block_type in block_types:
                    if block_type.api_version != API_VERSION:
                        logger.warning(
                            "block type %r speaks API version %s, not %s; ignored",
                            block_type.id,
                            block_type.api_version,
                            API_VERSION,
                        )
                        continue
                    found[block_type.id] = block_type
            self._block_types = found
        return self._block_types

    def block_type(self, block_type_id: str) -> BlockType:
        try:
            return self.block_types()[block_type_id]
        except KeyError:
            known = ", ".join(sorted(self.block_types())) or "none"
            raise LookupError(f"no plugin provides the block type {block_type_id!r} (loaded: {known})") from None

    def shutdown(self, timeout: float) -> None:
        self.manager.hook.quickbot_shutdown(timeout=timeout)
