"""`LruCache`: bounded, least recently used out first, and one step per check-and-insert."""

from __future__ import annotations

import threading

import pytest

from quickbot_segment_plugin.core.lru import LruCache


def test_the_least_recently_put_entry_is_evicted_first() -> None:
    cache: LruCache[str, int] = LruCache(3)
    for number, key in enumerate("abcd"):
        cache.put(key, number)
    assert len(cache) == 3
    assert cache.get("a") is None
    assert [cache.get(key) for key in "bcd"] == [1, 2, 3]


def test_get_makes_an_entry_the_most_recently_used() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert cache.get("b") is None
    assert cache.get("a") == 1 and cache.get("c") == 3


def test_put_replaces_a_value_and_makes_it_the_most_recently_used() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 10)
    cache.put("c", 3)
    assert len(cache) == 2
    assert cache.get("a") == 10 and cache.get("b") is None


def test_a_miss_evicts_nothing_and_changes_no_order() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("missing") is None
    cache.put("c", 3)
    assert cache.get("a") is None and len(cache) == 2


def test_add_if_absent_reports_a_key_already_kept_and_refreshes_it() -> None:
    cache: LruCache[str, bool] = LruCache(2)
    assert cache.add_if_absent("a", True)
    assert cache.add_if_absent("b", True)
    assert not cache.add_if_absent("a", True)  # refreshed: "b" is now the least recently used
    assert cache.add_if_absent("c", True)
    assert cache.get("b") is None
    assert not cache.add_if_absent("a", True)
    assert not cache.add_if_absent("c", True)


def test_add_if_absent_keeps_the_first_value() -> None:
    cache: LruCache[str, str] = LruCache(2)
    assert cache.add_if_absent("a", "first")
    assert not cache.add_if_absent("a", "second")
    assert cache.get("a") == "first"


def test_add_if_absent_lets_exactly_one_thread_win_each_key() -> None:
    cache: LruCache[int, int] = LruCache(10_000)
    threads = 8
    keys = range(2_000)
    start = threading.Barrier(threads)
    wins = [0] * threads

    def race(worker: int) -> None:
        start.wait()
        for key in keys:
            if cache.add_if_absent(key, worker):
                wins[worker] += 1

    workers = [threading.Thread(target=race, args=(worker,)) for worker in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert sum(wins) == len(keys)
    assert len(cache) == len(keys)


def test_concurrent_puts_and_gets_never_exceed_capacity() -> None:
    cache: LruCache[int, int] = LruCache(50)
    errors: list[BaseException] = []

    def churn(worker: int) -> None:
        try:
            for number in range(5_000):
                key = (number * 7 + worker) % 200
                cache.put(key, number)
                cache.get(key - 1)
                if number % 13 == 0:
                    cache.discard(key)
                assert len(cache) <= 50
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    workers = [threading.Thread(target=churn, args=(worker,)) for worker in range(6)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert errors == []
    assert len(cache) <= 50


@pytest.mark.parametrize("capacity", [0, -1])
def test_a_capacity_of_zero_keeps_nothing(capacity: int) -> None:
    cache: LruCache[str, int] = LruCache(capacity)
    assert cache.capacity == 0
    cache.put("a", 1)
    assert cache.get("a") is None and len(cache) == 0
    assert cache.add_if_absent("b", 2)
    assert cache.add_if_absent("b", 2)  # nothing is kept, so nothing is ever a duplicate
    assert len(cache) == 0


def test_discard_and_clear() -> None:
    cache: LruCache[str, int] = LruCache(3)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.discard("a")
    cache.discard("never there")
    assert cache.get("a") is None and cache.get("b") == 2 and len(cache) == 1
    assert cache.add_if_absent("a", 3)  # discarded means absent again
    cache.clear()
    assert len(cache) == 0 and cache.get("b") is None
