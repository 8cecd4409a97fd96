"""Process instances: start, resume with job results, messages, people and timers.

Every change follows one pattern: lock the instance row, restore its workflow (from the
in-process cache when the version matches), let the engine step, and persist the report —
the new workflow state, the outbox jobs for parked service tasks, the open human tasks and
the next wake-up — in the caller's transaction.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from flask import current_app
from sqlalchemy import CursorResult, bindparam, select, update
from sqlalchemy.orm.attributes import set_committed_value

from ..engine import runtime
from ..errors import Conflict, Invalid, LeaseflowError, NotFound
from ..extensions import db
from ..ipam.addresses import IpamError, parse_address
from ..models import HumanTask, ProcessDefinition, ProcessInstance, ServiceJob, utcnow
from . import definitions, ids, subnets, uow

log = logging.getLogger(__name__)
FINAL = frozenset({"completed", "refused", "aborted", "failed"})
ACTIONS = ("retry", "alternative", "abort")
START = "engine.start"  # the outbox job that runs an accepted instance from its start event
_jitter = random.Random()

# Restoring a workflow costs more than stepping it; keep recent ones, keyed by row version.
_cache: OrderedDict[tuple[str, int], tuple[int, Any]] = OrderedDict()
_cache_lock = threading.Lock()
CACHE_SIZE = 4096


def _key(instance_id: int) -> tuple[str, int]:
    return (str(db.engine.url), instance_id)  # one process may serve several databases


def _cached(instance: ProcessInstance) -> Any | None:
    with _cache_lock:
        entry = _cache.pop(_key(instance.id), None)
    if entry is not None and entry[0] == instance.version:
        return entry[1]
    return None


def _remember(instance: ProcessInstance, workflow: Any) -> None:
    with _cache_lock:
        _cache[_key(instance.id)] = (instance.version, workflow)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)


def lock(instance_id: int) -> ProcessInstance:
    instance = db.session.execute(
        select(ProcessInstance).where(ProcessInstance.id == instance_id)
        .with_for_update().execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if instance is None:
        raise NotFound(f"no instance {instance_id}", code="unknown_instance")
    return instance


def lock_many(instance_ids: Sequence[int], *,
              skip_locked: bool = False) -> dict[int, ProcessInstance]:
    """Lock rows in id order (no deadlocks); with skip_locked, leave rows others hold."""
    if not instance_ids:
        return {}
    rows = db.session.execute(
        select(ProcessInstance).where(ProcessInstance.id.in_(sorted(set(instance_ids))))
        .order_by(ProcessInstance.id).with_for_update(skip_locked=skip_locked)
        .execution_options(populate_existing=True)).scalars()
    return {row.id: row for row in rows}


def current_state(instance: ProcessInstance) -> str:
    """The state including changes made in this transaction but not yet written."""
    changed = uow.pending().instance_changes.get(instance.id, {})
    return str(changed.get("state", instance.state))


def workflow_of(instance: ProcessInstance) -> Any:
    stepped = uow.pending().workflows.get(instance.id)
    if stepped is not None:  # already stepped in this transaction, not yet serialized
        return stepped[1]
    workflow = _cached(instance)
    if workflow is None:
        workflow = runtime.restore(definitions.spec_by_id(instance.definition_id),
                                   document(instance))
    return workflow


def document(instance: ProcessInstance) -> str:
    """The instance's stored workflow, serialized. One stored deferred (the DHCP fast path's
    instances, `runtime.deferred`) is stamped now from the values it was stored with: its
    request and its id."""
    return runtime.materialize(definitions.spec_by_id(instance.definition_id),
                               instance.workflow,
                               {**dict(instance.request or {}), "instance_id": instance.id})


# --- starting ------------------------------------------------------------------------------


def _text(body: Mapping[str, Any], name: str, *, required: bool = False,
          limit: int = 255) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise Invalid(f"{name} is required", code="invalid_request",
                          details=[{"field": name, "message": "required"}])
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise Invalid(f"{name} must be text of at most {limit} characters",
                      code="invalid_request", details=[{"field": name, "message": "not text"}])
    return value


def lease_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The validated `lease_request` process variable of `POST /leases`."""
    if not isinstance(body, Mapping):
        raise Invalid("the request body must be a JSON object", code="invalid_request")
    known = {"subnet", "client_id", "hostname", "owner", "requested_ip", "hwaddr"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(unknown)}", code="invalid_request",
                      details=[{"field": f, "message": "unknown field"} for f in unknown])
    subnet_ref = body.get("subnet")
    if not isinstance(subnet_ref, str | int) or isinstance(subnet_ref, bool):
        raise Invalid("subnet is required (a CIDR or an id)", code="invalid_request",
                      details=[{"field": "subnet", "message": "required"}])
    try:
        subnet = subnets.resolve(subnet_ref)
    except NotFound as exc:
        raise Invalid(exc.message, code="unknown_subnet",
                      details=[{"field": "subnet", "message": exc.message}]) from None
    request: dict[str, Any] = {
        "subnet": subnet.cidr, "client_id": _text(body, "client_id", required=True),
        "hostname": _text(body, "hostname"), "owner": _text(body, "owner"),
        "hwaddr": _text(body, "hwaddr", limit=64),
        "requested_ip": _text(body, "requested_ip", limit=15)}
    if request["requested_ip"]:
        try:
            parse_address(request["requested_ip"], field="requested_ip")
        except IpamError as exc:
            raise Invalid(str(exc), code="invalid_request",
                          details=[{"field": "requested_ip", "message": str(exc)}]) from None
    request["_subnet_id"] = subnet.id
    return request


