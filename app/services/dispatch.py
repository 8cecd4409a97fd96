"""Hands committed jobs to workers and tells waiters that instances changed.

Two transports behind one interface, chosen by `LEASEFLOW_BROKER_URL`:
- `memory://` (embedded): an in-process worker pool running the same `run_jobs` edge;
- anything else: Celery messages to `leaseflow worker` processes, and Redis pub/sub for the
  change notifications that `POST /leases?wait=` listens to.

Job ids are coalesced with a reactivex stream (`app.streams.batches`) so that many
requests arriving together travel in few Celery messages (and run in few transactions).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol

from reactivex.scheduler import EventLoopScheduler
from reactivex.subject import Subject

from ..streams import batches

log = logging.getLogger(__name__)


class Transport(Protocol):
    def send(self, job_ids: list[int]) -> None: ...
    def notify(self, instance_ids: list[int]) -> None: ...
    def close(self) -> None: ...


class Waiters:
    """Threads waiting for a change of some instance (the `?wait=` of the API, DHCP)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation: dict[int, int] = {}  # change counter per watched instance
        self._watchers: dict[int, int] = {}  # how many threads watch it

    def changed(self, instance_ids: Iterable[int]) -> None:
        with self._cond:
            for instance_id in instance_ids:
                if instance_id in self._generation:
                    self._generation[instance_id] += 1
            self._cond.notify_all()

    def wait(self, instance_id: int, check: Callable[[], bool], timeout: float) -> bool:
        """Until check() is true (re-checked after every change, and at least each 0.5 s)."""
        import time

        deadline = time.monotonic() + timeout
        with self._cond:
            self._generation.setdefault(instance_id, 0)
            self._watchers[instance_id] = self._watchers.get(instance_id, 0) + 1
        try:
            while True:
                with self._cond:  # read before checking, so no change slips in between
                    seen = self._generation[instance_id]
                if check():
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                with self._cond:
                    self._cond.wait_for(partial(self._moved, instance_id, seen),
                                        timeout=min(remaining, 0.5))
        finally:
            with self._cond:
                self._watchers[instance_id] -= 1
                if not self._watchers[instance_id]:  # the last watcher forgets it
                    del self._watchers[instance_id]
                    del self._generation[instance_id]

    def _moved(self, instance_id: int, seen: int) -> bool:
        return self._generation[instance_id] != seen


WAITERS = Waiters()


class LocalTransport:
    """The embedded worker: threads in this process that run job batches."""

    def __init__(self, run: Callable[[list[int]], None], threads: int, batch: int) -> None:
        self._queue: queue.Queue[list[int] | None] = queue.Queue()
        self._run = run
        self._batch = batch
        self._threads = [threading.Thread(target=self._loop, name=f"leaseflow-worker-{i}",
                                          daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        while True:
            ids = self._queue.get()
            if ids is None:
                return
            # Drain what else is waiting so one transaction serves many jobs.
            while len(ids) < self._batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                ids.extend(more)
            try:
                self._run(ids)
            except Exception:  # the ticker re-queues what this batch did not finish
                log.exception("job batch failed")

    def send(self, job_ids: list[int]) -> None:
        self._queue.put(list(job_ids))

    def notify(self, instance_ids: list[int]) -> None:
        WAITERS.changed(instance_ids)

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=5)


class CeleryTransport:
    """Celery messages for jobs; Redis pub/sub for change notifications."""

    CHANNEL = "leaseflow:instances"

    def __init__(self, celery_app: Any, redis_url: str | None, batch: int,
                 window: float = 0.002) -> None:
        self._celery = celery_app
        self._subject: Subject[int] = Subject()
        # One scheduler thread for the windows: the default TimeoutScheduler starts a new
        # timer thread for every window, which at a 2 ms window starves the process.
        self._scheduler = EventLoopScheduler()
        self._subscription = self._subject.pipe(
            batches(window, batch, scheduler=self._scheduler),
        ).subscribe(self._publish, on_error=lambda e: log.error("dispatch stream: %s", e))
        self._redis = None
        self._listener: threading.Thread | None = None
        if redis_url and redis_url.startswith(("redis://", "rediss://", "unix://")):
            import redis

            self._redis = redis.Redis.from_url(redis_url)
            self._listener = threading.Thread(target=self._listen, daemon=True,
                                              name="leaseflow-notify")
            self._listener.start()

    def _publish(self, job_ids: list[int]) -> None:
        try:
            self._celery.send_task("leaseflow.run_jobs", args=[list(job_ids)])
        except Exception:  # broker down: the ticker re-sends these after their deadline
            log.exception("could not publish %d jobs", len(job_ids))

    def send(self, job_ids: list[int]) -> None:
        for job_id in job_ids:
            self._subject.on_next(job_id)

    def notify(self, instance_ids: list[int]) -> None:
        WAITERS.changed(instance_ids)
        if self._redis is not None:
            try:
                self._redis.publish(self.CHANNEL, ",".join(map(str, instance_ids)))
            except Exception:  # waiters re-check the database on their own
                log.warning("could not publish instance changes")

    def _listen(self) -> None:
        assert self._redis is not None
        while True:
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.CHANNEL)
                for message in pubsub.listen():
                    data = message.get("data")
                    if isinstance(data, bytes) and data:
                        WAITERS.changed(int(x) for x in data.split(b","))
            except Exception:
                log.warning("notification listener reconnecting")
                threading.Event().wait(1.0)

    def close(self) -> None:
        self._subscription.dispose()
        self._scheduler.dispose()


_transport: Transport | None = None


def install(transport: Transport | None) -> None:
    global _transport
    if _transport is not None and transport is not _transport:
        _transport.close()
    _transport = transport


def current() -> Transport | None:
    return _transport


def send(job_ids: list[int]) -> None:
    if _transport is not None:
        _transport.send(job_ids)


def notify(instance_ids: Iterable[int]) -> None:
    ids = list(instance_ids)
    if _transport is not None:
        _transport.notify(ids)
    else:
        WAITERS.changed(ids)

