"""Retries with growing backoff, the manual-retry inbox and its actions, lease time as a timer.

The process is tests/data/process_admin/flaky_v1.bpmn: the lease lifecycle whose commit step
is the test operation `test.flaky_commit` (retry policy: 3 retries, backoff base 1 s).
Jobs run when the test says so (`engine`); backoff delays are ended by moving `not_before`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.extensions import db
from app.leases.states import HOLDING
from app.models import Lease, ProcessInstance, ServiceJob, utcnow

HOLDING_STATES = {s.value for s in HOLDING}


def jobs_of(app: Flask, instance_id: int, task_name: str) -> list[ServiceJob]:
    with app.app_context():
        rows = list(db.session.execute(select(ServiceJob).where(
            ServiceJob.instance_id == instance_id, ServiceJob.task_name == task_name)
            .order_by(ServiceJob.attempt)).scalars())
        db.session.expunge_all()
        return rows


def leases_of(app: Flask, instance_id: int) -> list[tuple[str, str]]:
    from app.ipam.addresses import int_to_ip

    with app.app_context():
        return [(int_to_ip(a), s) for a, s in db.session.execute(
            select(Lease.address, Lease.state).where(Lease.instance_id == instance_id)
            .order_by(Lease.id))]


def instance(client: FlaskClient, admin: dict[str, str], instance_id: int) -> dict[str, Any]:
    return client.get(f"/api/v1/instances/{instance_id}", headers=admin).json  # type: ignore


def fail_into_inbox(engine: Any, flaky: Any, request_lease: Callable[[str], int],
                    client_id: str) -> int:
    """A lease request whose commit fails on every attempt: it ends in the inbox."""
    flaky.failures_left = 4
    instance_id = request_lease(client_id)
    for _ in range(3):
        engine.make_jobs_due()
        engine.tick()
    return instance_id


@pytest.mark.usefixtures("v1")
def test_transient_failure_retried_with_growing_delays_then_succeeds(
        app: Flask, client: FlaskClient, admin: dict[str, str], engine: Any, flaky: Any,
        request_lease: Callable[[str], int], monkeypatch: pytest.MonkeyPatch) -> None:
    from app.services import jobs as job_service

    flaky.failures_left = 2
    instance_id = request_lease("host-retry")
    gaps = []
    for attempt in (2, 3):
        jobs = jobs_of(app, instance_id, "commit")
        assert [j.attempt for j in jobs] == list(range(1, attempt + 1))
        assert [j.status for j in jobs] == ["failed"] * (attempt - 1) + ["queued"]
        waiting = jobs[-1]
        gaps.append((waiting.not_before - jobs[-2].finished_at).total_seconds())
        # A tick a moment before its delay is over runs nothing early. The moment is set,
        # not waited for: on a loaded machine a second may pass before the next line.
        early = min(waiting.not_before, waiting.deadline) - timedelta(milliseconds=1)
        with monkeypatch.context() as patch:
            patch.setattr(job_service, "utcnow", lambda early=early: early)
            assert engine.tick()["requeued"] == 0
        engine.make_jobs_due()
        engine.tick()
    # base 1 s doubling per attempt, with up to +50 % jitter: [1, 1.5] then [2, 3]
    assert 1 <= gaps[0] <= 1.6 and 2 <= gaps[1] <= 3.1 and gaps[1] > gaps[0]
    assert flaky.calls == 3
    assert [j.status for j in jobs_of(app, instance_id, "commit")] == ["failed", "failed", "done"]
    assert instance(client, admin, instance_id)["state"] == "waiting"
    [(ip, state)] = leases_of(app, instance_id)
    assert state == "bound" and ip.startswith("10.77.0.")


@pytest.mark.usefixtures("v1")
def test_spent_retries_put_a_task_with_error_attempts_and_request_in_the_inbox(
        app: Flask, client: FlaskClient, admin: dict[str, str], engine: Any, flaky: Any,
        request_lease: Callable[[str], int]) -> None:
    instance_id = fail_into_inbox(engine, flaky, request_lease, "host-inbox")
    assert [j.status for j in jobs_of(app, instance_id, "commit")] == ["failed"] * 4
    [task] = client.get("/api/v1/tasks", headers=admin).json
    assert task["instance_id"] == instance_id and task["title"] == "Approve manual retry"
    assert task["actions"] == ["retry", "alternative", "abort"]
    error = task["error"]
    assert (error["code"], error["cause"], error["attempts"], error["kind"]) == (
        "retries_exhausted", "peer_down", 4, "transient")
    assert error["task"] == "commit" and error["ip"].startswith("10.77.0.")
    assert task["request"]["client_id"] == "host-inbox"
    # the error path gave the reservation back before asking a person
    assert leases_of(app, instance_id) == [(error["ip"], "abandoned")]


@pytest.mark.parametrize(("action", "instance_state", "holding", "same_ip"), [
    ("retry", "waiting", 1, None),
    ("alternative", "waiting", 1, False),
    ("abort", "aborted", 0, None),
])
@pytest.mark.usefixtures("v1")
def test_each_inbox_action_leads_to_the_right_lease_state(
        app: Flask, client: FlaskClient, admin: dict[str, str], engine: Any, flaky: Any,
        request_lease: Callable[[str], int], action: str, instance_state: str, holding: int,
        same_ip: bool | None) -> None:
    instance_id = fail_into_inbox(engine, flaky, request_lease, f"host-{action}")
    [task] = client.get("/api/v1/tasks", headers=admin).json
    failed_ip = task["error"]["ip"]
    flaky.failures_left = 0  # the peer is back
    response = client.post(f"/api/v1/tasks/{task['id']}/complete",
                           json={"action": action, "comment": "peer fixed"}, headers=admin)
    assert response.status_code == 200, response.json
    assert response.json["completed_by"] == "api-token"
    engine.run()
    assert instance(client, admin, instance_id)["state"] == instance_state
    leases = leases_of(app, instance_id)
    held = [ip for ip, state in leases if state in HOLDING_STATES]
    assert len(held) == holding
    assert [state for _, state in leases if state in HOLDING_STATES] == ["bound"] * holding
    if same_ip is False:
        assert held[0] != failed_ip
    if action == "abort":  # nothing reserved anywhere: no holding lease for this client
        with app.app_context():
            assert db.session.execute(select(Lease).where(
                Lease.client_id == "host-abort", Lease.state.in_(HOLDING_STATES))).first() is None
    again = client.post(f"/api/v1/tasks/{task['id']}/complete", json={"action": action},
                        headers=admin)
    assert again.status_code == 409 and again.json["error"] == "task_done"


def _bound(app: Flask, engine: Any, request_lease: Callable[[str], int],
           client_id: str) -> tuple[int, str]:
    instance_id = request_lease(client_id)
    with app.app_context():
        row = db.session.get(ProcessInstance, instance_id)
        assert row is not None and row.state == "waiting" and row.wake_at is not None
        return instance_id, row.wake_at.isoformat()


def _set_expiry_in_the_past(app: Flask, instance_id: int) -> None:
    """As if the lease time had run out: the expiry in the stored process state goes back."""
    with app.app_context():
        row = db.session.get(ProcessInstance, instance_id)
        assert row is not None
        # The expiry is in the task data (`binding`) and in the timer's own memory of its
        # due time (`event_value`): every copy of the old value goes back.
        [old] = {m for m in re.findall(r'"expires_at": ("[^"]+")', row.workflow)}
        past = json.dumps((utcnow() - timedelta(seconds=5)).isoformat())
        assert row.workflow.count(old) >= 2
        row.workflow = row.workflow.replace(old, past)
        row.wake_at = utcnow() - timedelta(seconds=5)
        db.session.commit()  # an ORM update: bumps the row version, so no cached state is used


@pytest.mark.usefixtures("v1")
def test_a_timer_expiry_releases_the_lease(app: Flask, client: FlaskClient,
                                          admin: dict[str, str], engine: Any,
                                          request_lease: Callable[[str], int]) -> None:
    instance_id, _ = _bound(app, engine, request_lease, "host-expire")
    assert engine.tick()["woken"] == 0  # not due yet: the ticker leaves it waiting
    _set_expiry_in_the_past(app, instance_id)
    assert engine.tick()["woken"] == 1
    assert instance(client, admin, instance_id)["state"] == "completed"
    [(_, state)] = leases_of(app, instance_id)
    assert state == "expired"
    assert [j.status for j in jobs_of(app, instance_id, "expire")] == ["done"]


@pytest.mark.usefixtures("v1")
def test_renew_moves_the_expiry_and_keeps_the_timer(app: Flask, client: FlaskClient,
                                                   admin: dict[str, str], engine: Any,
                                                   request_lease: Callable[[str], int]) -> None:
    from app.services import instances
    from app.services.uow import unit_of_work

    instance_id, first = _bound(app, engine, request_lease, "host-renew")
    later = (utcnow() + timedelta(hours=2)).replace(microsecond=0)
    with app.app_context(), unit_of_work():
        instances.send_message(instance_id, "lease_renew", {"expires_at": later.isoformat()},
                               actor="dhcp")
    engine.run()
    described = instance(client, admin, instance_id)
    assert described["state"] == "waiting"
    assert described["wake_at"] == later.isoformat() != first
    # back in the event gateway, whose timer branch now waits for the new expiry
    states = {t["element"]: t["state"] for t in described["tasks"]}
    assert states["await"] == "WAITING"
    assert "lease_expired" in states
    [(_, state)] = leases_of(app, instance_id)
    assert state == "bound"