def start_lease(body: Mapping[str, Any], *, actor: str) -> int:
    """The new instance's id (see `start_leases`)."""
    outcome = start_leases([(body, actor)])[0]
    if isinstance(outcome, LeaseflowError):
        raise outcome
    return outcome


def start_leases(requests: Sequence[tuple[Mapping[str, Any], str]]
                 ) -> list[int | LeaseflowError]:
    """Accept one lease instance per (body, actor): its id, or, for a body that fails its
    checks, its error in its place (see `accept_many` for what accepting stores)."""
    definition = definitions.active()
    definitions.spec_by_id(definition.id)  # a definition that does not parse fails here
    outcomes: list[int | LeaseflowError] = []
    accepted: list[tuple[int, Accepted]] = []  # (place in outcomes, what to store)
    for body, actor in requests:
        try:
            request = lease_request(body)
        except LeaseflowError as exc:
            outcomes.append(exc)
            continue
        accepted.append((len(outcomes), Accepted(
            request=request, actor=actor, subnet_id=request.pop("_subnet_id"),
            client_id=request["client_id"])))
        outcomes.append(0)  # the instance's id, below
    for (place, _), instance_id in zip(accepted, accept_many(definition,
                                                             [a for _, a in accepted]),
                                       strict=True):
        outcomes[place] = instance_id
    return outcomes


@dataclass(frozen=True, kw_only=True, slots=True)
class Accepted:
    """One instance to store: its `lease_request`, who asked, and the row's keys."""

    request: dict[str, Any]
    actor: str
    subnet_id: int
    client_id: str
    lease_id: int | None = None  # set when the lease exists already (DHCP fast path)


# What storing an instance needs of its process version: an ORM row or the fast path's
# `definitions.Current`.
Version = ProcessDefinition | definitions.Current


def accept_many(definition: Version, entries: Sequence[Accepted], *,
                ids_taken: tuple[Sequence[int], Sequence[int]] | None = None,
                record: bool = True) -> list[int]:
    """Store one instance of `definition` per entry, with an `engine.start` job each; their
    ids (`ids_taken`: the instances' and jobs' ids, if the caller took them from the
    sequences already, see `ids.allocate_pair`).

    The start event is an asynchronous continuation (Camunda's asyncBefore): this
    transaction stores each instance with its request and an `engine.start` job in the
    outbox, and a worker runs the engine from the start event on (`begin`). The caller's
    path stays short, and a lease's first engine steps, its reservation and its commit run
    in one worker transaction with one save of the workflow.

    With ids from the database's sequence (PostgreSQL), the instances and jobs are plain
    rows that go in with the unit of work's other rows (COPY, parents first), not ORM
    objects: nothing in the accepting transaction reads them back. Without (SQLite), the
    instances are flushed to get their ids.

    `record`: each start gets its own ledger entry; False where another entry names the
    instance already (a lease's commit on the DHCP fast path, `dora`).
    """
    if not entries:
        return []
    taken = ids_taken or ids.allocate_pair(ProcessInstance, ServiceJob, len(entries))
    ids_, job_ids = (list(taken[0]), list(taken[1])) if taken else (None, None)
    now = utcnow()
    deadline = now + timedelta(seconds=current_app.config["LEASEFLOW"].job_timeout)
    if ids_ is None or job_ids is None:
        ids_ = [row.id for row in _instance_rows(definition, entries)]
    else:
        for entry, instance_id in zip(entries, ids_, strict=True):
            uow.add_row(_table, _instance_row(definition, entry, instance_id, now))
    pending = uow.pending()
    for place, (entry, instance_id) in enumerate(zip(entries, ids_, strict=True)):
        if record:
            _record_start(definition, entry, instance_id)
        job = {"instance_id": instance_id, "task_id": START, "task_name": START,
               "operation": START, "params": {}, "attempt": 1, "max_attempts": 1,
               "backoff_base": 0, "status": "queued", "queue": "default", "deliveries": 0,
               "not_before": now, "deadline": deadline, "created_at": now}
        if job_ids is None:
            pending.new_jobs.append(ServiceJob(**job))
        else:
            uow.add_row(ServiceJob.__table__, {"id": job_ids[place], **job})
            uow.enqueue(job_ids[place])
    return ids_


