"""The flow file: a small JSON stand-in for a QuickBot flow, for `run`, `validate` and examples.

    {
      "version": 1,
      "workspace_id": "acme",
      "bot_id": "onboarding-bot",          (optional, sent as context.quickbot.botId)
      "variables": {"User ID": "u-42", "Age": 42},
      "blocks": [{"id": "identify", "type": "segment", "options": {...}}, ...]
    }

Blocks of other types are listed but not run: a real flow has many block types, and the
file format leaves room for them so a flow exported from an editor can be checked as is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core import PluginError

VariableValue = str | int | float | bool | None | list[str | int | float | bool | None]


class FlowError(PluginError):
    """The flow file cannot be read; the message names the file and the place in it."""


class FlowBlock(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    type: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)


class Flow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    workspace_id: str = Field(min_length=1)
    bot_id: str | None = None
    variables: dict[str, VariableValue] = Field(default_factory=dict)
    blocks: list[FlowBlock]

    def blocks_of(self, block_type: str) -> list[FlowBlock]:
        return [block for block in self.blocks if block.type == block_type]


def load_flow(path: Path) -> Flow:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise FlowError(f"cannot read the flow file {str(path)!r}: {error.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise FlowError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    try:
        return Flow.model_validate(data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = "/".join(str(part) for part in first["loc"]) or "(top level)"
        raise FlowError(f"{path}: {where}: {first['msg']} ({error.error_count()} problem(s) in all)") from None


def parse_variable(assignment: str) -> tuple[str, VariableValue]:
    """`NAME=VALUE` from the command line; VALUE is read as JSON when it is JSON (42, true, [1,2])."""
    name, sep, raw = assignment.partition("=")
    if not sep or not name.strip():
        raise FlowError(f"--var needs NAME=VALUE, got {assignment!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return name.strip(), raw
    if isinstance(value, dict):
        return name.strip(), raw
    return name.strip(), value
