"""Privacy: per-workspace policies (deny, mask, hash), the PII detectors they use, and end-user
consent. The gate screens every event before quality checks or delivery see it.
"""

from .consent import MAX_CATEGORIES, ConsentDecision, category_names, evaluate_consent, parse_categories, read_consent
from .detectors import DETECTORS
from .gate import HASH_KEY_ENV, PrivacyGate
from .policy import PolicyResolver, PrivacyPolicy, PrivacyPolicyError, load_policy
from .settings import PrivacyVariables

__all__ = [
    "DETECTORS",
    "HASH_KEY_ENV",
    "MAX_CATEGORIES",
    "ConsentDecision",
    "PolicyResolver",
    "PrivacyGate",
    "PrivacyPolicy",
    "PrivacyPolicyError",
    "PrivacyVariables",
    "category_names",
    "evaluate_consent",
    "load_policy",
    "parse_categories",
    "read_consent",
]
