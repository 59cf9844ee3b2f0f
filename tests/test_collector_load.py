"""Four busy clients at once: every event stored, none twice unless it was sent twice."""

from __future__ import annotations

import atexit
import threading
from collections import Counter

from segment.analytics import Client

from quickbot_segment_plugin.collector.service import Collector

CLIENTS = 4
EVENTS_PER_CLIENT = 5_000
RESENT = 25  # client 0 sends its first 25 messages a second time, as a host retry would


def test_twenty_thousand_events_from_four_concurrent_clients() -> None:
    failures: list[Exception] = []
    with Collector() as collector:
        clients = [
            Client(
                f"wk_load_{number}_Xa91",
                host=collector.url,
                upload_size=500,
                upload_interval=0.05,
                max_queue_size=EVENTS_PER_CLIENT + RESENT,
                max_retries=3,
                timeout=10,
                on_error=lambda error, batch: failures.append(error),
            )
            for number in range(CLIENTS)
        ]
        start = threading.Barrier(CLIENTS)

        def send(number: int) -> None:
            client = clients[number]
            start.wait()
            for i in range(EVENTS_PER_CLIENT):
                ok, _ = client.track(f"user-{i % 50}", "Load", {"client": number, "i": i}, message_id=f"c{number}-{i}")
                assert ok
            if number == 0:
                for i in range(RESENT):
                    client.track(f"user-{i % 50}", "Load", {"client": 0, "i": i}, message_id=f"c0-{i}")
            client.flush()

        threads = [threading.Thread(target=send, args=(number,)) for number in range(CLIENTS)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
        finally:
            for client in clients:
                client.shutdown()
                atexit.unregister(client.join)

        total = CLIENTS * EVENTS_PER_CLIENT
        assert collector.wait_for(total + RESENT, timeout=10)
        assert failures == []
        assert collector.count() == total + RESENT
        assert collector.count(distinct=True) == total
        ids = Counter(message["messageId"] for message in collector.messages())
        expected = {f"c{number}-{i}" for number in range(CLIENTS) for i in range(EVENTS_PER_CLIENT)}
        assert set(ids) == expected
        assert {message_id for message_id, seen in ids.items() if seen > 1} == {f"c0-{i}" for i in range(RESENT)}
        for i in range(RESENT):  # the later copy is the one flagged
            assert [row["duplicate"] for row in collector.events(message_id=f"c0-{i}")] == [True, False]
        assert collector.requests_received < total / 100  # batches, not one request an event
