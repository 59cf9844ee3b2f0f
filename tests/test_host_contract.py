"""The plugin as a QuickBot host sees it: discovery from the installed entry point, the hooks,
the block-type object, and an import that costs nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points, version
from pathlib import Path

import pluggy
import pytest

from quickbot_segment_plugin import host

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


def _load_host() -> host.ReferenceHost:
    return host.ReferenceHost(environ={}).load()


def test_entry_point_is_declared_by_the_installed_distribution() -> None:
    found = [ep for ep in entry_points(group="quickbot.plugins") if ep.name == "segment"]
    assert len(found) == 1
    assert found[0].value == "quickbot_segment_plugin.plugin"
    assert found[0].dist is not None and found[0].dist.name == "quickbot-segment-plugin"


def test_a_host_written_from_the_contract_finds_and_drives_the_plugin() -> None:
    """Only pluggy and the contract's names: no import of this package's host module."""
    specs_source = textwrap.dedent(
        """
        import pluggy
        hookspec = pluggy.HookspecMarker("quickbot")

        class Specs:
            @hookspec
            def quickbot_block_types(self): ...

            @hookspec
            def quickbot_shutdown(self, timeout): ...
        """
    )
    namespace: dict[str, object] = {}
    exec(specs_source, namespace)
    manager = pluggy.PluginManager("quickbot")
    manager.add_hookspecs(namespace["Specs"])
    assert manager.load_setuptools_entrypoints("quickbot.plugins") >= 1
    manager.check_pending()
    plugin = manager.get_plugin("segment")
    callers = manager.get_hookcallers(plugin)
    assert callers, "the plugin's hooks were not picked up (wrong marker project name?)"
    assert {caller.name for caller in callers} == {"quickbot_block_types", "quickbot_shutdown"}

    [block_types] = manager.hook.quickbot_block_types()
    [block] = block_types
    assert block.id == "segment"
    assert block.name == "Segment"
    assert block.version == version("quickbot-segment-plugin") == "0.1.0"
    assert block.api_version == 1
    assert block.options_schema == json.loads((REPO / "block_schemas" / "segment.schema.json").read_text())
    assert block.credentials_schema == json.loads(
        (REPO / "block_schemas" / "segment-credentials.schema.json").read_text()
    )
    json.dumps(block.options_schema)  # plain JSON data crosses the boundary
    assert block.validate({"action": "track", "event": "Signed Up", "userId": "u1"}) == []
    manager.hook.quickbot_shutdown(timeout=1.0)


def test_a_marker_with_another_project_name_is_silently_ignored_which_is_why_we_check() -> None:
    wrong = pluggy.HookimplMarker("typebot")

    class WrongPlugin:
        @wrong
        def quickbot_block_types(self) -> list[object]:
            return []

    manager = pluggy.PluginManager("quickbot")
    manager.add_hookspecs(host.QuickbotHookSpecs)
    manager.register(WrongPlugin())
    manager.check_pending()  # passes: pluggy does not even see the implementation
    assert manager.hook.quickbot_block_types() == []
    assert not manager.get_hookcallers(manager.get_plugins().pop())


def test_reference_host_lists_plugins_with_versions() -> None:
    plugins = _load_host().plugins()
    segment = next(plugin for plugin in plugins if plugin.name == "segment")
    assert segment.distribution == "quickbot-segment-plugin"
    assert segment.version == "0.1.0"
    assert segment.hooks == ("quickbot_block_types", "quickbot_shutdown")


def test_disabled_plugins_are_not_loaded() -> None:
    disabled = host.ReferenceHost(environ={"QUICKBOT_DISABLE_PLUGINS": " other , segment"}).load()
    assert "segment" not in {plugin.name for plugin in disabled.plugins()}
    with pytest.raises(LookupError, match="no plugin provides the block type 'segment'"):
        disabled.block_type("segment")


def test_block_type_is_the_same_object_for_every_call() -> None:
    loaded = _load_host()
    assert loaded.block_type("segment") is loaded.manager.hook.quickbot_block_types()[0][0]


def test_execute_raises_only_for_host_programming_errors() -> None:
    block = _load_host().block_type("segment")
    with pytest.raises(ValueError, match="workspace_id"):
        block.execute({"action": "track"}, {"variables": {}})
    with pytest.raises(TypeError, match="context"):
        block.execute({"action": "track"}, None)  # type: ignore[arg-type]
    result = block.execute({"action": "nope"}, {"workspace_id": "w", "dry_run": True})
    assert result["status"] == "failed"
    assert result["logs"][0]["level"] == "error"
    assert "unexpectedly" not in result["logs"][0]["message"]  # named as the option it is, not a bug of ours


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("", ""),
        # Positive controls: the probe does see each kind of side effect it looks for.
        ("open('/etc/hostname').close()", "open"),
        (
            "threading.Thread(target=lambda: __import__('time').sleep(1), daemon=True).start()",
            "thread started",
        ),
        ("os.environ.get('QUICKBOT_ENCRYPTION_KEYS')", "environ read QUICKBOT_ENCRYPTION_KEYS"),
    ],
)
def test_importing_the_plugin_does_no_io_starts_no_thread_and_reads_no_secret(extra: str, expected: str) -> None:
    """Run in a fresh interpreter with an audit hook, so earlier imports cannot hide anything."""
    probe = textwrap.dedent(
        """
        import os, sys, threading
        events = []
        watched = ("open", "socket.", "subprocess.Popen", "os.system", "sqlite3.connect", "os.getenv")
        def audit(event, args):
            if event.startswith(watched):
                if event == "open" and str(args[0]).endswith((".py", ".pyc", ".so", ".pth", "METADATA",
                        "entry_points.txt", "RECORD", "top_level.txt", "direct_url.json", "INSTALLER")):
                    return
                if event == "open" and (os.path.isdir(str(args[0])) or str(args[0]) in sys.path):
                    return  # the import system probing sys.path entries
                events.append(event + " " + repr(args)[:120])
        class SpyEnviron(dict):
            def __getitem__(self, key):
                events.append("environ read " + key) if "QUICKBOT" in key else None
                return super().__getitem__(key)
            def get(self, key, default=None):
                events.append("environ read " + key) if "QUICKBOT" in key else None
                return super().get(key, default)
        os.environ = SpyEnviron(os.environ)
        threads = threading.active_count()
        sys.addaudithook(audit)
        import quickbot_segment_plugin.plugin
        EXTRA
        events.extend("thread started" for _ in range(threading.active_count() - threads))
        print("\\n".join(events))
        """
    )
    probe = probe.replace("EXTRA", extra or "pass")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd="/")
    if expected:
        assert expected in out.stdout
    else:
        assert out.stdout.strip() == ""
