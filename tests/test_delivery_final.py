"""A message already in the library's final form is queued as it is (delivery_final.py).

The promise is that skipping `Client.track()` changes nothing: for every message the fast
path takes, the event queued is the one the library would have queued, and every message it
cannot prove final goes through the library. Both are checked against the real library
(a `send=False` client builds its final message without queueing), and end to end through
the pool to the collector.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_delivery_calls import OFFLINE, wire_messages

from quickbot_segment_plugin.collector.service import Collector
from quickbot_segment_plugin.core.message import library_context
from quickbot_segment_plugin.delivery.calls import LibraryCall, to_library_call, without_nulls
from quickbot_segment_plugin.delivery.final import (
    FinalMessage,
    final_message,
    library_size_bound,
    submission_for,
    vouched_message,
)
from quickbot_segment_plugin.delivery.pool import DeliveryError, DeliveryPool, DeliverySettings

pytestmark = pytest.mark.integration

WRITE_KEY = "finalFormWriteKey0123456789"
FAST = DeliverySettings().with_overrides(flush_interval=0.05, timeout=30.0, max_retries=2, close_timeout=30.0)


def as_final(message: dict[str, Any]) -> dict[str, Any]:
    """A generated wire message with the one thing the block adds that generators leave out."""
    return {**message, "context": {**message["context"], "library": library_context()}}


def library_queued(message: dict[str, Any]) -> dict[str, Any]:
    """What `Client._enqueue` would put on the queue, as the consumer would send it."""
    queued, built = to_library_call(message).apply(OFFLINE)
    assert queued
    return json.loads(json.dumps(without_nulls(built)))


def track(**fields: Any) -> dict[str, Any]:
    return as_final(
        {
            "type": "track",
            "messageId": str(uuid.uuid4()),
            "timestamp": "2024-05-01T12:34:56.789+02:00",
            "userId": "user-1",
            "event": "Order Completed",
            "properties": {"revenue": 12.5, "items": [{"sku": "a"}]},
            "context": {"quickbot": {"botId": "bot-1"}},
            "integrations": {"All": True},
            **fields,
        }
    )


@settings(max_examples=300, deadline=None)
@given(wire_messages())
def test_a_final_message_is_queued_exactly_as_the_library_would_queue_it(generated: dict[str, Any]) -> None:
    message = as_final(generated)
    final = final_message(message)
    assert final is not None, "every message in the library's final form takes the fast path"
    assert final.message == library_queued(message)
    assert final.size == len(json.dumps(message))


@settings(max_examples=100, deadline=None)
@given(wire_messages())
def test_the_queued_copy_shares_nothing_with_the_callers_message(generated: dict[str, Any]) -> None:
    message = as_final(generated)
    final = final_message(message)
    assert final is not None
    before = json.loads(json.dumps(final.message))
    message["context"]["library"]["name"] = "changed"
    message["context"]["added"] = 1
    message["integrations"]["Added"] = False
    assert final.message == before


def test_a_host_variable_that_changes_after_execute_does_not_change_the_queued_event() -> None:
    """A list variable rendered as a single expression is the host's own object."""
    cart = ["a", "b"]
    final = final_message(track(properties={"cart": cart}))
    assert final is not None
    cart.append("added later in the conversation")
    assert final.message["properties"]["cart"] == ["a", "b"]


