"""Tracking plans: Segment Protocols plans, checked before an event is enqueued.

Segment's Protocols validates events after they reach Segment and reports violations there;
by then a bad event is in the workspace. A plan attached here is the same JSON (a JSON
Schema per track event, for identify traits, for group traits, and a common schema for every
call), checked in the bot, so the plan's mode can stop or trim an event before it is sent:

- `allow`: send it, and log each violation as a warning (Protocols' own default);
- `block`: do not send it; the block fails with the violations as errors;
- `omit`:  remove the properties (or traits) that are not in the plan or break it, send the
  rest; what cannot be removed (a missing required property) is logged and sent.

Unplanned track events (a name the plan does not list) follow the same modes (`omit` sends
the event without the properties the common schema does not declare); the plan may set a
different mode for them.
"""

from .compiled import CompiledPlan
from .enforcement import enforce, value_checks
from .errors import TrackingPlanError
from .lookup import PlanResolver
from .sentences import event_label
from .verdicts import PlanVerdict

__all__ = [
    "CompiledPlan",
    "PlanResolver",
    "PlanVerdict",
    "TrackingPlanError",
    "enforce",
    "event_label",
    "value_checks",
]
