"""Micro-batching of lease changes: many concurrent callers, one transaction per batch.

A chain transaction costs the same few milliseconds whether it carries one lease change or
hundreds, so throughput comes from batching. Callers (Celery operations of many process
instances) `submit()` one item each and get a Future of their own item's Outcome. A
reactivex pipeline gathers the submitted items by time or count
(`app.streams.batches`), and each batch becomes one `apply_batch` transaction
(releases first, then allocations). The contract applies the items in order, so two items
for one address in one batch give one acceptance and one refusal, exactly as two separate
transactions would. If the transaction itself fails (node down, not a writer), every
future of that batch fails with that error, transient or not, and the callers' retry
policy decides.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import reactivex
from reactivex import abc
from reactivex.subject import Subject

from app.chain.errors import ChainError
from app.chain.types import AllocateItem, Outcome, ReleaseItem
from app.streams import batches


class BatcherClosed(ChainError):
    """The batcher was closed; nothing more can be submitted."""


@dataclass(frozen=True, kw_only=True)
class ChainRequest:
    """One submitted item on its way into a batch, with the future its caller waits on."""

    item: AllocateItem | ReleaseItem
    future: Future[Outcome]


@dataclass(frozen=True, kw_only=True)
class BatchReport:
    """What one batch did, for metrics and benchmarks."""

    size: int
    accepted: int
    refused: int
    tx_hashes: tuple[str, ...]
    seconds: float
    error: str | None = None


class _Applier(Protocol):
    """What the batcher needs of a registry (Registry has it; tests may pass their own)."""

    def apply_batch(
        self, releases: list[ReleaseItem], allocations: list[AllocateItem]
    ) -> tuple[list[Outcome], list[Outcome]]: ...


class ChainBatcher:
    """Gather submitted items into batches of at most `max_items`, waiting at most
    `max_delay` seconds for a batch to fill; up to `max_in_flight` transactions at once."""

    def __init__(
        self,
        registry: _Applier,
        *,
        max_items: int = 256,
        max_delay: float = 0.05,
        max_in_flight: int = 1,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> None:
        if max_items < 1 or max_delay <= 0 or max_in_flight < 1:
            raise ValueError("max_items and max_in_flight must be >= 1, max_delay > 0")
        self._registry = registry
        self._on_batch = on_batch
        self._lock = threading.Lock()
        self._closed = False
        # Transactions run here, never on a submitter's thread nor on reactivex's timer.
        self._executor = ThreadPoolExecutor(
            max_workers=max_in_flight, thread_name_prefix="chain-batch"
        )
        self._subject: Subject[ChainRequest] = Subject()
        self._subscription = batches_of(self._subject, max_items, max_delay).subscribe(
            on_next=self._dispatch
        )

    def submit(self, item: AllocateItem | ReleaseItem) -> Future[Outcome]:
        """Queue one item; the future resolves with its Outcome or the batch's ChainError."""
        if not isinstance(item, AllocateItem | ReleaseItem):
            raise TypeError(f"expected an AllocateItem or ReleaseItem, got {item!r}")
        future: Future[Outcome] = Future()
        request = ChainRequest(item=item, future=future)
        # Subjects are not safe for concurrent on_next; the lock also orders items.
        with self._lock:
            if self._closed:
                raise BatcherClosed("the chain batcher is closed")
            self._subject.on_next(request)
        return future

    def close(self, *, wait: bool = True) -> None:
        """Flush what is queued, then stop; pending futures still resolve."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._subject.on_completed()  # emits the last, partial buffer
        self._subscription.dispose()
        self._executor.shutdown(wait=wait)

    def __enter__(self) -> ChainBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- inside -------------------------------------------------------------------------

    def _dispatch(self, batch: list[ChainRequest]) -> None:
        try:
            self._executor.submit(self._run, list(batch))
        except RuntimeError as exc:  # executor already shut down: fail, never hang
            for request in batch:
                request.future.set_exception(BatcherClosed(str(exc)))

    def _run(self, batch: list[ChainRequest]) -> None:
        started = time.monotonic()
        releases = [r for r in batch if isinstance(r.item, ReleaseItem)]
        allocations = [r for r in batch if isinstance(r.item, AllocateItem)]
        try:
            released, allocated = self._registry.apply_batch(
                [r.item for r in releases],  # type: ignore[misc]
                [r.item for r in allocations],  # type: ignore[misc]
            )
            if len(released) != len(releases) or len(allocated) != len(allocations):
                raise ChainError("the registry returned a different number of outcomes")
        except BaseException as exc:  # every caller must hear about it, whatever it is
            for request in batch:
                request.future.set_exception(exc)
            self._report(batch, [], started, error=str(exc))
            if not isinstance(exc, Exception):
                raise
            return
        outcomes = [*released, *allocated]
        for request, outcome in zip([*releases, *allocations], outcomes, strict=True):
            request.future.set_result(outcome)
        self._report(batch, outcomes, started)

    def _report(
        self, batch: list[ChainRequest], outcomes: list[Outcome], started: float,
        error: str | None = None,
    ) -> None:
        if self._on_batch is None:
            return
        accepted = sum(1 for o in outcomes if o.accepted)
        report = BatchReport(
            size=len(batch),
            accepted=accepted,
            refused=len(outcomes) - accepted,
            tx_hashes=tuple(sorted({o.tx_hash for o in outcomes if o.tx_hash})),
            seconds=time.monotonic() - started,
            error=error,
        )
        try:
            self._on_batch(report)
        except Exception:  # noqa: S110 - a metrics hook must not break the batch
            pass


def batches_of(
    source: reactivex.Observable[ChainRequest],
    max_items: int,
    max_delay: float,
    scheduler: abc.SchedulerBase | None = None,
) -> reactivex.Observable[list[ChainRequest]]:
    """The batching rule on its own, for tests of the stream with a virtual-time scheduler."""
    return source.pipe(batches(max_delay, max_items, scheduler=scheduler))
