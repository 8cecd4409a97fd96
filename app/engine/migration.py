"""Moving a running instance to another version of its process.

SpiffWorkflow 3.2 ships the mechanics (`SpiffWorkflow.bpmn.util.diff`: `diff_workflow` aligns
the instance's tasks with the new version's elements, `migrate_workflow` swaps the specs and
re-predicts what is waiting). It does not say whether a move is *safe*; that policy lives
here, next to the mechanics, so services ask two questions (`plan`, `migrate`) and never touch
SpiffWorkflow themselves.

An instance may move when nothing that already happened or is happening now changes under
it. It may not when:
- it has ended (`ended`);
- a task it has run, is running or waits in has no counterpart in the new version
  (`removed`): restoring it on the new version would have no element for that task;
- a service step it is running right now (a job in the outbox) changed (`running_step_changed`):
  the job was built from the old definition and its result would land in the new one;
- a user task open in the inbox changed (`open_task_changed`): a person would act on a form
  that is no longer the one they see;
- the migrated state does not restore on the new version (`does_not_fit`), the last check,
  made by really migrating a copy.
Waiting events (timers, messages, event gateways) are re-entered under the new version, so
they may change freely: that is what a new version of the lease lifecycle usually changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from SpiffWorkflow.bpmn.util.diff import diff_workflow, migrate_workflow
from SpiffWorkflow.spiff.specs.defaults import UserTask
from SpiffWorkflow.util.task import TaskState

from . import runtime

# Tasks the engine only predicts (they may never run): reset with their waiting parent.
_PREDICTED = TaskState.PREDICTED_MASK | TaskState.FUTURE
# What migrate_workflow re-predicts under the new version.
_RESET = TaskState.READY | TaskState.WAITING


class MigrationError(runtime.EngineError):
    """An instance cannot move to the requested version."""

    def __init__(self, message: str, plan: MigrationPlan) -> None:
        super().__init__(message)
        self.plan = plan
        self.blockers = plan.blockers


@dataclass(frozen=True, kw_only=True)
class Blocker:
    """One reason why an instance cannot move, naming the BPMN element when there is one."""

    code: str
    element: str | None
    message: str


@dataclass(frozen=True, kw_only=True)
class MigrationPlan:
    movable: bool
    blockers: tuple[Blocker, ...] = ()
    # Elements the instance waits in that will be re-entered under the new version.
    reentered: tuple[str, ...] = ()
    # Elements changed in the new version that this instance has already passed or will meet.
    changed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"movable": self.movable,
                "reasons": [{"code": b.code, "element": b.element, "message": b.message}
                            for b in self.blockers],
                "reentered": list(self.reentered), "changed": list(self.changed)}


def _name(task: Any) -> str:
    return str(getattr(task.task_spec, "bpmn_id", None) or task.task_spec.name)


def _state(task: Any) -> str:
    return str(TaskState.get_name(task.state))


def _blockers(diff: Any, version_label: str) -> tuple[list[Blocker], list[str]]:
    """What stops the tasks of one (sub)workflow diff from moving, and what changed."""
    blockers: list[Blocker] = []
    for task in diff.removed:
        if task.has_state(_PREDICTED):
            continue  # dropped when its waiting parent is re-predicted
        blockers.append(Blocker(
            code="removed", element=_name(task),
            message=f"{_name(task)} ({_state(task).lower()}) has no counterpart in "
                    f"{version_label}"))
    changed = []
    for task in diff.changed:
        changed.append(_name(task))
        if task.state == TaskState.STARTED and isinstance(task.task_spec,
                                                          runtime.ParkedServiceTask):
            blockers.append(Blocker(
                code="running_step_changed", element=_name(task),
                message=f"{_name(task)} is running a job built from the old version and "
                        f"changed in {version_label}; migrate once the step is done"))
        elif task.state == TaskState.READY and isinstance(task.task_spec, UserTask):
            blockers.append(Blocker(
                code="open_task_changed", element=_name(task),
                message=f"{_name(task)} is open in the inbox and changed in {version_label}; "
                        f"complete it first"))
    return blockers, changed


def _plan(workflow: Any, new: runtime.ProcessSpec, version_label: str) -> tuple[
        MigrationPlan, Any, dict[str, Any]]:
    top, sub_diffs = diff_workflow(runtime.SERIALIZER.registry, workflow, new.spec,
                                   new.subprocess_specs)
    blockers, changed = _blockers(top, version_label)
    for sp_id, sp_diff in sub_diffs.items():
        if sp_diff is None:
            blockers.append(Blocker(code="removed", element=str(sp_id),
                                    message=f"a running subprocess has no counterpart in "
                                            f"{version_label}"))
            continue
        sub_blockers, sub_changed = _blockers(sp_diff, version_label)
        blockers += sub_blockers
        changed += sub_changed
    reentered = tuple(sorted({_name(t) for t in workflow.get_tasks(state=_RESET)}))
    plan = MigrationPlan(movable=not blockers, blockers=tuple(blockers), reentered=reentered,
                         changed=tuple(sorted(set(changed))))
    return plan, top, sub_diffs


def _apply(workflow: Any, new: runtime.ProcessSpec, top: Any,
           sub_diffs: dict[str, Any]) -> runtime.StepReport:
    migrate_workflow(top, workflow, new.spec)
    _repredict_below_running_steps(workflow, top)
    for sp_id, sp_diff in sub_diffs.items():
        subprocess = workflow.subprocesses[sp_id]
        migrate_workflow(sp_diff, subprocess, new.subprocess_specs[subprocess.spec.name])
    workflow.subprocess_specs = dict(new.subprocess_specs)
    return runtime._step(workflow)


def _repredict_below_running_steps(workflow: Any, top: Any) -> None:
    """Predicted tasks of removed elements below a running step: predict that branch anew.

    migrate_workflow re-predicts below waiting and ready tasks only. A parked service task
    (STARTED) keeps its predicted future, which may name elements the new version no longer
    has; predicting again from the step drops them and adds the new version's path.
    """
    for task in top.removed:
        if task.id not in workflow.tasks or not task.has_state(_PREDICTED):
            continue
        anchor = task.parent
        while anchor is not None and anchor.has_state(_PREDICTED):
            anchor = anchor.parent
        if anchor is not None and anchor.state == TaskState.STARTED:
            anchor.task_spec._predict(anchor, mask=_PREDICTED | TaskState.STARTED)


def plan(old: runtime.ProcessSpec, state: str, new: runtime.ProcessSpec, *,
         version_label: str = "the new version") -> MigrationPlan:
    """Could this stored instance state move from `old` to `new`? (Nothing is changed.)"""
    try:
        _, _, plan_ = _migrated(old, state, new, version_label)
    except MigrationError as exc:
        return exc.plan
    return plan_


def migrate(old: runtime.ProcessSpec, state: str, new: runtime.ProcessSpec, *,
            version_label: str = "the new version") -> tuple[Any, runtime.StepReport]:
    """The instance state moved to `new` and stepped: (workflow, report); MigrationError if not.

    The stored state is restored afresh (never a cached workflow), so a refusal leaves
    nothing changed.
    """
    workflow, report, _ = _migrated(old, state, new, version_label)
    return workflow, report


def _migrated(old: runtime.ProcessSpec, state: str, new: runtime.ProcessSpec,
              version_label: str) -> tuple[Any, runtime.StepReport, MigrationPlan]:
    workflow = runtime.restore(old, state)
    plan_, top, sub_diffs = _plan(workflow, new, version_label)
    if not plan_.movable:
        raise MigrationError(plan_.blockers[0].message, plan_)
    try:
        report = _apply(workflow, new, top, sub_diffs)
        # The real proof: the migrated state must restore on the new version alone.
        runtime.restore(new, runtime.serialize(workflow))
    except (runtime.EngineError, KeyError, AttributeError, TypeError, ValueError) as exc:
        blocker = Blocker(code="does_not_fit", element=None,
                          message=f"the instance's state does not fit {version_label}: "
                                  f"{type(exc).__name__}: {exc}")
        raise MigrationError(blocker.message, MigrationPlan(
            movable=False, blockers=(blocker,), reentered=plan_.reentered,
            changed=plan_.changed)) from None
    return workflow, report, plan_
