"""The checks of a compiled message, reduced to the values that change between conversations.

Privacy screening, cleaning and the tracking plan each walk the whole message, and for a
compiled message (message_plan.py) nearly all of it is the same on every call: the keys, the
static values, the event name. Each of those checks treats a scalar value on its own: whether
screening masks it, cleaning trims it or the plan's fast check accepts it depends on the value
and its place, and on nothing else in the message that changes (see `value_check` in
privacy/gate.py and quality/cleaning.py, and `value_checks` in quality/plans/enforcement.py).

So once a message built from a plan has passed all three untouched, with nothing to log,
under one privacy policy and one tracking plan, another message built from that plan passes
them untouched too whenever each of its slot values passes the tests of its place
(`LearnedChecks`). The executor then sends it without the walks, which cost it more than the
library's own `track()` (benchmarks/bench_execute.py, the heavy block). At the least doubt (a
test fails, the policy or plan file changed, consent adds to the message) the walks run, and
say what they found. tests/test_slot_checks.py compares both ways over generated messages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .message_plan import MessagePlan

__all__ = ["MESSAGE_ID_PATH", "TIMESTAMP_PATH", "LearnedChecks", "SlotPath", "learn", "learned_for"]

SlotPath = tuple[str, ...]
ValueTest = Callable[[Any], bool]
# Tests of the value at a path of the message; None when a check cannot promise to look at
# values one by one there.
PathTests = Callable[[SlotPath], "list[ValueTest] | None"]

MESSAGE_ID_PATH: Final = ("messageId",)
TIMESTAMP_PATH: Final = ("timestamp",)
MAX_LEARNED: Final = 64  # per compiled message: one per (privacy policy, tracking plan) version in use
# Answers remembered per learned message, shared out between its slots (at least MIN_KNOWN each),
# for texts of up to KNOWN_TEXT_CHARS: values come from user input, so memory is bounded per message.
KNOWN_VALUES: Final = 256
MIN_KNOWN: Final = 16
KNOWN_TEXT_CHARS: Final = 100


class LearnedChecks:
    """For one compiled message under one privacy policy and one tracking plan: a test per slot.

    `tests` is None when the checks cannot be reduced to the slots (a plan that needs
    jsonschema): every message then takes the walks, and no time is spent learning again.
    """

    __slots__ = ("plan", "policy", "tests")

    def __init__(self, policy: object, plan: object, tests: tuple[tuple[int, ValueTest], ...] | None) -> None:
        self.policy = policy
        self.plan = plan
        self.tests = tests

    def passes(self, slots: Sequence[Any]) -> bool:
        """True when a message whose slots hold `slots` would pass every check untouched."""
        tests = self.tests
        if tests is None:
            return False
        for index, test in tests:  # noqa: SIM110 - a loop: all(<generator>) costs more, on every event
            if not test(slots[index]):
                return False
        return True


def learned_for(message_plan: MessagePlan, policy: object, plan: object) -> LearnedChecks | None:
    """What was learned for this message under this policy and plan (compared by identity:
    the resolvers keep one object per version of a file)."""
    learned = message_plan.checks.get((id(policy), id(plan)))
    if learned is None or learned.policy is not policy or learned.plan is not plan:
        return None
    return learned


def learn(
    message_plan: MessagePlan,
    message: dict[str, Any],
    slots: Sequence[Any],
    policy: object,
    plan: object,
    path_tests: Sequence[PathTests],
) -> None:
    """Remember the slot tests for `message`, built from `message_plan` with `slots`, which every
    check passed untouched with nothing to say, under `policy` and `plan`.

    `path_tests` are the checks' own tests of a value at a path (privacy, then quality).
    """
    found_tests: list[tuple[int, list[ValueTest], bool | None]] = []
    for index, (paths, optional) in enumerate(zip(message_plan.slot_paths, message_plan.slot_optional, strict=True)):
        expected = slots[index]
        value_tests: list[ValueTest] = []
        if expected or not optional:  # a slot left out of the message is not looked at, but must stay out
            for path in paths:
                for tests_at in path_tests:
                    found = tests_at(path)
                    if found is None:
                        _remember(message_plan, LearnedChecks(policy, plan, None))
                        return
                    value_tests.extend(found)
        found_tests.append((index, value_tests, bool(expected) if optional else None))
    remembered = max(MIN_KNOWN, KNOWN_VALUES // max(1, sum(bool(found) for _, found, _ in found_tests)))
    tests = []
    for index, value_tests, present in found_tests:
        test = _slot_test(value_tests, present, remembered)
        if test is not None:
            tests.append((index, test))
    _remember(message_plan, LearnedChecks(policy, plan, tuple(tests)))


def _remember(message_plan: MessagePlan, learned: LearnedChecks) -> None:
    every = message_plan.checks
    if len(every) >= MAX_LEARNED:
        every.clear()
    every[(id(learned.policy), id(learned.plan))] = learned


def _slot_test(value_tests: list[ValueTest], present: bool | None, remembered: int) -> ValueTest | None:
    """One test for a slot: present (or left out) as it was, then every check's test, with up to
    `remembered` answers for short texts and integers kept (a slot's values repeat: a plan name, a
    city, a score). Per type, as 1, True and "1" are one dict key but not one JSON value; floats
    are not remembered (-0.0 and 0.0 are one key but two texts)."""
    if present is False:
        return lambda value: not value
    if not value_tests:
        return None if present is None else bool
    frozen = tuple(value_tests)
    texts: dict[Any, bool] = {}
    known: dict[type, dict[Any, bool]] = {str: texts, int: {}, bool: {}}
    needs_value = bool(present)

    def slot_test(value: Any) -> bool:
        answers = known.get(type(value))
        if answers is None or (answers is texts and len(value) > KNOWN_TEXT_CHARS):
            return (bool(value) or not needs_value) and _all(frozen, value)
        answer = answers.get(value)
        if answer is None:
            answer = (bool(value) or not needs_value) and _all(frozen, value)
            if len(answers) >= remembered:
                answers.clear()
            answers[value] = answer
        return answer

    return slot_test


def _all(tests: tuple[ValueTest, ...], value: Any) -> bool:
    for test in tests:  # noqa: SIM110 - a loop: all(<generator>) costs more, on every event
        if not test(value):
            return False
    return True
