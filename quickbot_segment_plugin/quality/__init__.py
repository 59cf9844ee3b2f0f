"""Data quality: cleaning values before they leave, tracking plans (formats, lookup, enforcement),
and naming-convention lint. The gate runs once per event, after privacy.
"""

from .gate import QualityGate, split_quality_counters
from .naming import lint, lint_across_blocks
from .plans import PlanResolver
from .settings import QualityVariables

__all__ = [
    "PlanResolver",
    "QualityGate",
    "QualityVariables",
    "lint",
    "lint_across_blocks",
    "split_quality_counters",
]
