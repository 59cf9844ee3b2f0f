"""Reading a variable that is not the plugin's own setting (`XDG_STATE_HOME`).

The plugin's own `QUICKBOT_*` variables are fields of the settings models (`core.settings`);
this is for the few the system defines, where only "set or not" matters.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def env_str(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or default