def _instance_row(definition: Version, entry: Accepted, instance_id: int,
                  now: datetime, *, workflow: str = "", wake_at: datetime | None = None
                  ) -> dict[str, Any]:
    """The row of a new instance: running with no workflow yet (a start job will run it),
    or waiting with its `workflow` already stepped (`store_started`). Its empty `outcome`
    is the column's default, taken once for the rows of one statement."""
    return {"id": instance_id, "definition_id": definition.id,
            "state": "waiting" if workflow else "running",
            "request": entry.request, "workflow": workflow, "client_id": entry.client_id,
            "subnet_id": entry.subnet_id, "lease_id": entry.lease_id, "wake_at": wake_at,
            "version": 1, "created_at": now, "updated_at": now}


def _instance_rows(definition: Version,
                   entries: Sequence[Accepted]) -> list[ProcessInstance]:
    rows = [ProcessInstance(definition_id=definition.id, state="running",
                            request=entry.request, workflow="", client_id=entry.client_id,
                            subnet_id=entry.subnet_id, lease_id=entry.lease_id)
            for entry in entries]
    db.session.add_all(rows)
    db.session.flush()  # the ids, for the jobs (or workflows) that reference them
    return rows


def _record_start(definition: Version, entry: Accepted, instance_id: int) -> None:
    uow.record(kind="instance.start", subject=f"instance/{instance_id}", actor=entry.actor,
               payload={"process": definitions.label(definition.key, definition.version),
                        "request": {**entry.request, "instance_id": instance_id}})


StartedState = Callable[[int, "Accepted"], tuple[str, "datetime | None"]]


def store_started(definition: Version, entries: Sequence[Accepted],
                  started: StartedState, *,
                  instance_ids: Sequence[int] | None = None) -> list[int]:
    """Store one instance per entry already waiting where its engine run would have left
    it: `started(instance_id, entry)` gives its serialized workflow and next wake-up (from
    an engine snapshot, `runtime.stamp`). No `engine.start` job, no worker: the same rows a
    worker's first step would have written. Their ids (`instance_ids` if taken already).
    No ledger entry: the caller's names them (on the DHCP fast path, each lease's
    commit names its instance, `dora`)."""
    if not entries:
        return []
    ids_ = list(instance_ids) if instance_ids is not None else \
        ids.allocate(ProcessInstance, len(entries))
    now = utcnow()
    if ids_ is None:  # SQLite: the ids come with the insert, the workflows right after
        rows = _instance_rows(definition, entries)
        for row, entry in zip(rows, entries, strict=True):
            row.workflow, row.wake_at = started(row.id, entry)
            row.state = "waiting"
        ids_ = [row.id for row in rows]
    else:
        for entry, instance_id in zip(entries, ids_, strict=True):
            workflow, wake_at = started(instance_id, entry)
            uow.add_row(_table, _instance_row(definition, entry, instance_id, now,
                                              workflow=workflow, wake_at=wake_at))
    return ids_


def begin(instance: ProcessInstance) -> None:
    """Run the engine from the start event (the `engine.start` job); once only."""
    if current_state(instance) in FINAL or instance.workflow or \
            instance.id in uow.pending().workflows:
        return  # a second delivery of the start job: the instance has started already
    request = {**dict(instance.request or {}), "instance_id": instance.id}
    try:
        workflow, report = runtime.start(definitions.spec_by_id(instance.definition_id),
                                         {"lease_request": request})
    except runtime.EngineError as exc:  # e.g. an expression of the diagram failed
        _fail(instance, exc)
        return
    persist_step(instance, workflow, report)


