"""The unit of work used by every edge: one transaction, then what must happen after it.

Inside: services add ledger entries (`record`), new job ids (`enqueue`) and changed instances
(`touch`). On success the ledger rows are appended under the ledger-head lock as the very
last statements (so the lock is held for milliseconds, not the whole transaction), the
transaction commits, and only then are jobs dispatched and waiters notified — a job is never
visible to a worker before the state that produced it is durable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..extensions import db


@dataclass
class Pending:
    ledger: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[int] = field(default_factory=list)
    instances: set[int] = field(default_factory=set)
    workflows: dict[int, tuple[Any, Any]] = field(default_factory=dict)  # id -> (row, workflow)
    new_jobs: list[Any] = field(default_factory=list)  # job rows parked here (strong refs)
    instance_changes: dict[int, dict[str, Any]] = field(default_factory=dict)
    fresh_leases: dict[int, Any] = field(default_factory=dict)  # inserted by this transaction
    # Strong references for rows a transaction reads again: the session's identity map only
    # holds clean rows weakly, and a row it dropped costs another SELECT.
    keep: list[Any] = field(default_factory=list)


def pending() -> Pending:
    info = db.session.info
    if "leaseflow_pending" not in info:
        info["leaseflow_pending"] = Pending()
    return info["leaseflow_pending"]  # type: ignore[no-any-return]


def record(*, kind: str, subject: str, actor: str, payload: dict[str, Any]) -> None:
    pending().ledger.append({"kind": kind, "subject": subject, "actor": actor,
                             "payload": payload})


def enqueue(job_id: int) -> None:
    pending().jobs.append(job_id)


def touch(instance_id: int) -> None:
    pending().instances.add(instance_id)


@contextlib.contextmanager
def unit_of_work(*, dispatch_jobs: bool = True) -> Iterator[Pending]:
    from . import audit, dispatch, instances

    db.session.info.pop("leaseflow_pending", None)
    state = pending()
    try:
        yield state
        instances.flush_workflows(state)
        audit.flush(state.ledger)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        db.session.info.pop("leaseflow_pending", None)
        raise
    db.session.info.pop("leaseflow_pending", None)
    if state.jobs and dispatch_jobs:
        dispatch.send(state.jobs)
    if state.instances:
        dispatch.notify(state.instances)
