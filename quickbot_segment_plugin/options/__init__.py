"""The saved options of the block: the pydantic models the form schema is generated from,
the upgrade of older saved shapes, and the conversion of item values to their declared types.
"""

from .legacy import UpgradedOptions, upgrade
from .models import (
    ACTION_TITLES,
    IDENTITY_ACTIONS,
    IDENTITY_FIELDS,
    ITEM_LIST_FIELDS,
    ITEM_NOUNS,
    MODELS_BY_ACTION,
    NOT_BLANK,
    OPTIONS_ADAPTER,
    OPTIONS_VERSION,
    REQUIRED_FIELDS,
    ActionOptions,
    ValueType,
    field_title,
    templated_fields,
)
from .values import ConversionError, convert, parse_datetime, to_number, to_text

__all__ = [
    "ACTION_TITLES",
    "IDENTITY_ACTIONS",
    "IDENTITY_FIELDS",
    "ITEM_LIST_FIELDS",
    "ITEM_NOUNS",
    "MODELS_BY_ACTION",
    "NOT_BLANK",
    "OPTIONS_ADAPTER",
    "OPTIONS_VERSION",
    "REQUIRED_FIELDS",
    "ActionOptions",
    "ConversionError",
    "UpgradedOptions",
    "ValueType",
    "convert",
    "field_title",
    "parse_datetime",
    "templated_fields",
    "to_number",
    "to_text",
    "upgrade",
]
