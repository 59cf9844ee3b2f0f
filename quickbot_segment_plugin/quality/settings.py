"""Data quality's operator settings: cleaning, tracking plans and the naming convention."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from ..core import Flag, Settings

PropertyCase = Literal["snake_case", "camelCase", "any"]


class QualityVariables(Settings):
    title: ClassVar[str] = "Data quality"

    cleaning: Flag = Field(True, description="Clean values and check Segment's reserved traits before sending.")
    tracking_plan_dir: str = Field(
        "", description="Directory of `<workspace>.json` tracking plans (Segment Protocols format)."
    )
    tracking_plan: str = Field("", description="One tracking plan file for workspaces without their own.")
    property_case: PropertyCase = Field(
        "snake_case", description="Naming convention `lint` expects of property keys: snake_case, camelCase or any."
    )

    @field_validator("property_case", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        """`SNAKE_CASE` or `camelcase` name a convention as well as its canonical spelling."""
        if isinstance(value, str):
            for style in ("snake_case", "camelCase", "any"):
                if value.strip().lower() == style.lower():
                    return style
        return value
