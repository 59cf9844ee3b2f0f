"""The block's consent stage: render the Consent field, then let privacy's rules decide.

Rendering needs the block's plan and the template engine, which live at this layer; what
counts as consent, and how categories compare, is privacy's (`privacy.consent`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core import ResultLog
from ..privacy import ConsentDecision, category_names, evaluate_consent, parse_categories, read_consent
from ..templating import TemplateError
from .plan import BlockPlan


def consent_decision(plan: BlockPlan, variables: Mapping[str, Any], log: ResultLog) -> ConsentDecision | None:
    """None when the block asks nothing about consent; else whether to send, and what to stamp."""
    required = parse_categories(getattr(plan.options, "consentCategories", ""))
    if plan.consent is None:
        if not required:
            return None
        log.info(
            "Skipped: this block needs consent for "
            f"{category_names(required)}, but its Consent field is empty, so no consent was recorded.",
            field="consent",
            consent="missing",
        )
        return ConsentDecision(False, None)
    try:
        rendered = plan.consent.template.render(variables)
    except TemplateError as error:
        log.warning(
            f"Skipped: Consent could not be rendered ({error.message}), so no consent was recorded.",
            field="consent",
            consent="missing",
        )
        return ConsentDecision(False, None)
    state = read_consent(rendered.value)
    if state is None:
        why = (
            f"the variable(s) {', '.join(repr(name) for name in rendered.missing)} are not set"
            if rendered.missing
            else "it is empty or not a consent state"
        )
        log.info(f"Skipped: no consent was recorded for this conversation ({why}).", field="consent", consent="missing")
        return ConsentDecision(False, None)
    preferences, granted = evaluate_consent(state, required)
    if not granted:
        wanted = f"consent for {category_names(required)}" if required else "consent"
        log.info(
            f"Skipped: the end user has not given {wanted} ({plan.consent.source!r}).",
            field="consent",
            consent="denied",
        )
        return ConsentDecision(False, preferences)
    return ConsentDecision(True, preferences)
