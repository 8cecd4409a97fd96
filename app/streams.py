"""Stream operators shared by the event pipelines (job dispatch, chain batches).

`batches(window, count)` is reactivex's `buffer_with_time_or_count` minus its clock: that
operator closes a window every `window` seconds whether or not anything arrived, so a 2 ms
dispatch window woke every process 500 times a second to emit (and filter away) empty
lists — CPU the workers then lacked. Here a window opens with its first item and closes
`window` seconds later, or as soon as it holds `count` items; an idle stream costs nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import reactivex
from reactivex import abc
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable
from reactivex.scheduler import TimeoutScheduler

T = TypeVar("T")


def batches(window: float, count: int, scheduler: abc.SchedulerBase | None = None
            ) -> Callable[[reactivex.Observable[T]], reactivex.Observable[list[T]]]:
    """Lists of at most `count` items, none older than `window` seconds when emitted."""
    if count < 1 or window < 0:
        raise ValueError("batches needs count >= 1 and window >= 0")

    def operator(source: reactivex.Observable[T]) -> reactivex.Observable[list[T]]:
        def subscribe(observer: abc.ObserverBase[list[T]],
                      default: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            clock = scheduler or default or TimeoutScheduler.singleton()
            lock = threading.RLock()
            buffer: list[T] = []
            generation = [0]  # which window a timer belongs to
            timer = SerialDisposable()

            def emit() -> None:  # with the lock held
                if buffer:
                    out = list(buffer)
                    buffer.clear()
                    generation[0] += 1
                    observer.on_next(out)

            def on_next(item: T) -> None:
                with lock:
                    buffer.append(item)
                    if len(buffer) >= count:
                        timer.disposable = Disposable()
                        emit()
                    elif len(buffer) == 1:
                        opened = generation[0]

                        def close(_scheduler: Any, _state: Any) -> None:
                            with lock:
                                if generation[0] == opened:
                                    emit()

                        timer.disposable = clock.schedule_relative(window, close)

            def on_error(error: Exception) -> None:
                with lock:
                    buffer.clear()
                    observer.on_error(error)

            def on_completed() -> None:
                with lock:
                    emit()
                    observer.on_completed()

            subscription = source.subscribe(on_next, on_error, on_completed,
                                            scheduler=default)
            return CompositeDisposable(subscription, timer)

        return reactivex.create(subscribe)

    return operator
