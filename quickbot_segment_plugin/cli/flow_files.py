"""The flow file: a small JSON stand-in for a QuickBot flow, for `run`, `validate` and examples.

    {
      "version": 1,
      "workspace_id": "acme",
      "bot_id": "onboarding-bot",          (optional, sent as context.quickbot.botId)
      "variables": {"User ID": "u-42", "Age": 42, "utm": {"source": "ads"}, "Interests": ["api"]},
      "blocks": [{"id": "identify", "type": "segment", "options": {...}}, ...]
    }

Variables hold any JSON value: text, numbers, true/false, null, lists and objects (read in
templates as `{{ utm.source }}` or `{{ Interests | join(", ") }}`).

Blocks of other types are listed but not run: a real flow has many block types, and the
file format leaves room for them so a flow exported from an editor can be checked as is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core import PluginError

VariableValue = Any  # any JSON value
_KINDS = {"string": "text", "int": "a whole number", "float": "a number", "list": "a list", "dict": "an object"}


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
    if not isinstance(data, dict):
        raise FlowError(f"{path}: a flow file is a JSON object ({{...}}), not {_json_kind(data)}.")
    try:
        return Flow.model_validate(data)
    except ValidationError as error:
        problems = [_plain(problem) for problem in error.errors(include_url=False)]
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise FlowError(f"{path}: {len(problems)} problem(s) in the flow file:\n{listed}") from None


def _plain(problem: Any) -> str:
    """One pydantic error in the words of the flow file: where, what is wrong, what is expected."""
    where = _location(problem["loc"])
    kind = problem["type"]
    got = _json_kind(problem.get("input"))
    if kind == "missing":
        return f"{where} is missing; it is required"
    if kind == "extra_forbidden":
        return f"{where} is not a flow file key (known: {_known(problem['loc'])})"
    if kind == "string_too_short":
        return f"{where} is empty; it must not be"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        expected = _KINDS.get(kind.removesuffix("_type").removesuffix("_parsing"), kind.split("_")[0])
        return f"{where} must be {expected}, not {got}"
    return f"{where}: {problem['msg']}"


def _location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return f"'{text}'" if text else "the flow file"


def _known(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = FlowBlock if len(loc) > 1 and loc[0] == "blocks" else Flow
    return ", ".join(model.model_fields)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def parse_variable(assignment: str) -> tuple[str, VariableValue]:
    """`NAME=VALUE` from the command line; VALUE is read as JSON when it is JSON (42, true, [1,2],
    {"source": "ads"}), else kept as text. Quote a number to keep it text: `--var 'Zip="01234"'`."""
    name, sep, raw = assignment.partition("=")
    if not sep or not name.strip():
        raise FlowError(f"--var needs NAME=VALUE, got {assignment!r}")
    try:
        return name.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return name.strip(), raw
