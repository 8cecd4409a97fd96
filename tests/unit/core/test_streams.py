"""The batching operator in virtual time: a window opens with its first item."""

from __future__ import annotations

import pytest
from reactivex.testing import ReactiveTest, TestScheduler

from app.streams import batches


def run(events, count=3, window=100.0):
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(*events)
    observer = scheduler.start(lambda: source.pipe(batches(window, count, scheduler=scheduler)))
    return scheduler, [(m.value.value, m.time) for m in observer.messages if m.value.kind == "N"]


def test_a_full_batch_leaves_at_once_and_the_rest_when_its_window_closes():
    _, out = run([*(ReactiveTest.on_next(201 + n, n) for n in range(5)),
                  ReactiveTest.on_next(800, 9), ReactiveTest.on_completed(2000)])
    assert out == [([0, 1, 2], 203), ([3, 4], 304), ([9], 900)]


class CountingScheduler(TestScheduler):
    timers = 0

    def schedule_relative(self, duetime, action, state=None):
        self.timers += 1
        return super().schedule_relative(duetime, action, state)


def test_an_idle_stream_arms_no_timer():
    scheduler = CountingScheduler()
    source = scheduler.create_hot_observable(ReactiveTest.on_next(300, "a"))
    scheduler.start(lambda: source.pipe(batches(10.0, 3, scheduler=scheduler)))
    # one timer for the one window that had an item, none for the idle time before and after
    assert scheduler.timers == 1


def test_completion_flushes_what_is_buffered():
    _, out = run([ReactiveTest.on_next(300, "a"), ReactiveTest.on_completed(310)])
    assert out == [(["a"], 310)]


def test_a_timer_of_an_emitted_batch_does_not_cut_the_next_one_short():
    # 0,1,2 leave by count at 203; the timer armed at 201 (due 301) must not flush [3]
    _, out = run([*(ReactiveTest.on_next(201 + n, n) for n in range(4)),
                  ReactiveTest.on_completed(2000)])
    assert out == [([0, 1, 2], 203), ([3], 304)]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        batches(1.0, 0)
