"""Engine-level migration policy: which instance states may move to which version, and why.

v1 is the lease lifecycle with a test commit operation; v2 renames the manual-retry user task,
gives the commit step a longer retry policy and notes a release before ending; v3 drops the
"give the reservation back" step of the commit error path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from app.engine import migration, runtime

DATA = Path(__file__).resolve().parents[2] / "data" / "process_admin"
REQUEST = {"lease_request": {"subnet": "10.0.0.0/24", "client_id": "c", "instance_id": 1}}
EXPIRES = "2030-01-01T00:00:00+00:00"


def spec(name: str) -> runtime.ProcessSpec:
    return runtime.load_spec((DATA / f"{name}.bpmn").read_text())


def reserving() -> tuple[object, runtime.StepReport]:
    return runtime.start(spec("flaky_v1"), REQUEST)


def committing() -> tuple[object, runtime.StepReport]:
    workflow, report = reserving()
    return workflow, runtime.complete_service_task(
        workflow, report.parked[0].task_id, {"lease_id": 5, "ip": "10.0.0.5"})


def approving() -> tuple[object, runtime.StepReport]:
    workflow, report = committing()
    report = runtime.fail_service_task(workflow, report.parked[0].task_id,
                                       code="retries_exhausted", message="peer down",
                                       details={"kind": "transient", "ip": "10.0.0.5"})
    assert report.parked[0].task_name == "undo_reserve"
    return workflow, runtime.complete_service_task(workflow, report.parked[0].task_id,
                                                   {"lease_id": 5, "state": "abandoned"})


def bound() -> tuple[object, runtime.StepReport]:
    workflow, report = committing()
    return workflow, runtime.complete_service_task(
        workflow, report.parked[0].task_id, {"lease_id": 5, "expires_at": EXPIRES})


Point = Callable[[], tuple[object, runtime.StepReport]]


@pytest.mark.parametrize(("point", "target", "codes"), [
    (reserving, "flaky_v2", []),
    (reserving, "no_undo_v3", []),  # its predicted future is predicted again on v3
    (committing, "flaky_v2", [("running_step_changed", "commit")]),
    (committing, "no_undo_v3", []),
    (approving, "flaky_v2", [("open_task_changed", "approve_retry")]),
    (approving, "no_undo_v3", [("removed", "undo_reserve")]),
    (bound, "flaky_v2", []),
    (bound, "no_undo_v3", []),
])
def test_plan_says_why_an_instance_cannot_move(point: Point, target: str,
                                               codes: list[tuple[str, str]]) -> None:
    workflow, _ = point()
    state = runtime.serialize(workflow)
    plan = migration.plan(spec("flaky_v1"), state, spec(target), version_label="v2")
    assert [(b.code, b.element) for b in plan.blockers] == codes
    assert plan.movable is (not codes)
    for blocker in plan.blockers:
        assert blocker.element in blocker.message and "v2" in blocker.message
    if codes:
        with pytest.raises(migration.MigrationError) as caught:
            migration.migrate(spec("flaky_v1"), state, spec(target), version_label="v2")
        assert caught.value.blockers == plan.blockers


def test_a_bound_instance_moves_keeps_its_timer_and_finishes_on_v2() -> None:
    workflow, before = bound()
    moved, report = migration.migrate(spec("flaky_v1"), runtime.serialize(workflow),
                                      spec("flaky_v2"))
    assert report.wake_at == before.wake_at and set(report.messages) == set(before.messages)
    restored = runtime.restore(spec("flaky_v2"), runtime.serialize(moved))
    released = runtime.send_message(restored, "lease_release", {"by": "test"})
    [job] = released.parked
    done = runtime.complete_service_task(restored, job.task_id, {"lease_id": 5})
    assert done.completed and done.data["outcome"]["version"] == 2  # v2's new step ran


def test_a_reserving_instance_takes_v3s_error_path() -> None:
    workflow, _ = reserving()
    moved, _ = migration.migrate(spec("flaky_v1"), runtime.serialize(workflow),
                                 spec("no_undo_v3"))
    reserve = next(t for t in runtime.task_states(moved) if t["element"] == "reserve")
    assert reserve["state"] == "STARTED"
    started = [j for j in moved.get_tasks() if j.task_spec.name == "reserve"][0]
    commit = runtime.complete_service_task(moved, str(started.id), {"lease_id": 5})
    failed = runtime.fail_service_task(moved, commit.parked[0].task_id, code="retries_exhausted",
                                       message="peer down", details={"kind": "transient"})
    # v3 has no undo step: the failure goes straight to the manual-retry task
    assert failed.parked == () and [u.task_name for u in failed.user_tasks] == ["approve_retry"]


def test_planning_leaves_the_stored_state_alone() -> None:
    workflow, _ = bound()
    state = runtime.serialize(workflow)
    migration.plan(spec("flaky_v1"), state, spec("flaky_v2"))
    restored = runtime.restore(spec("flaky_v1"), state)
    assert runtime.serialize(restored) == state


def test_bound_leases_of_the_foundation_process_move_to_the_shipped_one() -> None:
    """The real upgrade: leases bound by the process without chain steps move to the shipped
    process (chain steps added) and are released through its path."""
    root = Path(__file__).resolve().parents[3] / "processes"
    old = runtime.load_spec((root / "variants" / "lease_lifecycle_without_chain.bpmn")
                            .read_text())
    new = runtime.load_spec((root / "lease_lifecycle.bpmn").read_text())
    workflow, report = runtime.start(old, REQUEST)
    while report.parked:
        report = runtime.complete_service_task(workflow, report.parked[0].task_id, {
            "lease_id": 5, "ip": "10.0.0.5", "expires_at": EXPIRES})
    assert set(report.messages) >= {"lease_release"}
    plan = migration.plan(old, runtime.serialize(workflow), new)
    assert plan.movable, plan.blockers
    moved, after = migration.migrate(old, runtime.serialize(workflow), new)
    assert after.wake_at == report.wake_at
    released = runtime.send_message(moved, "lease_release", {"by": "test"})
    steps = []
    while released.parked:
        steps.append(released.parked[0].operation)
        released = runtime.complete_service_task(moved, released.parked[0].task_id,
                                                 {"lease_id": 5, "state": "released"})
    assert released.completed and "ipam.release" in steps
    old_steps = {ts.operation_name for ts in old.spec.task_specs.values()
                 if isinstance(ts, runtime.ParkedServiceTask)}
    assert set(steps) - old_steps  # at least one step only the new version has
