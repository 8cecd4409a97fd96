"""Group commit: many concurrent callers, one transaction.

Callers on their own threads hand an item to a `GroupCommit` and wait for its outcome; one
thread takes every item waiting at that moment (up to `max_group`, or what arrives within
`window` seconds of the first) and runs them through `run` in a single unit of work. The
database commits once per group instead of once per caller, the ledger head is locked once,
and the group's jobs travel to the workers in one message.

`run(items)` returns one outcome per item, in order; an outcome that is an exception is
raised to that item's caller alone (its own refusal). An exception from `run` itself, or a
failed commit, fails every caller of the group: nothing of the group is stored, and each
caller answers as it would for its own failed transaction.

With `window=0` the batching is natural: a lone caller runs at once, and while one group's
transaction runs the next group gathers. Used by the API intake (lease requests) and by the
DHCP server's fast DORA path.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from flask import Flask

from ..pending import Pending
from . import uow

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(self, app: Flask, run: Callable[[Sequence[T]], Sequence[R | BaseException]],
                 *, name: str, max_group: int = 64, window: float = 0.0,
                 busy_window: float = 0.0,
                 guard: AbstractContextManager[Any] | None = None, threads: int = 1,
                 after: Callable[[uow.Pending], None] | None = None) -> None:
        # busy_window: how long a group gathers once the one before held more than one item
        # (callers are arriving together): fewer, larger groups under load, and a lone
        # caller still runs at once.
        # guard: held around each group's transaction (e.g. the DHCP server's SQLite turn).
        # threads: groups committing at once; while one waits for the database another
        # runs (`run` must then tolerate a concurrent group, as separate processes would).
        # after: called with the unit of work's record (its ledger entries and where they
        # went) once a group committed, before its callers hear.
        self._after = after
        self._guard = guard if guard is not None else contextlib.nullcontext()
        self._app = app
        self._run = run
        self._name = name
        self._max = max_group
        self._window = window
        self._busy_window = max(window, busy_window)
        self._last_size = 0  # the size of the group gathered last
        self._queue: queue.SimpleQueue[tuple[T, Pending[R]] | None] = queue.SimpleQueue()
        self._gather_lock = threading.Lock()  # one thread gathers a group at a time
        self._threads = [threading.Thread(target=self._loop, name=f"leaseflow-{name}-{n}",
                                          daemon=True) for n in range(max(1, threads))]
        for thread in self._threads:
            thread.start()

    def submit(self, item: T, timeout: float | None = 60.0) -> R:
        """The item's outcome once its group committed; raises its refusal or the group's
        failure (TimeoutError after `timeout`)."""
        return self.submit_nowait(item).result(timeout=timeout)

    def submit_nowait(self, item: T) -> Pending[R]:
        future: Pending[R] = Pending()
        self._queue.put((item, future))
        return future

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    def _gather(self, first: tuple[T, Pending[R]]) -> tuple[list[tuple[T, Pending[R]]], bool]:
        group, closing = [first], False
        window = self._busy_window if self._last_size > 1 else self._window
        deadline = time.monotonic() + window
        while len(group) < self._max:
            remaining = deadline - time.monotonic()
            try:
                entry = self._queue.get(timeout=remaining) if remaining > 0 \
                    else self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is None:
                closing = True
                break
            group.append(entry)
        self._last_size = len(group)
        return group, closing

    def _loop(self) -> None:
        while True:
            with self._gather_lock:
                first = self._queue.get()
                if first is None:
                    return
                group, closing = self._gather(first)
            self._commit(group)
            if closing:
                return

    def _commit(self, group: list[tuple[T, Pending[R]]]) -> None:
        items = [item for item, _ in group]
        try:
            with self._guard, self._app.app_context(), uow.unit_of_work() as done:
                outcomes = list(self._run(items))
                if len(outcomes) != len(items):
                    raise RuntimeError(f"{self._name}: {len(outcomes)} outcomes for "
                                       f"{len(items)} items")
        except BaseException as exc:  # the group's transaction failed: nothing stored
            log.warning("%s: group of %d failed: %s", self._name, len(group), exc)
            for _, future in group:
                future.set_exception(exc)
            return
        if self._after is not None:
            try:
                self._after(done)
            except Exception:  # committed all the same: its callers hear of it
                log.exception("%s: after a group of %d", self._name, len(group))
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
