"""Versions of a process side by side, and moving running instances between them.

An admin first asks for a dry run: every instance of a version, each with whether it can move
to the target version and, if not, why (the policy is `app.engine.migration`'s). A real run
moves the movable ones, one row lock at a time, keeps each instance's previous state in
`process_migration_items` and records every move in the audit log with before/after. A
revert puts back the instances that have not done anything since they moved; the others are
reported as kept, because reverting them would throw away what they did on the new version.

Like every service, nothing here commits: the caller's unit of work does.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from ..engine import canonical, runtime
from ..engine import migration as engine_migration
from ..errors import Conflict, Invalid, NotFound
from ..extensions import db
from ..models import HumanTask, ProcessDefinition, ProcessInstance, ServiceJob, utcnow
from ..models_migration import ProcessMigration, ProcessMigrationItem
from . import definitions, instances, uow


def _versions_of(key: str) -> list[ProcessDefinition]:
    rows = list(db.session.execute(select(ProcessDefinition).where(
        ProcessDefinition.key == key).order_by(ProcessDefinition.version)).scalars())
    if not rows:
        raise NotFound(f"no process {key}", code="unknown_process")
    return rows


def versions(key: str) -> list[dict[str, Any]]:
    """Every version of a process with how many of its instances are in each state."""
    rows = _versions_of(key)
    counts: dict[int, dict[str, int]] = {}
    for definition_id, state, count in db.session.execute(
            select(ProcessInstance.definition_id, ProcessInstance.state, func.count())
            .where(ProcessInstance.definition_id.in_([r.id for r in rows]))
            .group_by(ProcessInstance.definition_id, ProcessInstance.state)):
        counts.setdefault(definition_id, {})[state] = count
    return [{**definitions.describe(row), "instances": counts.get(row.id, {})} for row in rows]


def version_number(raw: Any, name: str) -> int:
    """A version number from a query string or a JSON body (422 naming the field if not)."""
    if isinstance(raw, bool) or raw is None or raw == "":
        raise Invalid(f"{name} (a version number) is required", code="invalid_request",
                      details=[{"field": name, "message": "required"}])
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise Invalid(f"{name} must be a version number", code="invalid_request",
                      details=[{"field": name, "message": "not a whole number"}]) from None
    if value < 1 or isinstance(raw, float) and raw != value:
        raise Invalid(f"{name} must be a version number (1, 2, ...)", code="invalid_request",
                      details=[{"field": name, "message": "not a version number"}])
    return value


def diff(key: str, from_version: int, to_version: int) -> dict[str, Any]:
    """The semantic diff of two versions: BPMN elements added, removed and changed."""
    old = definitions.get_version(key, from_version)
    new = definitions.get_version(key, to_version)
    result = canonical.diff_definitions(old.xml, new.xml)
    return {"key": key, "from": from_version, "to": to_version, **result.to_dict()}


# --- migrations ----------------------------------------------------------------------------


def _label(definition: ProcessDefinition) -> str:
    return f"v{definition.version}"


def _pair(key: str, from_version: int, to_version: int) -> tuple[ProcessDefinition,
                                                                  ProcessDefinition]:
    if from_version == to_version:
        raise Invalid("from and to are the same version", code="invalid_request",
                      details=[{"field": "to", "message": "choose another version"}])
    return definitions.get_version(key, from_version), definitions.get_version(key, to_version)


def _blocked(code: str, message: str) -> dict[str, Any]:
    return {"movable": False, "reasons": [{"code": code, "element": None, "message": message}],
            "reentered": [], "changed": []}


def _plan_for(instance: ProcessInstance, source: ProcessDefinition,
              target: ProcessDefinition) -> dict[str, Any]:
    if instance.definition_id != source.id:
        return _blocked("moved_meanwhile", f"the instance is no longer on {_label(source)}")
    if instance.state in instances.FINAL:
        return _blocked("ended", f"the instance has ended ({instance.state})")
    if instance.state != "waiting" or not instance.workflow:
        return _blocked("busy", f"the instance is {instance.state}; try again")
    plan = engine_migration.plan(definitions.spec_by_id(source.id), instances.document(instance),
                                 definitions.spec_by_id(target.id), version_label=_label(target))
    return plan.to_dict()


def _instance_ids(source: ProcessDefinition) -> list[int]:
    return list(db.session.execute(select(ProcessInstance.id).where(
        ProcessInstance.definition_id == source.id).order_by(ProcessInstance.id)).scalars())


def dry_run(key: str, from_version: int, to_version: int) -> dict[str, Any]:
    """Per instance of `from_version`: could it move to `to_version`, and why not. No change."""
    source, target = _pair(key, from_version, to_version)
    items = []
    for instance_id in _instance_ids(source):
        instance = db.session.get(ProcessInstance, instance_id)
        assert instance is not None
        items.append({"instance_id": instance_id, "state": instance.state,
                      **_plan_for(instance, source, target)})
    return {"id": None, "dry_run": True, "key": key, "from": from_version, "to": to_version,
            "movable": sum(1 for i in items if i["movable"]),
            "blocked": sum(1 for i in items if not i["movable"]), "instances": items}


def _ids_of(model: Any, instance_id: int) -> set[int]:
    return set(db.session.execute(select(model.id).where(
        model.instance_id == instance_id)).scalars())


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def migrate(key: str, from_version: int, to_version: int, *, actor: str) -> ProcessMigration:
    """Move every movable instance of `from_version` to `to_version`, each under its row lock."""
    source, target = _pair(key, from_version, to_version)
    run = ProcessMigration(key=key, from_definition_id=source.id, to_definition_id=target.id,
                           from_version=from_version, to_version=to_version, actor=actor,
                           state="applied", moved=0, skipped=0)
    db.session.add(run)
    db.session.flush()
    old_spec = definitions.spec_by_id(source.id)
    new_spec = definitions.spec_by_id(target.id)
    for instance_id in _instance_ids(source):
        instance = instances.lock(instance_id)  # re-read under the lock: decide on fresh state
        plan = _plan_for(instance, source, target)
        workflow = report = None
        if plan["movable"]:
            try:
                workflow, report = engine_migration.migrate(
                    old_spec, instances.document(instance), new_spec,
                    version_label=_label(target))
            except engine_migration.MigrationError as exc:
                plan = exc.plan.to_dict()
        if workflow is None or report is None:
            run.skipped += 1
            db.session.add(ProcessMigrationItem(migration_id=run.id, instance_id=instance_id,
                                                outcome="skipped", reasons=plan["reasons"],
                                                created_jobs=[], created_tasks=[]))
            continue
        before = {"process": f"{key}/{_label(source)}", "definition_id": source.id,
                  "state": instance.state, "wake_at": _iso(instance.wake_at)}
        item = ProcessMigrationItem(
            migration_id=run.id, instance_id=instance_id, outcome="moved", reasons=[],
            workflow_before=instance.workflow, state_before=instance.state,
            wake_at_before=instance.wake_at, created_jobs=[], created_tasks=[])
        jobs_before = _ids_of(ServiceJob, instance_id)
        tasks_before = _ids_of(HumanTask, instance_id)
        instance.definition = target
        # The same bookkeeping as any engine step: workflow, jobs, inbox tasks, next wake-up.
        instances.persist_step(instance, workflow, report)
        instances.flush_new_jobs(uow.pending())  # the jobs it parked, with their ids
        item.created_jobs = sorted(_ids_of(ServiceJob, instance_id) - jobs_before)
        item.created_tasks = sorted(_ids_of(HumanTask, instance_id) - tasks_before)
        item.checksum_after = runtime.checksum(runtime.serialize(workflow))
        db.session.add(item)
        run.moved += 1
        uow.record(kind="instance.migrate", subject=f"instance/{instance_id}", actor=actor,
                   payload={"migration": run.id, "before": before,
                            "after": {"process": f"{key}/{_label(target)}",
                                      "definition_id": target.id, "state": instance.state,
                                      "wake_at": _iso(instance.wake_at)},
                            "reentered": plan["reentered"], "changed": plan["changed"]})
    uow.record(kind="process.migrate", subject=f"{key}/{_label(source)}", actor=actor,
               payload={"migration": run.id, "before": from_version, "after": to_version,
                        "moved": run.moved, "skipped": run.skipped})
    db.session.flush()
    return run


def get(key: str, migration_id: int) -> ProcessMigration:
    run = db.session.get(ProcessMigration, migration_id)
    if run is None or run.key != key:
        raise NotFound(f"no migration {migration_id} of process {key}", code="unknown_migration")
    return run


def listing(key: str) -> list[dict[str, Any]]:
    _versions_of(key)
    rows = db.session.execute(select(ProcessMigration).where(ProcessMigration.key == key)
                              .order_by(ProcessMigration.id.desc())).scalars()
    return [describe(row) for row in rows]


def revert(key: str, migration_id: int, *, actor: str) -> ProcessMigration:
    """Put the moved instances back where they were, unless they have moved on since."""
    run = get(key, migration_id)
    if run.state == "reverted":
        raise Conflict(f"migration {migration_id} was already reverted", code="already_reverted")
    source = db.session.get(ProcessDefinition, run.from_definition_id)
    target = db.session.get(ProcessDefinition, run.to_definition_id)
    assert source is not None and target is not None
    items = db.session.execute(select(ProcessMigrationItem).where(
        ProcessMigrationItem.migration_id == run.id, ProcessMigrationItem.outcome == "moved")
        .order_by(ProcessMigrationItem.instance_id)).scalars().all()
    for item in items:
        instance = instances.lock(item.instance_id)
        if instance.definition_id != target.id or \
                runtime.checksum(instance.workflow) != item.checksum_after:
            item.outcome = "kept"
            item.reasons = [{"code": "changed_since", "element": None,
                             "message": f"the instance has moved on since the migration (now "
                                        f"{instance.state}); reverting would lose that"}]
            continue
        _cancel_created(item)
        before = {"process": f"{key}/{_label(target)}", "definition_id": target.id,
                  "state": instance.state, "wake_at": _iso(instance.wake_at)}
        instance.definition = source
        instance.workflow = item.workflow_before or ""
        instance.state = item.state_before or "waiting"
        instance.wake_at = item.wake_at_before
        uow.touch(instance.id)
        item.outcome = "reverted"
        uow.record(kind="instance.migrate.revert", subject=f"instance/{instance.id}",
                   actor=actor, payload={
                       "migration": run.id, "before": before,
                       "after": {"process": f"{key}/{_label(source)}",
                                 "definition_id": source.id, "state": instance.state,
                                 "wake_at": _iso(instance.wake_at)}})
    run.state, run.reverted_by, run.reverted_at = "reverted", actor, utcnow()
    uow.record(kind="process.migrate.revert", subject=f"{key}/{_label(target)}", actor=actor,
               payload={"migration": run.id, "before": run.to_version,
                        "after": run.from_version,
                        "reverted": sum(1 for i in items if i.outcome == "reverted"),
                        "kept": sum(1 for i in items if i.outcome == "kept")})
    db.session.flush()
    return run


def _cancel_created(item: ProcessMigrationItem) -> None:
    """Jobs and inbox tasks the move created belong to the new version's state: withdraw them."""
    for job in db.session.execute(select(ServiceJob).where(
            ServiceJob.id.in_(item.created_jobs or []), ServiceJob.status == "queued")).scalars():
        job.status, job.error, job.finished_at = "cancelled", "migration reverted", utcnow()
    for task in db.session.execute(select(HumanTask).where(
            HumanTask.id.in_(item.created_tasks or []), HumanTask.state == "open")).scalars():
        task.state = "cancelled"


