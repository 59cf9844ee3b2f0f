"""One run of the block for one conversation: options -> plan -> message -> delivery pool.

`execute` is on the conversation's critical path, so it does no network I/O and repeats no
work that depends only on the options or the credentials: plans and opened credentials are
cached, and the message goes to a background client. It never raises for anything a user
can cause; the reason goes into the result's logs instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from contextvars import Token
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from ..core import (
    EXECUTED,
    FAILED,
    QUEUED,
    DeliveryError,
    LruCache,
    PluginError,
    ResultLog,
    build_message,
    check_size,
    endpoint_for,
    message_id_for,
)
from ..credentials import CredentialsError, KeyRing
from ..privacy import PrivacyGate
from ..quality import QualityGate
from ..templating import TemplateEngine, close_execution_budget, open_execution_budget
from .consent import consent_decision
from .message_plan import MessagePlan, compile_message
from .plan import BlockPlan, RenderFailure, compile_plan, condition_allows, render_parts
from .ports import DeadLetterSink, EventSink
from .slot_checks import PathTests, learn, learned_for
from .validation import check_options

if TYPE_CHECKING:
    from ..core import Counters
    from ..privacy import ConsentDecision, PrivacyPolicy
    from ..quality.plans import CompiledPlan

logger = logging.getLogger("quickbot_segment_plugin.execution")

# What one execution adds to the counters, by the status of its result.
_COUNTED: dict[str, tuple[str, ...]] = {"queued": (EXECUTED, QUEUED), "failed": (EXECUTED, FAILED)}

PLAN_CACHE_SIZE = 4096
# Options compared by their JSON must be plain JSON: a datetime, a dataclass or a subclass of a
# JSON type raises (and the repr decides) rather than being written like a plain value.
_EXACT_JSON = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
RECENT_EXECUTIONS = 100_000


class Executor:
    """Runs blocks; shared by every conversation, so all of its state is thread-safe."""

    def __init__(
        self,
        engine: TemplateEngine,
        keyring: Callable[[], KeyRing],
        pool: Callable[[], EventSink],
        dead_letters: Callable[[], DeadLetterSink],
        counters: Counters,
    ) -> None:
        self.engine = engine
        self._keyring = keyring
        self._pool = pool
        self._dead_letters = dead_letters
        self.counters = counters
        self._plans: LruCache[str, BlockPlan] = LruCache(PLAN_CACHE_SIZE)
        self._recent: LruCache[tuple[str, str], bool] = LruCache(RECENT_EXECUTIONS)
        self._endpoints: dict[str, str] = {}
        self._last_options: object = None  # compared by identity only
        self._same_options: tuple[object, bytes, BlockPlan] | None = None
        self.quality = QualityGate(counters)  # cleaning + tracking plans (quality.py)
        self.privacy = PrivacyGate()  # denylist, detectors, consent, hashing (privacy.py)

    def execute(self, options: Any, context: Any) -> dict[str, Any]:
        workspace_id, variables = _host_inputs(context)
        log = ResultLog()
        budget: list[Token[Any]] = []  # the renders' shared budget, opened by the first render that may need it
        try:
            result = self._execute(options, context, workspace_id, variables, log, budget)
        except RenderFailure:
            result = log.result("failed")
        except PluginError as error:
            log.error(str(error), field=error.field)
            result = log.result("failed")
        except Exception as error:  # a bug of ours must not take the conversation down
            logger.exception("unexpected error in the Segment block", extra={"workspace": workspace_id})
            log.error(
                f"The Segment block failed unexpectedly ({type(error).__name__}); the server log has details.",
            )
            result = log.result("failed")
        finally:
            if budget:
                close_execution_budget(budget[0])
        self.counters.inc_each(workspace_id, _COUNTED.get(result["status"], (EXECUTED,)))
        return result

    def _execute(
        self,
        options: Any,
        context: Mapping[str, Any],
        workspace_id: str,
        variables: Mapping[str, Any],
        log: ResultLog,
        budget: list[Token[Any]],
    ) -> dict[str, Any]:
        plan = self._plan(options, log)
        if plan is None:
            return log.result("failed")
        if plan.legacy:
            log.info("These options were saved by the older Segment block and were upgraded on the fly.")
        if plan.condition is not None or plan.consent is not None:
            budget.append(open_execution_budget(self.engine.limits))
        if not condition_allows(plan, variables, log):
            return log.result("skipped")
        consent = consent_decision(plan, variables, log)
        if consent is not None and not consent.allowed:
            return log.result("skipped")
        execution_id = context.get("execution_id")
        execution_id = str(execution_id) if execution_id not in (None, "") else None
        message_id = message_id_for(workspace_id, execution_id)
        # The compiled message when it applies (nothing to log, no sandbox); the general path otherwise.
        slots: list[Any] = []
        built = plan.message.build(variables, message_id, context, slots) if plan.message is not None else None
        if built is None:
            if not budget:
                budget.append(open_execution_budget(self.engine.limits))
            payload = build_message(render_parts(plan, variables, message_id, log), context)
        else:
            payload = built
        # Privacy first: a refused or masked value never reaches cleaning, plan logs or dead letters.
        # One policy lookup for screening and hashing: each looks at the file, and both must use one version.
        policy = None
        if self.privacy.enabled:
            policy = self.privacy.policy_for(workspace_id, log)
            if policy is None:
                return log.result("failed")
        learnable = built is not None and (consent is None or not consent.preferences)
        tracking_plan = None
        if learnable:
            resolution = self.quality.plan_resolution(workspace_id)
            learnable = resolution.error is None and resolution.warning is None
            tracking_plan = resolution.plan
        message_plan = plan.message if learnable else None
        learned = learned_for(message_plan, policy, tracking_plan) if message_plan is not None else None
        # The checks' walks, unless this message's slots pass what they were reduced to (slot_checks.py).
        if learned is None or not learned.passes(slots):
            logged = len(log.entries)
            checked = self._checked(payload, workspace_id, log, context, plan, consent, policy)
            if checked is None:
                return log.result("failed")
            payload = checked
            if message_plan is not None and learned is None and payload is built and len(log.entries) == logged:
                self._learn(message_plan, payload, slots, policy, tracking_plan)
        if context.get("dry_run"):
            check_size(payload)  # on the live path the library measures it; a dry run has no library
            log.info("Dry run: the message was built and checked, and not sent.")
            return log.result("dry_run", message_id=message_id, payload=payload)
        token = context.get("credentials")
        if not isinstance(token, str) or not token.strip():
            log.error(
                "No Segment credentials: add your Segment Write Key to this block's credentials.",
                field="credentials",
            )
            return log.result("failed")
        try:
            credentials = self._keyring().open(token, workspace_id)
        except CredentialsError as error:
            log.error(f"The Segment credentials could not be used: {error}", field="credentials")
            return log.result("failed")
        endpoint = self._endpoint_for(credentials.region)
        duplicate_key = (workspace_id, message_id) if execution_id is not None else None
        if duplicate_key is not None and not self._recent.add_if_absent(duplicate_key, True):
            self.counters.duplicates_skipped(workspace_id)
            log.warning(
                "This execution was already queued; it was not sent again.",
                execution_id=execution_id,
                duplicate=True,
            )
            # Still "queued": the first execution's event is the one on its way.
            return log.result("queued", message_id=message_id, payload=payload)
        accepted = False
        try:
            write_key = credentials.write_key
            pool = self._pool()  # before the token is remembered: the pool creates the recorder
            self._dead_letters().remember_token(workspace_id, write_key.fingerprint, token)
            # The compiled message, untouched by the checks, is in the library's final form by
            # construction (tests/test_message_plan.py): the pool need not prove it again.
            outcome = pool.enqueue(
                workspace_id, write_key.reveal(), endpoint, payload, token=token, final_form=payload is built
            )
            accepted = outcome.accepted
        except DeliveryError:
            check_size(payload)  # when size was the reason, say which fields made it too big
            raise
        finally:
            if duplicate_key is not None and not accepted:
                self._recent.discard(duplicate_key)  # nothing is on its way: the host's retry must be sent
        if not accepted:
            log.error(
                f"The event could not be queued for delivery ({outcome.reason}); it was kept in the "
                "dead-letter store for replay.",
                reason=outcome.reason,
            )
            return log.result("failed", message_id=message_id, payload=payload)
        return log.result("queued", message_id=message_id, payload=payload)

    def _checked(
        self,
        payload: dict[str, Any],
        workspace_id: str,
        log: ResultLog,
        context: Mapping[str, Any],
        plan: BlockPlan,
        consent: ConsentDecision | None,
        policy: PrivacyPolicy | None,
    ) -> dict[str, Any] | None:
        """The message after privacy screening, cleaning, the tracking plan and hashing, in that
        order; None when one of them refused it (the reason is in `log`)."""
        screened = self.privacy.screen(payload, workspace_id, log, consent, policy=policy)
        if screened is None:
            return None
        checked = self.quality.check(
            screened, workspace_id, log, dry_run=bool(context.get("dry_run")), items=plan.items
        )
        if checked is None:
            return None
        # Hashing last: the plan and cleaning check the readable value; the hash is of the cleaned one.
        return self.privacy.hash(checked, workspace_id, log, policy=policy)

    def _learn(
        self,
        message_plan: MessagePlan,
        message: dict[str, Any],
        slots: list[Any],
        policy: PrivacyPolicy | None,
        tracking_plan: CompiledPlan | None,
    ) -> None:
        """Reduce the checks to the slots of `message`, which passed them untouched (slot_checks.py)."""
        path_tests: list[PathTests] = []
        if policy is not None:
            path_tests.append(partial(self.privacy.value_checks, policy, str(message["type"])))
        path_tests.append(partial(self.quality.value_checks, tracking_plan, message))
        learn(message_plan, message, slots, policy, tracking_plan, path_tests)

    def _endpoint_for(self, region: str) -> str:
        """`endpoint_for`, read once per region: the operator's override is set before start-up."""
        endpoint = self._endpoints.get(region)
        if endpoint is None:
            endpoint = self._endpoints[region] = endpoint_for(region)  # ConfigurationError is not cached
        return endpoint

    def _plan(self, options: Any, log: ResultLog) -> BlockPlan | None:
        # A host that keeps its flows in memory passes the same options object every time: once
        # it has been seen twice in a row, its plan is found by identity, while its JSON is still
        # the same bytes (exact: true, 1, 1.0 and "1" differ). orjson writes them in a sixth of
        # the repr's time (1.6 against 9 µs for bench_execute.py's heavy block).
        remembered = self._same_options
        if remembered is not None and options is remembered[0]:
            with contextlib.suppress(TypeError):
                if orjson.dumps(options, option=_EXACT_JSON) == remembered[1]:
                    return remembered[2]
        # repr, not a JSON dump: half the cost, and it tells 1 from "1" from True just as well.
        # Equal options with keys in another order get their own entry, which is harmless.
        cache_key = repr(options) if isinstance(options, dict) else None
        plan: BlockPlan | None = self._plans.get(cache_key) if cache_key is not None else None
        if plan is None:
            plan = self._compile(options, log)
            if plan is None:
                return None
            if cache_key is not None:
                self._plans.put(cache_key, plan)
        if options is self._last_options and cache_key is not None:
            with contextlib.suppress(TypeError):  # not plain JSON: found by its repr every time
                self._same_options = (options, orjson.dumps(options, option=_EXACT_JSON), plan)
        self._last_options = options
        return plan

    def _compile(self, options: Any, log: ResultLog) -> BlockPlan | None:
        checked = check_options(options, self.engine)
        if checked.options is None:
            for problem in checked.problems:
                log.error(problem.message, field=problem.path)
            return None
        legacy = bool(checked.upgraded and checked.upgraded.legacy)
        plan = compile_plan(checked.options, self.engine, legacy=legacy)
        return replace(plan, message=compile_message(plan))


def _host_inputs(context: Any) -> tuple[str, Mapping[str, Any]]:
    """The two things a host must always give; their absence is a host bug, so it raises."""
    # `type(...) is dict` first: the Mapping ABC check costs more than the rest of this function.
    if type(context) is not dict and not isinstance(context, Mapping):
        raise TypeError(f"execute() needs context to be a dict, got {type(context).__name__}")
    workspace_id = context.get("workspace_id")
    if not isinstance(workspace_id, str) or not workspace_id:
        raise ValueError("execute() needs context['workspace_id'], a non-empty string (host contract)")
    variables = context.get("variables") or {}
    if type(variables) is not dict and not isinstance(variables, Mapping):
        raise TypeError(f"execute() needs context['variables'] to be a dict, got {type(variables).__name__}")
    return workspace_id, variables
