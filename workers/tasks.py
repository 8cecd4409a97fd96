"""Celery task registrations: thin wrappers over `workers.jobs`."""

from __future__ import annotations

from celery import Celery

from . import jobs


def register(celery: Celery) -> None:
    @celery.task(name="leaseflow.run_jobs")  # type: ignore[untyped-decorator]
    def run_jobs(job_ids: list[int]) -> dict[str, int]:
        return jobs.run_jobs(job_ids)

    @celery.task(name="leaseflow.tick")  # type: ignore[untyped-decorator]
    def tick() -> dict[str, int]:
        return jobs.tick()
