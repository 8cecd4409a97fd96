"""The job edge: run a batch of outbox jobs, commit, and run their follow-ups ahead.

Used as the Celery task `leaseflow.run_jobs` and by the embedded in-process worker. After a
batch commits, the jobs it created for this worker's queue run right here (run-ahead)
instead of travelling through the broker: exactly-once comes from the job's status under the
instance lock, so a crash in between only means the ticker hands them out again.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.services import dispatch, jobs
from app.services.uow import unit_of_work

RUN_AHEAD_ROUNDS = 8


def run_jobs(job_ids: Iterable[int]) -> dict[str, int]:
    ids = sorted(set(int(i) for i in job_ids))
    totals = {"done": 0, "retried": 0, "failed": 0, "skipped": 0}
    if ids and not jobs.anything_to_run(ids, steal=len(ids) < batch_size()):
        totals["skipped"] = len(ids)  # another worker's batch took them
        return totals
    for _ in range(RUN_AHEAD_ROUNDS):
        if not ids:
            break
        with unit_of_work(dispatch_jobs=False) as pending:
            stats = jobs.run_batch(ids, steal=max(0, batch_size() - len(ids)))
        for key, value in stats.items():
            totals[key] += value
        ids = sorted(set(pending.jobs))
    if ids:
        dispatch.send(ids)
    return totals


def batch_size() -> int:
    from flask import current_app

    return int(current_app.config["LEASEFLOW"].batch_size)


def tick() -> dict[str, int]:
    with unit_of_work():
        return jobs.tick()
