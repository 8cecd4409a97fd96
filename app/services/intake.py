"""Group commit for lease requests: many concurrent requests, one transaction.

Request threads hand their validated body to the intake and wait for the instance id; one
intake thread starts every waiting request's instance in a single unit of work. The ledger
head is locked once and the database commits once per group instead of once per request,
and the group's jobs travel to the workers in one message. A request that fails its own
checks gets its own error; a failure of the group's commit fails every request of the group
(none of them is stored), and the caller answers as it would for its own transaction.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from flask import Flask

from ..errors import LeaseflowError
from .uow import unit_of_work

log = logging.getLogger(__name__)
Item = tuple[Mapping[str, Any], str, "Future[int]"]


class Intake:
    def __init__(self, app: Flask, *, max_group: int = 64, window: float = 0.002) -> None:
        self._app = app
        self._max = max_group
        self._window = window
        self._queue: queue.Queue[Item | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="leaseflow-intake",
                                        daemon=True)
        self._thread.start()

    def submit(self, body: Mapping[str, Any], actor: str, timeout: float = 60.0) -> int:
        future: Future[int] = Future()
        self._queue.put((body, actor, future))
        return future.result(timeout=timeout)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _gather(self, first: Item) -> tuple[list[Item], bool]:
        group, closing = [first], False
        deadline = time.monotonic() + self._window
        while len(group) < self._max:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=max(remaining, 0)) if remaining > 0 \
                    else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                closing = True
                break
            group.append(item)
        return group, closing

    def _loop(self) -> None:
        from . import instances

        while True:
            first = self._queue.get()
            if first is None:
                return
            group, closing = self._gather(first)
            outcomes: list[tuple[Future[int], Any]] = []
            try:
                with self._app.app_context(), unit_of_work():
                    started = instances.start_leases([(body, actor) for body, actor, _ in group])
                    outcomes = [(future, outcome.id if not isinstance(outcome, LeaseflowError)
                                 else outcome) for (_, _, future), outcome in zip(
                                     group, started, strict=True)]
            except BaseException as exc:  # the group's transaction failed: nothing stored
                log.warning("lease intake group of %d failed: %s", len(group), exc)
                for _, _, future in group:
                    future.set_exception(exc)
            else:
                for future, outcome in outcomes:
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
            if closing:
                return
