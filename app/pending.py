"""`Pending`: a result that is not there yet, set once by one thread, read by others.

The part of `concurrent.futures.Future` that the group commit and the DHCP server use (a
result or an exception, set once; callbacks once it is set; a blocking `result`), without
what a Future allocates per instance: a `threading.Condition` with its lock and waiter
list. The DHCP fast path makes two per exchange, and at a few thousand exchanges a second
those Conditions cost several % of the server's CPU. Here a caller that blocks in
`result` gets an `Event` made for it; callbacks need none.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import InvalidStateError
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class Pending(Generic[T]):
    __slots__ = ("_callbacks", "_done", "_error", "_event", "_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False
        self._value: T | None = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Pending[T]], Any]] | None = None
        self._event: threading.Event | None = None

    @classmethod
    def settled(cls, value: T) -> Pending[T]:
        pending: Pending[T] = cls()
        pending.set_result(value)
        return pending

    def done(self) -> bool:
        return self._done

    def set_result(self, value: T) -> None:
        self._settle(value, None)

    def set_exception(self, error: BaseException) -> None:
        self._settle(None, error)

    def _settle(self, value: T | None, error: BaseException | None) -> None:
        with self._lock:
            if self._done:
                raise InvalidStateError("the result is already set")
            self._value, self._error, self._done = value, error, True
            callbacks, self._callbacks = self._callbacks, None
            event = self._event
        if event is not None:
            event.set()
        for callback in callbacks or ():
            self._call(callback)

    def add_done_callback(self, callback: Callable[[Pending[T]], Any]) -> None:
        """`callback(self)` once the result is set: at once if it is, else on the setter's
        thread. An exception from it is logged, as a Future does."""
        with self._lock:
            if not self._done:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        self._call(callback)

    def _call(self, callback: Callable[[Pending[T]], Any]) -> None:
        try:
            callback(self)
        except Exception:
            log.exception("a callback of %r failed", self)

    def result(self, timeout: float | None = None) -> T:
        """The result, waiting up to `timeout` seconds (TimeoutError); raises the
        exception instead if one was set."""
        if not self._done:
            with self._lock:
                if not self._done and self._event is None:
                    self._event = threading.Event()
                event = self._event
            if event is not None and not event.wait(timeout) and not self._done:
                raise TimeoutError(f"no result within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]
