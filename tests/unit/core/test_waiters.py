"""Waiting for instance changes: no missed change, several waiters on one instance."""

from __future__ import annotations

import threading

from app.services.dispatch import Waiters


def test_a_change_during_the_check_is_not_missed() -> None:
    waiters = Waiters()
    calls = []

    def check() -> bool:
        calls.append(1)
        if len(calls) == 1:
            waiters.changed([7])  # lands while the first check runs
            return False
        return True

    assert waiters.wait(7, check, timeout=30)
    assert len(calls) == 2


def test_two_waiters_on_one_instance_both_wake() -> None:
    waiters = Waiters()
    ready = threading.Barrier(3)
    state = {"done": False}
    results: list[bool] = []

    def waiter() -> None:
        first = [True]

        def check() -> bool:
            if first[0]:
                first[0] = False
                ready.wait(timeout=10)
            return state["done"]

        results.append(waiters.wait(9, check, timeout=30))

    threads = [threading.Thread(target=waiter) for _ in range(2)]
    for t in threads:
        t.start()
    ready.wait(timeout=10)
    state["done"] = True
    waiters.changed([9])
    for t in threads:
        t.join(timeout=30)
    assert results == [True, True]
