"""The job runner: what a worker does with a batch of outbox jobs, and the ticker.

A batch runs in one transaction: read which jobs are still queued (a duplicate delivery
finds its job done and does nothing), lock their instances (in id order, skipping rows
another worker holds), run each operation (inside a savepoint unless it declares that it
needs none; an operation with a batch handler runs all its jobs of the round in one call),
and resume each instance with its result or error. `engine.start` jobs run the engine from
the start event. Jobs the round parked on instances this batch holds run ahead in the same
transaction. Transient errors are retried with backoff as new attempts; spent retries and
business errors are delivered to the diagram as BPMN errors.

The ticker re-queues jobs whose deadline passed (their worker died or the message was lost),
and wakes instances whose timers are due, using the indexed `wake_at` column.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select

from .. import operations
from ..extensions import db
from ..models import ServiceJob, utcnow
from ..operations import OperationError, TransientError
from . import instances, uow

log = logging.getLogger(__name__)
MAX_DELIVERIES = 5  # a job handed out this often without finishing counts as failed


def run_batch(job_ids: Sequence[int], *, steal: int = 0) -> dict[str, int]:
    """Run the still-queued jobs among `job_ids`; the caller commits (unit of work).

    With `steal`, also take up to that many other due jobs of the default queue from the
    outbox, so that under load one transaction serves many instances whatever way their
    messages arrived (the messages of stolen jobs later find them done and do nothing).
    """
    stats = {"done": 0, "retried": 0, "failed": 0, "skipped": 0}
    if not job_ids:
        return stats
    instance_of = dict(db.session.execute(
        select(ServiceJob.id, ServiceJob.instance_id).where(
            ServiceJob.id.in_(job_ids), ServiceJob.status == "queued")).all())
    # Never wait for an instance another worker holds: that worker took its jobs (a batch
    # steals due jobs, see below) and runs them; in the rare case it holds the row for
    # something else, the job stays queued and the ticker hands it out again.
    locked = instances.lock_many(list(instance_of.values()), skip_locked=True)
    if steal > 0:
        extra = dict(db.session.execute(
            select(ServiceJob.id, ServiceJob.instance_id).where(
                ServiceJob.status == "queued", ServiceJob.queue == "default",
                ServiceJob.not_before <= utcnow(), ServiceJob.id.not_in(job_ids))
            .order_by(ServiceJob.id).limit(steal)).all())
        # Never wait for an instance another worker holds: that one is busy with it.
        locked.update(instances.lock_many(
            [i for i in extra.values() if i not in locked], skip_locked=True))
        job_ids = [*job_ids, *(j for j, i in extra.items() if i in locked)]
    jobs = db.session.execute(
        select(ServiceJob).where(ServiceJob.id.in_(job_ids), ServiceJob.status == "queued")
        .order_by(ServiceJob.instance_id, ServiceJob.id)
        .execution_options(populate_existing=True)).scalars().all()
    stats["skipped"] = len(job_ids) - len(jobs)
    now = utcnow()
    runnable = []
    for job in jobs:
        if job.instance_id not in locked:
            continue
        if job.not_before > now:
            stats["skipped"] += 1  # a backoff delay not yet over; the ticker brings it back
            continue
        runnable.append(job)
    pending = uow.pending()
    while runnable:
        _run_round(runnable, locked, stats)
        # Run ahead inside this transaction: jobs that the round parked on instances we hold
        # locked, for this worker's queue, run now instead of travelling through the broker.
        runnable = _ahead(pending, locked, utcnow())
    return stats


def anything_to_run(job_ids: Sequence[int], *, steal: bool) -> bool:
    """One cheap read before a batch's transaction: is any of `job_ids` still queued (or,
    with `steal`, any due job of the default queue)? Under load most messages find their
    jobs already taken by another worker's batch; they end here instead of running an
    empty unit of work."""
    queued = ServiceJob.status == "queued"
    mine = ServiceJob.id.in_(job_ids)
    due = (ServiceJob.queue == "default") & (ServiceJob.not_before <= utcnow())
    found = db.session.execute(select(ServiceJob.id).where(
        queued & ((mine | due) if steal else mine)).limit(1)).first()
    db.session.rollback()  # end the read: the batch opens its own transaction
    return found is not None


def _ahead(pending: uow.Pending, locked: dict[int, Any], now: Any) -> list[ServiceJob]:
    ahead = [job for job in pending.new_jobs
             if job.status == "queued" and job.instance_id in locked
             and job.queue == "default" and job.not_before <= now]
    if ahead:
        taken = {id(job) for job in ahead}
        pending.new_jobs[:] = [job for job in pending.new_jobs if id(job) not in taken]
        # Not in the session yet: each is inserted once, when it has finished (_run_round).
    return sorted(ahead, key=lambda j: j.instance_id)


def _run_round(runnable: list[ServiceJob], locked: dict[int, Any],
               stats: dict[str, int]) -> None:
    # Phase 1: start every operation. A handler may answer with a Future (e.g. an item of
    # a chain batch), so one transaction of many jobs waits once for all of them.
    started = _start(runnable)
    timeout = current_app.config["LEASEFLOW"].job_timeout
    finished: list[ServiceJob] = []
    for job, outcome in started:
        if isinstance(outcome, Future):
            outcome = _settle(job, outcome, timeout)
        instance = locked[job.instance_id]
        job.finished_at = utcnow()
        if job.id is None:  # parked in this transaction: inserted once, finished
            finished.append(job)
        if outcome is None:  # engine.start: run the engine from the start event
            job.status = "done"
            stats["done"] += 1
            instances.begin(instance)
            continue
        if isinstance(outcome, OperationError):
            job.error = f"{outcome.code}: {outcome.message}"
            if outcome.kind == "transient" and job.attempt < job.max_attempts:
                job.status = "failed"
                _retry(job)
                stats["retried"] += 1
                continue
            job.status = "failed"
            stats["failed"] += 1
            code = outcome.code if outcome.kind == "business" else "retries_exhausted"
            instances.resume_with_error(instance, job, code=code, message=outcome.message,
                                        kind=outcome.kind,
                                        details={"cause": outcome.code, **outcome.details})
        else:
            job.status = "done"
            job.result = outcome
            stats["done"] += 1
            instances.resume_with_result(instance, job, outcome)
    for job in finished:
        uow.add_row(ServiceJob.__table__, _row(job))


def _row(job: ServiceJob) -> dict[str, Any]:
    """The outbox row of a job that ran ahead: nobody needs its id, so no RETURNING."""
    row = {column.key: getattr(job, column.key) for column in ServiceJob.__table__.columns
           if column.key != "id"}
    row["deliveries"] = row["deliveries"] or 0
    row["created_at"] = row["created_at"] or job.not_before  # parked then
    return row


def _start(runnable: list[ServiceJob]) -> list[tuple[ServiceJob, Any]]:
    """Each job's outcome (None for engine.start, run in phase 2); jobs of an operation with
    a batch handler run together in one call."""
    batches: dict[str, list[ServiceJob]] = {}
    for job in runnable:
        try:
            if job.operation != instances.START and operations.get(job.operation).batch:
                batches.setdefault(job.operation, []).append(job)
        except OperationError:
            pass  # unknown operation: _execute answers the error
    outcomes: dict[int, Any] = {}
    for name, jobs in batches.items():
        if len(jobs) > 1:
            outcomes.update(zip((id(job) for job in jobs),
                                _execute_batch(name, jobs), strict=True))
    return [(job, outcomes[id(job)] if id(job) in outcomes
             else None if job.operation == instances.START else _execute(job))
            for job in runnable]


def _execute_batch(name: str, jobs: list[ServiceJob]) -> list[Any]:
    handler = operations.get(name).batch
    assert handler is not None
    try:
        return handler([job.params for job in jobs])
    except Exception as exc:  # a bug or a peer failure: every job of the batch retries
        log.exception("batch of %d %s jobs crashed", len(jobs), name)
        return [TransientError(f"{type(exc).__name__}: {exc}", code="operation_crashed")
                for _ in jobs]


def _settle(job: ServiceJob, future: Future[Any],
            timeout: float) -> dict[str, Any] | OperationError:
    try:
        result = future.result(timeout=timeout)
    except OperationError as exc:
        return exc
    except FutureTimeout:
        return TransientError(f"{job.operation} gave no answer within {timeout:g}s",
                              code="timeout")
    except Exception as exc:
        log.warning("job %s (%s) failed: %s", job.id, job.operation, exc)
        return TransientError(f"{type(exc).__name__}: {exc}", code="operation_crashed")
    if not isinstance(result, dict):
        return TransientError(f"{job.operation} answered {type(result).__name__}, not an object",
                              code="operation_crashed")
    return result


def _execute(job: ServiceJob) -> dict[str, Any] | OperationError | Future[Any]:
    try:
        operation = operations.get(job.operation)
    except OperationError as exc:
        return exc
    try:
        if not operation.savepoint:
            return operation.handler(job.params)
        with uow.savepoint():
            return operation.handler(job.params)
    except OperationError as exc:
        return exc
    except Exception as exc:  # a bug or an unexpected peer failure: retry, then a person
        log.exception("job %s (%s) crashed", job.id, job.operation)
        return TransientError(f"{type(exc).__name__}: {exc}", code="operation_crashed")


def _retry(job: ServiceJob) -> ServiceJob:
    delay = instances.backoff_seconds(job)
    when = utcnow() + timedelta(seconds=delay)
    retry = ServiceJob(instance_id=job.instance_id, task_id=job.task_id,
                       task_name=job.task_name, operation=job.operation, params=job.params,
                       attempt=job.attempt + 1, max_attempts=job.max_attempts,
                       backoff_base=job.backoff_base, status="queued", queue=job.queue,
                       not_before=when, deadline=when)
    db.session.add(retry)
    db.session.flush()
    if delay <= 0:
        uow.enqueue(retry.id)
    return retry


def requeue_stale(limit: int = 1000) -> list[int]:
    """Jobs whose deadline passed: hand them out again (or give up after MAX_DELIVERIES)."""
    now = utcnow()
    timeout = timedelta(seconds=current_app.config["LEASEFLOW"].job_timeout)
    query = select(ServiceJob).where(ServiceJob.status == "queued", ServiceJob.deadline <= now) \
        .order_by(ServiceJob.deadline).limit(limit)
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    due = db.session.execute(query).scalars().all()
    ids = []
    for job in due:
        job.deadline = now + timeout
        job.deliveries += 1
        if job.deliveries > MAX_DELIVERIES:
            _give_up(job)
            continue
        ids.append(job.id)
        uow.enqueue(job.id)
    return ids


def _give_up(job: ServiceJob) -> None:
    instance = instances.lock(job.instance_id)
    db.session.refresh(job)
    if job.status != "queued":
        return
    job.status, job.error, job.finished_at = "failed", "worker_lost", utcnow()
    instances.resume_with_error(instance, job, code="worker_lost", kind="transient",
                                message=f"no worker finished {job.operation} after "
                                        f"{MAX_DELIVERIES} deliveries")


def tick() -> dict[str, int]:
    """One round of the ticker; the caller commits."""
    stale = requeue_stale()
    woken = 0
    for instance_id in instances.due_for_wake():
        instances.wake(instance_id)
        woken += 1
    from . import anchoring  # the ledger's on-chain anchor, every anchor_interval seconds

    anchored = anchoring.maybe_anchor()
    return {"requeued": len(stale), "woken": woken,
            "anchored": int(bool(anchored and anchored.get("anchored")))}
