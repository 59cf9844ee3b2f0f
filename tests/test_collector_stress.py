"""Clients that hold connections do not slow anyone else down.

64 idle connections (half never sent anything, half kept alive after a request) and 16
slowloris clients (one header line a second, never finishing) stay open while 500 requests
from ordinary clients are answered, each within 2 s. Before the collector had a total head
deadline and closed idle connections at its cap, 32 idle connections were enough to make
every other client wait 2 s and get 503.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import socket
import threading
import time
from collections import Counter

import pytest
import requests

from quickbot_segment_plugin.collector.service import Collector

pytestmark = pytest.mark.slow

WRITE_KEY = "wk_test_stress_T5k2"
IDLE = 64
SLOWLORIS = 16
REQUESTS = 500
CLIENTS = 10  # ordinary clients sending at once
DEADLINE = 2.0  # seconds per request; generous for a shared 2-core machine


def _slowloris(port: int, stop: threading.Event, sent: list[int]) -> None:
    """A request head that never ends: one header line a second, until the server gives up."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection, contextlib.suppress(OSError):
        connection.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        line = 0
        while not stop.wait(1.0):
            connection.sendall(f"X-Slow-{line}: v\r\n".encode())
            line += 1
            sent.append(line)


def test_idle_and_slowloris_connections_do_not_delay_other_clients() -> None:
    with Collector() as collector:
        url = collector.url + "/v1/batch"
        held: list[socket.socket] = []
        kept_alive: list[requests.Session] = []
        stop = threading.Event()
        slow_lines: list[int] = []
        slow_threads = [
            threading.Thread(target=_slowloris, args=(collector.port, stop, slow_lines), daemon=True)
            for _ in range(SLOWLORIS)
        ]
        try:
            for _ in range(IDLE // 2):
                held.append(socket.create_connection(("127.0.0.1", collector.port), timeout=5))
            for index in range(IDLE // 2):
                session = requests.Session()
                body = {"writeKey": WRITE_KEY, "batch": [_event(f"idle-{index}")]}
                assert session.post(url, json=body, timeout=10).status_code == 200
                kept_alive.append(session)  # its connection stays open, idle
            for thread in slow_threads:
                thread.start()
            deadline = time.monotonic() + 10
            while collector.open_connections < IDLE + SLOWLORIS and time.monotonic() < deadline:
                time.sleep(0.05)
            assert collector.open_connections >= IDLE + SLOWLORIS

            def send(index: int) -> tuple[int, float]:
                started = time.monotonic()
                # Every other request opens a new connection; the rest reuse one per client.
                if index % 2:
                    answer = requests.post(
                        url, json={"writeKey": WRITE_KEY, "batch": [_event(f"r-{index}")]}, timeout=10
                    )
                else:
                    answer = _session().post(
                        url, json={"writeKey": WRITE_KEY, "batch": [_event(f"r-{index}")]}, timeout=10
                    )
                return answer.status_code, time.monotonic() - started

            with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
                results = list(pool.map(send, range(REQUESTS)))
            still_open = collector.open_connections
        finally:
            stop.set()
            for thread in slow_threads:
                if thread.ident is not None:
                    thread.join(5)
            for connection in held:
                connection.close()
            for session in kept_alive:
                session.close()

        statuses = Counter(status for status, _ in results)
        slowest = max(seconds for _, seconds in results)
        assert statuses == Counter({200: REQUESTS})
        assert slowest < DEADLINE, f"the slowest request took {slowest:.2f} s"
        assert still_open >= IDLE  # the idle connections were held throughout, not refused
        assert collector.count(distinct=True) == REQUESTS + IDLE // 2


_local = threading.local()


def _session() -> requests.Session:
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session


def _event(message_id: str) -> dict[str, object]:
    return {"type": "track", "userId": "stress", "event": "Stress", "messageId": message_id}