def describe(run: ProcessMigration, *, with_items: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": run.id, "dry_run": False, "key": run.key, "from": run.from_version,
        "to": run.to_version, "state": run.state, "actor": run.actor, "moved": run.moved,
        "skipped": run.skipped, "created_at": run.created_at.isoformat(),
        "reverted_by": run.reverted_by, "reverted_at": _iso(run.reverted_at)}
    if with_items:
        rows = db.session.execute(select(ProcessMigrationItem).where(
            ProcessMigrationItem.migration_id == run.id)
            .order_by(ProcessMigrationItem.instance_id)).scalars()
        out["instances"] = [{"instance_id": r.instance_id, "outcome": r.outcome,
                             "reasons": r.reasons} for r in rows]
    return out


def request_of(data: Mapping[str, Any]) -> tuple[int, int, bool]:
    """`{from, to, dry_run}` of `POST /processes/<key>/migrations`."""
    unknown = sorted(set(data) - {"from", "to", "dry_run"})
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(unknown)}", code="invalid_request",
                      details=[{"field": f, "message": "unknown field"} for f in unknown])
    dry = data.get("dry_run", True)
    if not isinstance(dry, bool):
        raise Invalid("dry_run must be true or false", code="invalid_request",
                      details=[{"field": "dry_run", "message": "not a boolean"}])
    return version_number(data.get("from"), "from"), version_number(data.get("to"), "to"), dry