@pytest.mark.parametrize(
    ("why", "changes"),
    [
        ("an int id the library stringifies", {"userId": 42}),
        ("an empty id the library decides on", {"userId": "", "anonymousId": None}),
        ("no id at all", {"userId": None}),
        ("a timestamp without milliseconds", {"timestamp": "2024-05-01T12:34:56+02:00"}),
        ("a timestamp with Z", {"timestamp": "2024-05-01T12:34:56.789Z"}),
        ("a timestamp without offset", {"timestamp": "2024-05-01T12:34:56.789"}),
        ("a datetime timestamp", {"timestamp": datetime(2024, 5, 1, tzinfo=UTC)}),
        ("no messageId", {"messageId": None}),
        ("a Decimal the library makes a float", {"properties": {"price": Decimal("9.99")}}),
        ("a date the library formats", {"properties": {"day": date(2024, 5, 1)}}),
        ("a set the library makes a list", {"properties": {"tags": {"a"}}}),
        ("an object the library drops", {"properties": {"who": object()}}),
        ("no integrations", {"integrations": None}),
        ("an empty event", {"event": ""}),
    ],
)
def test_a_message_not_provably_final_goes_through_the_library(why: str, changes: dict[str, Any]) -> None:
    message = {**track(), **changes}
    message = {name: value for name, value in message.items() if value is not None}
    assert final_message(message) is None, why
    assert isinstance(submission_for(message), LibraryCall)


def test_a_context_without_the_library_stamp_or_with_another_goes_through_the_library() -> None:
    unstamped = track()
    del unstamped["context"]["library"]
    assert final_message(unstamped) is None
    other = track()
    other["context"]["library"] = {"name": "analytics-node", "version": "3.1.0"}
    assert final_message(other) is None


def test_fields_a_call_cannot_carry_are_refused_by_the_library_path_not_dropped() -> None:
    message = track(traits={"a": 1})
    assert final_message(message) is None
    with pytest.raises(DeliveryError) as raised:
        submission_for(message)
    assert raised.value.field == "traits"


def test_an_oversized_final_message_is_refused_naming_the_field() -> None:
    message = track(properties={"blob": "x" * 40_000})
    with pytest.raises(DeliveryError) as raised:
        submission_for(message)
    assert raised.value.field == "properties"
    assert "32 KB" in str(raised.value)
    with pytest.raises(DeliveryError) as library_raised:
        to_library_call(message).apply(OFFLINE)
    assert str(library_raised.value).split(" (")[0] == str(raised.value).split(" (")[0]


def test_a_message_just_under_the_limit_is_accepted_by_both_paths() -> None:
    message = track(properties={"blob": ""})
    padding = 32 * 1024 - len(json.dumps(message)) - 64  # the library's nulls fit in the margin
    message["properties"]["blob"] = "x" * padding
    final = final_message(message)
    assert final is not None and final.size <= 32 * 1024
    assert final.message == library_queued(message)


def final(**fields: Any) -> dict[str, Any]:
    """A message of any type in final form: the common fields plus `fields`."""
    return as_final(
        {
            "messageId": str(uuid.uuid4()),
            "timestamp": "2024-05-01T12:34:56.789+05:30",
            "context": {"quickbot": {"botId": "bot-1", "sessionId": "s-1"}},
            "integrations": {"All": True, "Mixpanel": False},
            **fields,
        }
    )


ALL_TYPES = [
    final(type="identify", userId="u-1", traits={"email": "ada@example.com", "age": 36}),
    final(type="track", anonymousId="anon-1", event="Order Completed", properties={"revenue": 12.5}),
    final(type="page", userId="u-1", name="Pricing", category="Docs", properties={"category": "Docs"}),
    final(type="screen", anonymousId="anon-2", name="Home", properties={"tab": 2}),
    final(type="group", userId="u-1", groupId="g-9", traits={"name": "ACME"}),
    final(type="alias", previousId="anon-1", userId="u-1"),
]
# What the collector adds around what the client sent, as Segment does.
COLLECTOR_FIELDS = ("receivedAt", "sentAt", "timestamp")


