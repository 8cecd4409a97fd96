"""`Pacer`: items handled `burst` at a time with a pause between, in order, none lost."""

from __future__ import annotations

import threading

import pytest

from app.dhcp.pacer import Pacer


class Recorder:
    def __init__(self) -> None:
        self.handled: list[int] = []
        self.at_pause: list[int] = []  # how many were handled when each pause began
        self.pauses: list[float] = []

    def handle(self, item: int) -> None:
        self.handled.append(item)

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.at_pause.append(len(self.handled))


def test_a_backlog_goes_out_in_bursts_with_a_pause_between_and_in_order():
    r = Recorder()
    pacer = Pacer(r.handle, burst=32, gap=0.001, sleep=r.sleep, start=False)
    for n in range(70):
        pacer.put(n)
    assert r.handled == []  # nothing before the pacer runs
    assert pacer.drain() == 70
    assert r.handled == list(range(70))
    assert r.at_pause == [32, 64] and r.pauses == [0.001, 0.001]  # no pause after the last


def test_a_long_queue_goes_out_a_share_at_a_time_so_the_pacer_keeps_up():
    r = Recorder()
    pacer = Pacer(r.handle, burst=32, gap=0.001, spread=4, most=64, sleep=r.sleep,
                  start=False)
    for n in range(400):
        pacer.put(n)
    assert pacer.drain() == 400 and r.handled == list(range(400))
    # a quarter of what waits (rounded up), never fewer than 32 nor more than 64
    assert r.at_pause == [64, 128, 192, 244, 283, 315, 347, 379]


def test_a_single_item_goes_out_without_a_pause():
    r = Recorder()
    pacer = Pacer(r.handle, burst=4, gap=0.5, sleep=r.sleep, start=False)
    pacer.put(7)
    assert pacer.drain() == 1 and r.handled == [7] and r.pauses == []


def test_an_item_that_fails_does_not_stop_the_others(caplog):
    r = Recorder()

    def handle(item: int) -> None:
        if item == 1:
            raise RuntimeError("this reply could not be sent")
        r.handle(item)

    pacer = Pacer(handle, burst=2, gap=0.0, sleep=r.sleep, start=False)
    for n in range(4):
        pacer.put(n)
    assert pacer.drain() == 4
    assert r.handled == [0, 2, 3] and r.pauses == []  # gap 0: no sleep at all
    assert "this reply could not be sent" in caplog.text


def test_close_hands_over_what_is_queued_and_later_items_run_on_the_callers_thread():
    seen: list[tuple[int, str]] = []
    gate = threading.Event()

    def handle(item: int) -> None:
        gate.wait()  # the pacer's thread holds its first item until the test has queued more
        seen.append((item, threading.current_thread().name))

    pacer = Pacer(handle, burst=8, gap=0.0, name="test-pacer")
    for n in range(20):
        pacer.put(n)
    gate.set()
    pacer.close()
    assert [item for item, _ in seen] == list(range(20))
    pacer.put(20)
    assert seen[-1] == (20, threading.current_thread().name)


@pytest.mark.parametrize(("burst", "gap", "spread", "most"),
                         [(0, 0.001, 4, 64), (-1, 0.001, 4, 64), (4, -0.5, 4, 64),
                          (4, float("nan"), 4, 64), (4, 0.001, 0, 64), (4, 0.001, 4, 2)])
def test_a_bad_pace_is_refused(burst, gap, spread, most):
    with pytest.raises(ValueError, match="burst|gap|spread|most"):
        Pacer(lambda item: None, burst=burst, gap=gap, spread=spread, most=most, start=False)


def test_items_queued_while_the_pacer_drains_are_handled_without_another_wake_up():
    """`put` wakes the pacer only when it is not awake already: what arrives during a
    drain (the wake-up still set, or cleared just before) is handled all the same."""
    first_taken, go_on, all_done = threading.Event(), threading.Event(), threading.Event()
    handled: list[int] = []

    def handle(item: int) -> None:
        if item == 0:
            first_taken.set()
            assert go_on.wait(10), "the test did not let the first item finish"
        handled.append(item)
        if len(handled) == 50:
            all_done.set()

    pacer = Pacer(handle, burst=64, gap=0.0)
    pacer.put(0)
    assert first_taken.wait(10), "the pacer did not wake for its first item"
    for n in range(1, 50):  # queued while the pacer's thread is inside handle(0)
        pacer.put(n)
    go_on.set()
    assert all_done.wait(10), f"only {len(handled)} of 50 items were handled"
    pacer.close()
    assert handled == list(range(50))