# --- persisting a step ---------------------------------------------------------------------


def persist_step(instance: ProcessInstance, workflow: Any, report: runtime.StepReport) -> None:
    # The workflow itself is serialized once, when the unit of work ends (flush_workflows),
    # however many steps it took in this transaction.
    uow.pending().workflows[instance.id] = (instance, workflow)
    now = utcnow()
    timeout = timedelta(seconds=current_app.config["LEASEFLOW"].job_timeout)
    jobs = []
    for parked in report.parked:
        from ..operations import get

        try:
            queue = get(parked.operation).queue
        except Exception:  # unknown operations fail when the job runs, on the error path
            queue = "default"
        jobs.append(ServiceJob(
            instance_id=instance.id, task_id=parked.task_id, task_name=parked.task_name,
            operation=parked.operation, params=parked.params, attempt=1,
            max_attempts=(parked.retries or 0) + 1, backoff_base=parked.backoff_base or 0,
            status="queued", queue=queue, not_before=now, deadline=now + timeout))
    # The jobs join the session when the unit of work ends (flush_workflows); a job that
    # runs ahead in this transaction is inserted once, already finished.
    for task in report.user_tasks:
        exists = db.session.execute(select(HumanTask.id).where(
            HumanTask.instance_id == instance.id, HumanTask.task_id == task.task_id,
            HumanTask.state == "open")).first()
        if exists is None:
            db.session.add(HumanTask(instance_id=instance.id, task_id=task.task_id,
                                     task_name=task.task_name, title=task.title,
                                     form=task.form, data=task.data))
    # Row changes wait for flush_workflows too: one UPDATE per instance per transaction.
    changes = uow.pending().instance_changes.setdefault(instance.id, {})
    changes["wake_at"] = None if report.completed else report.wake_at
    if report.completed:
        outcome = report.data.get("outcome") or {"state": "completed"}
        changes["state"] = outcome.get("state", "completed") \
            if outcome.get("state") in FINAL else "completed"
        changes["outcome"] = outcome
    else:
        changes["state"] = "waiting"
    uow.pending().new_jobs.extend(jobs)
    uow.touch(instance.id)


def flush_workflows(pending: uow.Pending) -> None:
    """Serialize each changed workflow once, write the changed instance rows with one
    executemany, keep the workflows for the next step in this process, and read the ids of
    the jobs this transaction parked."""
    dirty = pending.workflows
    if not dirty and not pending.new_jobs:
        return
    flush_new_jobs(pending)  # ORM changes first: new jobs get their ids, direct edits land
    if dirty:
        _write_instances(pending, [instance for instance, _ in dirty.values()],
                         {key: runtime.serialize(workflow)
                          for key, (_, workflow) in dirty.items()})
    for instance, workflow in dirty.values():
        _remember(instance, workflow)


def flush_new_jobs(pending: uow.Pending) -> None:
    """Insert the jobs the steps of this transaction parked (persist_step keeps them out of
    the session until now, so that a job run ahead is inserted once, finished) and enqueue
    their ids for dispatch after commit."""
    db.session.add_all(pending.new_jobs)
    db.session.flush()
    pending.jobs.extend(job.id for job in pending.new_jobs)
    pending.new_jobs.clear()


_CHANGED = ("workflow", "state", "wake_at", "outcome", "lease_id", "version", "updated_at")
_table = ProcessInstance.__table__
_UPDATE = update(_table).where(
    _table.c.id == bindparam("b_id"), _table.c.version == bindparam("b_seen")
).values(**{name: bindparam(f"b_{name}") for name in _CHANGED})


def _write_instances(pending: uow.Pending, rows: list[ProcessInstance],
                     workflows: dict[int, str]) -> None:
    """One UPDATE ... WHERE id AND version per instance, sent as a single executemany (the
    ORM sends versioned rows one statement each). The version check stays: a row another
    transaction changed since we read it fails the whole unit of work."""
    now = utcnow()
    changed = []
    for instance in rows:
        values = {"workflow": workflows[instance.id],
                  **pending.instance_changes.get(instance.id, {}),
                  "version": instance.version + 1, "updated_at": now}
        for name in _CHANGED:
            if name not in values:
                values[name] = getattr(instance, name)
        changed.append((instance, values))
    result = db.session.execute(_UPDATE, [
        {"b_id": instance.id, "b_seen": instance.version,
         **{f"b_{name}": value for name, value in values.items()}}
        for instance, values in changed])
    if cast(CursorResult[Any], result).rowcount not in (-1, len(changed)):
        raise Conflict("a process instance changed under this transaction",
                       code="instance_changed")
    for instance, values in changed:  # the objects now match their rows
        for name, value in values.items():
            set_committed_value(instance, name, value)