def test_every_call_type_takes_the_fast_path_and_arrives_as_given() -> None:
    with Collector() as collector:
        pool = DeliveryPool(FAST)
        for message in ALL_TYPES:
            assert isinstance(submission_for(message), FinalMessage), message["type"]
            assert pool.enqueue("ws-final", WRITE_KEY, collector.url, message).accepted
        assert pool.shutdown(10).drained
        received = {event["messageId"]: event for event in collector.messages()}
    assert received.keys() == {message["messageId"] for message in ALL_TYPES}
    for message in ALL_TYPES:
        got = {name: value for name, value in received[message["messageId"]].items() if name not in COLLECTOR_FIELDS}
        assert got.pop("originalTimestamp") == message["timestamp"]
        assert got == {name: value for name, value in message.items() if name != "timestamp"}


@settings(max_examples=25, deadline=None)
@given(st.lists(wire_messages(), min_size=1, max_size=5))
def test_through_the_pool_both_paths_deliver_the_same_events(generated: list[dict[str, Any]]) -> None:
    """The same messages, once final (fast path) and once without the stamp (library path)."""
    pairs = []
    with Collector() as collector:
        pool = DeliveryPool(FAST)
        for message in generated:
            fast = {**as_final(message), "messageId": f"fast-{uuid.uuid4()}"}
            plain = {**message, "messageId": f"library-{uuid.uuid4()}"}
            assert isinstance(submission_for(fast), FinalMessage)
            assert isinstance(submission_for(plain), LibraryCall)
            assert pool.enqueue("ws-both", WRITE_KEY, collector.url, fast).accepted
            assert pool.enqueue("ws-both", WRITE_KEY, collector.url, plain).accepted
            pairs.append((fast["messageId"], plain["messageId"]))
        assert pool.shutdown(10).drained
        received = {event["messageId"]: event for event in collector.messages()}
    for fast_id, library_id in pairs:
        fast_event, library_event = (
            {name: value for name, value in received[key].items() if name not in (*COLLECTOR_FIELDS, "messageId")}
            for key in (fast_id, library_id)
        )
        assert fast_event == library_event


# --- the block's own messages: vouched for, serialised with orjson ------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
    | st.sampled_from(["é€😀", '\x7f\x00\n\t"\\/', "1e-07", ":,:,", "eeee"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_the_size_bound_is_never_below_the_librarys_measure(value: Any) -> None:
    exact = len(json.dumps(value))
    bound = library_size_bound(orjson.dumps(value))
    assert exact <= bound <= 5 * exact + 2


@settings(max_examples=300, deadline=None)
@given(wire_messages(), st.dictionaries(st.text(max_size=6), json_values, max_size=4))
def test_a_vouched_message_queues_what_the_library_path_queues(generated: dict[str, Any], extra: Any) -> None:
    message = as_final(generated)
    if message["type"] in ("track", "page", "screen"):
        message["properties"] = {**message["properties"], "extra": extra}
    vouched = vouched_message(message)
    proved = final_message(message)
    assert proved is not None
    assert vouched.message == proved.message == library_queued(message)
    assert vouched.size >= proved.size == len(json.dumps(message))
    assert vouched.message is not message and json.loads(vouched.text) == vouched.message


def test_a_vouched_message_over_64_bit_integers_is_measured_by_the_standard_library() -> None:
    message = track(properties={"big": 2**70})
    vouched = vouched_message(message)
    assert vouched.message["properties"]["big"] == 2**70
    assert vouched.size == len(json.dumps(message)) and vouched.text == json.dumps(message)


def test_a_vouched_message_near_the_limit_is_judged_by_the_exact_measure() -> None:
    """The bound counts every `e`; a message it overestimates past 32 KB is still accepted."""
    message = track(properties={"blob": ""})
    message["properties"]["blob"] = "e" * (32 * 1024 - len(json.dumps(message)) - 64)
    assert library_size_bound(orjson.dumps(message)) > 32 * 1024
    vouched = vouched_message(message)
    assert vouched.size == len(json.dumps(message)) <= 32 * 1024
    message["properties"]["blob"] += "e" * 100
    with pytest.raises(DeliveryError) as raised:
        vouched_message(message)
    assert raised.value.field == "properties"
