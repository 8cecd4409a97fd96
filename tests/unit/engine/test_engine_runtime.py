"""The engine adapter: park, resume, duplicate results, BPMN error paths, timers, messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine import runtime

DATA = Path(__file__).resolve().parents[2] / "data" / "engine"
DEFAULT = (Path(__file__).resolve().parents[3] / "processes" / "variants"
           / "lease_lifecycle_without_chain.bpmn")


@pytest.fixture
def spec() -> runtime.ProcessSpec:
    return runtime.load_spec((DATA / "error_path" / "process.bpmn").read_text())


def start(spec: runtime.ProcessSpec):  # type: ignore[no-untyped-def]
    return runtime.start(spec, {"request": {"subnet": "10.0.0.0/24", "client": "c"}})


def test_service_task_parks_with_evaluated_parameters(spec: runtime.ProcessSpec) -> None:
    workflow, report = start(spec)
    assert not report.completed
    [job] = report.parked
    assert job.operation == "ipam.reserve" and job.task_name == "work"
    assert job.params == {"subnet": "10.0.0.0/24", "client_id": "c-x"}
    assert (job.retries, job.backoff_base) == (2, 1)


def test_result_resumes_after_a_round_trip_through_storage(spec: runtime.ProcessSpec) -> None:
    workflow, report = start(spec)
    stored = runtime.serialize(workflow)
    assert "task_specs" not in stored  # the spec is not stored with each instance
    restored = runtime.restore(spec, stored)
    done = runtime.complete_service_task(restored, report.parked[0].task_id, {"ip": "10.0.0.5"})
    assert done.completed and done.data["result"] == {"ip": "10.0.0.5"}


def test_duplicate_or_late_result_is_ignored(spec: runtime.ProcessSpec) -> None:
    workflow, report = start(spec)
    task_id = report.parked[0].task_id
    runtime.complete_service_task(workflow, task_id, {"ip": "10.0.0.5"})
    with pytest.raises(runtime.NotWaiting):
        runtime.complete_service_task(workflow, task_id, {"ip": "10.0.0.6"})
    with pytest.raises(runtime.NotWaiting):
        runtime.complete_service_task(workflow, "not-a-uuid", {})


def test_failure_takes_the_boundary_error_path(spec: runtime.ProcessSpec) -> None:
    workflow, report = start(spec)
    done = runtime.fail_service_task(workflow, report.parked[0].task_id,
                                     code="pool_exhausted", message="none left",
                                     details={"kind": "business"})
    assert done.completed
    assert done.data["outcome"] == {"state": "refused", "reason": "pool_exhausted"}


def test_a_failure_without_error_path_raises() -> None:
    xml = (DATA / "error_path" / "process.bpmn").read_text()
    xml = xml.replace('<bpmn:boundaryEvent id="failed" attachedToRef="work">\n'
                      '      <bpmn:outgoing>f3</bpmn:outgoing><bpmn:errorEventDefinition/>\n'
                      '    </bpmn:boundaryEvent>', "")
    xml = xml.replace('<bpmn:sequenceFlow id="f3" sourceRef="failed" targetRef="note"/>', "")
    xml = xml.replace("<bpmn:incoming>f3</bpmn:incoming>", "")
    spec = runtime.load_spec(xml)
    workflow, report = start(spec)
    with pytest.raises(runtime.InstanceError):
        runtime.fail_service_task(workflow, report.parked[0].task_id, code="x", message="boom")


def test_default_process_waits_for_release_renewal_and_expiry() -> None:
    spec = runtime.load_spec(DEFAULT.read_text())
    workflow, report = runtime.start(spec, {"lease_request": {
        "subnet": "10.0.0.0/24", "client_id": "c", "instance_id": 1}})
    report = runtime.complete_service_task(workflow, report.parked[0].task_id,
                                           {"lease_id": 1, "ip": "10.0.0.9"})
    assert report.parked[0].operation == "dhcp.commit"
    report = runtime.complete_service_task(workflow, report.parked[0].task_id,
                                           {"expires_at": "2030-01-01T00:00:00+00:00"})
    assert report.wake_at is not None and report.wake_at.year == 2030
    assert set(report.messages) == {"lease_release", "lease_renew"}
    report = runtime.send_message(workflow, "lease_renew",
                                  {"expires_at": "2031-06-01T00:00:00+00:00"})
    assert report.wake_at is not None and report.wake_at.year == 2031  # timer moved, kept
    report = runtime.send_message(workflow, "lease_release", {"by": "test"})
    assert [p.operation for p in report.parked] == ["ipam.release"]
    assert report.parked[0].params == {"lease_id": 1, "reason": "release"}
    with pytest.raises(runtime.NotWaiting):
        runtime.send_message(workflow, "lease_release", {})


def test_an_expiry_in_the_past_takes_the_expire_path_at_once() -> None:
    spec = runtime.load_spec(DEFAULT.read_text())
    workflow, report = runtime.start(spec, {"lease_request": {
        "subnet": "10.0.0.0/24", "client_id": "c", "instance_id": 1}})
    report = runtime.complete_service_task(workflow, report.parked[0].task_id,
                                           {"lease_id": 1, "ip": "10.0.0.9"})
    report = runtime.complete_service_task(workflow, report.parked[0].task_id,
                                           {"expires_at": "2001-01-01T00:00:00+00:00"})
    assert [p.task_name for p in report.parked] == ["expire"]
    assert report.wake_at is None
    assert runtime.fire_timers(workflow).parked == ()  # nothing fires twice


def test_malformed_xml_is_a_definition_error() -> None:
    with pytest.raises(runtime.DefinitionError):
        runtime.load_spec("<bpmn:definitions")