def _fail(instance: ProcessInstance, exc: Exception) -> None:
    """The engine raised: the instance ends `failed` with the reason, never half-stepped."""
    log.warning("instance %s failed: %s", instance.id, exc)
    with _cache_lock:
        _cache.pop(_key(instance.id), None)
    # An earlier step of this transaction may have queued its write of the row (state,
    # workflow); the failure replaces it, or flush_workflows would undo the failure.
    pending = uow.pending()
    pending.workflows.pop(instance.id, None)
    pending.instance_changes.pop(instance.id, None)
    instance.state = "failed"
    instance.outcome = {"state": "failed", "reason": "engine_error", "message": str(exc)}
    instance.wake_at = None
    uow.record(kind="instance.fail", subject=f"instance/{instance.id}", actor="engine",
               payload={"message": str(exc)})
    uow.touch(instance.id)


# --- resuming ------------------------------------------------------------------------------


def resume_with_result(instance: ProcessInstance, job: ServiceJob,
                       result: Mapping[str, Any]) -> None:
    if current_state(instance) in FINAL:
        return
    workflow = workflow_of(instance)
    try:
        report = runtime.complete_service_task(workflow, job.task_id, result)
    except runtime.NotWaiting:
        log.info("late result for job %s ignored", job.id)
        return
    except runtime.EngineError as exc:
        _fail(instance, exc)
        return
    if job.operation == "ipam.reserve" and isinstance(result.get("lease_id"), int):
        uow.pending().instance_changes.setdefault(instance.id, {})["lease_id"] = \
            result["lease_id"]
    persist_step(instance, workflow, report)


def resume_with_error(instance: ProcessInstance, job: ServiceJob, *, code: str, message: str,
                      kind: str, details: Mapping[str, Any] | None = None) -> None:
    if current_state(instance) in FINAL:
        return
    workflow = workflow_of(instance)
    try:
        report = runtime.fail_service_task(
            workflow, job.task_id, code=code, message=message,
            details={"kind": kind, "attempts": job.attempt, **dict(details or {})})
    except runtime.NotWaiting:
        return
    except runtime.EngineError as exc:
        _fail(instance, exc)
        return
    persist_step(instance, workflow, report)


def backoff_seconds(job: ServiceJob) -> float:
    """Exponential backoff with full jitter on top of the base: base * 2^(n-1) * [1, 1.5)."""
    base = max(job.backoff_base, 0)
    return float(base * (2 ** (job.attempt - 1))) * (1 + _jitter.random() / 2)


def send_message(instance_id: int, name: str, payload: Mapping[str, Any], *,
                 actor: str) -> ProcessInstance:
    instance = lock(instance_id)
    if not instance.workflow and instance.id not in uow.pending().workflows:
        begin(instance)  # accepted, not started yet: its start job will find it started
    if current_state(instance) in FINAL:
        raise Conflict(f"instance {instance_id} has ended ({current_state(instance)})",
                       code="instance_ended")
    workflow = workflow_of(instance)
    try:
        report = runtime.send_message(workflow, name, payload)
    except runtime.NotWaiting:
        _remember(instance, workflow)
        raise Conflict(f"instance {instance_id} is not waiting for {name}",
                       code="not_waiting") from None
    except runtime.EngineError as exc:
        _fail(instance, exc)
        return instance
    uow.record(kind=f"instance.message.{name}", subject=f"instance/{instance.id}",
               actor=actor, payload=dict(payload))
    persist_step(instance, workflow, report)
    return instance


def wake(instance_id: int) -> None:
    instance = lock(instance_id)
    if instance.state in FINAL or instance.wake_at is None or instance.wake_at > utcnow():
        return
    workflow = workflow_of(instance)
    try:
        report = runtime.fire_timers(workflow)
    except runtime.EngineError as exc:
        _fail(instance, exc)
        return
    persist_step(instance, workflow, report)


