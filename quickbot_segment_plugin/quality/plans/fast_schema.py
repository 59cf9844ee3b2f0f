"""Plain-Python checks for the JSON Schema subset tracking plans are written in.

jsonschema is the reference validator, and it is the one that explains a violation; but it
walks a schema generically, about 50 us for one event of a modest plan, which would double
the cost of `execute`. Plans made in Segment's editor use a small part of JSON Schema (type,
properties, required, enum, pattern, ranges, lengths, items, the date-time and email formats),
so each schema is also compiled into nested closures for that subset. The closure answers
"certainly valid" quickly; any other answer, and any schema using a keyword outside the
subset, goes to jsonschema. The closure is conservative by construction: when in doubt it
says "not certainly valid" (for example a float where an integer is expected, whose meaning
changed between drafts), which costs time, never a missed violation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final

__all__ = ["Check", "always", "compile_check", "compile_check_at"]

Check = Callable[[Any], bool]

KNOWN_TEXTS: Final = 256  # answers kept per property of a schema


class _Unsupported(Exception):
    """The schema uses something outside the subset: jsonschema alone validates it."""


def compile_check(schema: Any, known_keywords: Collection[str], format_checker: Any) -> Check | None:
    """A fast "certainly valid" check for `schema`, or None when it needs jsonschema.

    `known_keywords`: the keywords the schema's draft validates (`Validator.VALIDATORS`);
    others are ignored, as jsonschema ignores them. `format_checker`: the jsonschema
    `FormatChecker` the validator was given; its own `conforms` checks formats here too, and
    a format it has no check for is ignored, as jsonschema ignores it.
    """
    try:
        return _Compiler(frozenset(known_keywords), format_checker).node(schema)
    except _Unsupported:
        return None


def compile_check_at(
    schema: Any, path: tuple[str, ...], known_keywords: Collection[str], format_checker: Any
) -> Check | None:
    """The check `compile_check(schema)` applies to the value at `path` (a chain of object keys),
    or None when `schema` is outside the subset.

    Inside the subset an object's member is checked by its `properties` schema, else by
    `additionalProperties`, else not at all; every other keyword looks at the object itself
    (its type, its keys). So for messages that share their objects and keys, the whole check is
    those object-level answers and one of these per value (execution/slot_checks.py).
    """
    if compile_check(schema, known_keywords, format_checker) is None:
        return None
    node = schema
    for key in path:
        if node is True:
            return always
        if node is False:
            return _never
        members = node.get("properties") if "properties" in known_keywords else None
        if isinstance(members, Mapping) and key in members:
            node = members[key]
        elif "additionalProperties" in node and "additionalProperties" in known_keywords:
            node = node["additionalProperties"]
        else:
            return always
    return compile_check(node, known_keywords, format_checker)


class _Compiler:
    def __init__(self, known: frozenset[str], format_checker: Any) -> None:
        self.known = known
        self.format_checker = format_checker
        # The keywords compiled here; any other keyword the schema's draft validates sends it to jsonschema.
        self._builders: dict[str, Callable[[Any, Mapping[str, Any]], Check | None]] = {
            "type": self._type_,
            "properties": self._properties,
            "required": self._required,
            "additionalProperties": self._additional_properties,
            "enum": self._enum,
            "const": self._const,
            "pattern": self._pattern,
            "minimum": self._minimum,
            "maximum": self._maximum,
            "exclusiveMinimum": self._exclusive_minimum,
            "exclusiveMaximum": self._exclusive_maximum,
            "minLength": self._min_length,
            "maxLength": self._max_length,
            "items": self._items,
            "minItems": self._min_items,
            "maxItems": self._max_items,
            "format": self._format,
        }

    def node(self, schema: Any) -> Check:
        if schema is True:
            return always
        if schema is False:
            return _never
        if not isinstance(schema, Mapping):
            raise _Unsupported
        builders = self._builders
        used = [keyword for keyword in schema if keyword in self.known or keyword in builders]
        if any(keyword in self.known and keyword not in builders for keyword in used):
            raise _Unsupported
        checks: list[Check] = []
        for keyword in used:
            if keyword not in self.known:
                continue  # not a keyword of this draft (const in draft-04): jsonschema ignores it
            check = builders[keyword](schema[keyword], schema)
            if check is not None:
                checks.append(check)
        if not checks:
            return always
        if len(checks) == 1:
            return checks[0]
        frozen = tuple(checks)

        def all_of(instance: Any) -> bool:
            for check in frozen:  # noqa: SIM110 - a loop: all(<generator>) costs more, on every event
                if not check(instance):
                    return False
            return True

        return all_of

    # Each builder returns a check, None when the keyword needs no check here, or raises _Unsupported.

    def _type_(self, value: Any, schema: Mapping[str, Any]) -> Check:
        names = value if isinstance(value, list) else [value]
        tests = []
        for name in names:
            test = _TYPE_TESTS.get(name) if isinstance(name, str) else None
            if test is None:
                raise _Unsupported
            tests.append(test)
        if len(tests) == 1:
            return tests[0]
        frozen = tuple(tests)
        return lambda instance: any(test(instance) for test in frozen)

    def _properties(self, value: Any, schema: Mapping[str, Any]) -> Check:
        if not isinstance(value, Mapping):
            raise _Unsupported
        # Per member, the answers for text values already checked: a block's static values (and a
        # property's few enum values) come back on every event, and a date-time or pattern check
        # cost more than the look-up (bench_execute.py, the heavy block). Text only: 1, 1.0 and
        # True are one dict key but not one JSON value. Bounded: dynamic values clear it when full.
        members: tuple[tuple[Any, Check, dict[str, bool]], ...] = tuple(
            (key, self.node(sub), {}) for key, sub in value.items()
        )

        def properties(instance: Any) -> bool:
            if not isinstance(instance, dict):
                return True
            for key, sub, known in members:
                if key not in instance:
                    continue
                item = instance[key]
                if type(item) is not str:
                    if not sub(item):
                        return False
                    continue
                valid = known.get(item)
                if valid is None:
                    valid = sub(item)
                    if len(known) >= KNOWN_TEXTS:
                        known.clear()
                    known[item] = valid
                if not valid:
                    return False
            return True

        return properties

    def _required(self, value: Any, schema: Mapping[str, Any]) -> Check:
        if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
            raise _Unsupported
        names = tuple(value)

        def required(instance: Any) -> bool:
            if not isinstance(instance, dict):
                return True
            for name in names:  # noqa: SIM110 - as above
                if name not in instance:
                    return False
            return True

        return required

    def _additional_properties(self, value: Any, schema: Mapping[str, Any]) -> Check:
        if "patternProperties" in schema:
            raise _Unsupported
        declared = frozenset(schema.get("properties") or ())
        extra = self.node(value)
        return lambda instance: (
            not isinstance(instance, dict) or all(extra(item) for key, item in instance.items() if key not in declared)
        )

    def _enum(self, value: Any, schema: Mapping[str, Any]) -> Check:
        if not isinstance(value, list) or not all(_is_scalar(choice) for choice in value):
            raise _Unsupported  # containers compare by JSON rules: jsonschema's job
        choices = tuple(value)
        return lambda instance: any(_same(instance, choice) for choice in choices)

    def _const(self, value: Any, schema: Mapping[str, Any]) -> Check:
        if not _is_scalar(value):
            raise _Unsupported
        return lambda instance: _same(instance, value)

    def _pattern(self, value: Any, schema: Mapping[str, Any]) -> Check:
        try:
            compiled = re.compile(value)
        except (re.error, TypeError):
            raise _Unsupported from None
        return lambda instance: not isinstance(instance, str) or compiled.search(instance) is not None

    def _minimum(self, value: Any, schema: Mapping[str, Any]) -> Check:
        bound = _number(value)
        if isinstance(schema.get("exclusiveMinimum"), bool):
            raise _Unsupported  # draft-04's boolean modifier
        return lambda instance: not _is_number(instance) or instance >= bound

    def _maximum(self, value: Any, schema: Mapping[str, Any]) -> Check:
        bound = _number(value)
        if isinstance(schema.get("exclusiveMaximum"), bool):
            raise _Unsupported
        return lambda instance: not _is_number(instance) or instance <= bound

    def _exclusive_minimum(self, value: Any, schema: Mapping[str, Any]) -> Check:
        bound = _number(value)
        return lambda instance: not _is_number(instance) or instance > bound

    def _exclusive_maximum(self, value: Any, schema: Mapping[str, Any]) -> Check:
        bound = _number(value)
        return lambda instance: not _is_number(instance) or instance < bound

    def _min_length(self, value: Any, schema: Mapping[str, Any]) -> Check:
        bound = _count(value)
        return lambda instance: not isinstance(instance, str) or len(instance) >= bound

    def _max_length(self, value: Any, schema: Mapping[str, Any]) -> Check:
        bound = _count(value)
        return lambda instance: not isinstance(instance, str) or len(instance) <= bound

    def _items(self, value: Any, schema: Mapping[str, Any]) -> Check:
        if not isinstance(value, (Mapping, bool)):
            raise _Unsupported  # the tuple form
        each = self.node(value)
        return lambda instance: not isinstance(instance, list) or all(each(item) for item in instance)

    def _min_items(self, value: Any, schema: Mapping[str, Any]) -> Check:
        bound = _count(value)
        return lambda instance: not isinstance(instance, list) or len(instance) >= bound

    def _max_items(self, value: Any, schema: Mapping[str, Any]) -> Check:
        bound = _count(value)
        return lambda instance: not isinstance(instance, list) or len(instance) <= bound

    def _format(self, value: Any, schema: Mapping[str, Any]) -> Check | None:
        if not isinstance(value, str):
            raise _Unsupported
        if value not in self.format_checker.checkers:
            return None  # a format jsonschema has no check for is not asserted
        conforms = self.format_checker.conforms
        return lambda instance: bool(conforms(instance, value))


def always(instance: Any) -> bool:
    return True


def _never(instance: Any) -> bool:
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int, float))


def _same(instance: Any, choice: Any) -> bool:
    """JSON equality for scalars: true is not 1, and 1 equals 1.0."""
    if isinstance(instance, bool) or isinstance(choice, bool):
        return isinstance(instance, bool) and isinstance(choice, bool) and instance is choice
    if _is_number(instance) and _is_number(choice):
        return bool(instance == choice)
    return type(instance) is type(choice) and instance == choice


def _number(value: Any) -> int | float:
    if not _is_number(value):
        raise _Unsupported
    number: int | float = value
    return number


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Unsupported
    return value


_TYPE_TESTS: Final[dict[str, Check]] = {
    "string": lambda value: isinstance(value, str),
    "number": _is_number,
    # A float with no fraction is an integer in draft-06 and later but not in draft-04: never
    # "certainly valid" here, so jsonschema decides by the plan's own draft.
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
}