def due_for_wake(limit: int = 500) -> list[int]:
    return list(db.session.execute(
        select(ProcessInstance.id).where(ProcessInstance.wake_at <= utcnow(),
                                         ProcessInstance.state == "waiting")
        .order_by(ProcessInstance.wake_at).limit(limit)).scalars())


# --- people --------------------------------------------------------------------------------


def complete_task(task_id: int, *, action: Any, comment: Any, user: str) -> HumanTask:
    if action not in ACTIONS:
        raise Invalid(f"action must be one of {', '.join(ACTIONS)}", code="invalid_request",
                      details=[{"field": "action", "allowed": list(ACTIONS)}])
    if comment is not None and (not isinstance(comment, str) or len(comment) > 2000):
        raise Invalid("comment must be text of at most 2000 characters",
                      code="invalid_request", details=[{"field": "comment"}])
    task = db.session.get(HumanTask, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}", code="unknown_task")
    instance = lock(task.instance_id)
    db.session.refresh(task)
    if task.state != "open":
        raise Conflict(f"task {task_id} is already {task.state}", code="task_done")
    workflow = workflow_of(instance)
    try:
        report = runtime.complete_user_task(workflow, task.task_id,
                                            {"action": action, "comment": comment})
    except runtime.NotWaiting:
        raise Conflict(f"task {task_id} is no longer open in its process",
                       code="task_done") from None
    except runtime.EngineError as exc:
        _fail(instance, exc)
        report = None
    task.state, task.action, task.comment = "completed", action, comment
    task.completed_by, task.completed_at = user, utcnow()
    uow.record(kind="task.complete", subject=f"instance/{instance.id}", actor=user,
               payload={"task": task.task_name, "action": action, "comment": comment,
                        "before": "open", "after": "completed"})
    if report is not None:
        persist_step(instance, workflow, report)
    return task


# --- reading -------------------------------------------------------------------------------


def get(instance_id: int) -> ProcessInstance:
    instance = db.session.get(ProcessInstance, instance_id)
    if instance is None:
        raise NotFound(f"no instance {instance_id}", code="unknown_instance")
    return instance


def describe(instance: ProcessInstance, *, with_tasks: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": instance.id, "process": instance.definition.key,
        "version": instance.definition.version, "state": instance.state,
        "outcome": instance.outcome, "request": instance.request,
        "lease_id": instance.lease_id,
        "wake_at": instance.wake_at.isoformat() if instance.wake_at else None,
        "created_at": instance.created_at.isoformat(),
        "updated_at": instance.updated_at.isoformat()}
    if with_tasks and instance.workflow:
        workflow = runtime.restore(definitions.spec_by_id(instance.definition_id),
                                   document(instance))
        out["tasks"] = runtime.task_states(workflow)
        out["jobs"] = [{"id": j.id, "task": j.task_name, "operation": j.operation,
                        "attempt": j.attempt, "status": j.status, "error": j.error}
                       for j in db.session.execute(select(ServiceJob).where(
                           ServiceJob.instance_id == instance.id)
                           # by creation: a job that ran ahead is inserted when it finished
                           .order_by(ServiceJob.created_at, ServiceJob.id)).scalars()]
    return out


def search(*, state: str | None = None, process: str | None = None,
           limit: int = 200) -> list[ProcessInstance]:
    from ..models import ProcessDefinition

    query = select(ProcessInstance)
    if state:
        query = query.where(ProcessInstance.state == state)
    if process:
        query = query.join(ProcessDefinition).where(ProcessDefinition.key == process)
    return list(db.session.execute(query.order_by(ProcessInstance.id.desc()).limit(limit))
                .unique().scalars())


def describe_task(task: HumanTask) -> dict[str, Any]:
    return {"id": task.id, "instance_id": task.instance_id, "task": task.task_name,
            "title": task.title, "form": task.form, "state": task.state,
            "error": task.data.get("last_error"), "request": task.data.get("lease_request"),
            "actions": list(ACTIONS), "action": task.action, "comment": task.comment,
            "completed_by": task.completed_by,
            "created_at": task.created_at.isoformat(),
            "completed_at": task.completed_at.isoformat() if task.completed_at else None}


def open_tasks(state: str = "open") -> list[HumanTask]:
    return list(db.session.execute(select(HumanTask).where(HumanTask.state == state)
                                   .order_by(HumanTask.id)).scalars())
