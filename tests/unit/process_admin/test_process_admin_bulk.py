"""Bulk inbox actions: one action for many tasks, each reported as it really ended."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.extensions import db
from app.models import AuditEntry, HumanTask


@pytest.fixture
def inbox(engine: Any, flaky: Any, v1: int, request_lease: Callable[[str], int]) -> list[int]:
    """Three lease requests whose commits keep failing: three open manual-retry tasks."""
    flaky.failures_left = 12
    instances = [request_lease(f"host-{n}") for n in range(3)]
    for _ in range(3):
        engine.make_jobs_due()
        engine.tick()
    flaky.failures_left = 0
    with engine.app.app_context():
        tasks = list(db.session.execute(select(HumanTask.id).where(
            HumanTask.instance_id.in_(instances)).order_by(HumanTask.id)).scalars())
    assert len(tasks) == 3
    return tasks


def test_bulk_reports_what_really_happened_to_each_task(
        app: Flask, client: FlaskClient, admin: dict[str, str], engine: Any,
        inbox: list[int]) -> None:
    first, second, third = inbox
    done = client.post(f"/api/v1/tasks/{first}/complete", json={"action": "alternative"},
                       headers=admin)
    assert done.status_code == 200
    response = client.post("/api/v1/tasks/bulk", headers=admin, json={
        "ids": [first, second, 999999, second], "action": "abort", "comment": "pool retired"})
    assert response.status_code == 200, response.json
    engine.run()
    results = {r["id"]: r for r in response.json["tasks"]}
    assert list(results) == [first, second, 999999]  # the duplicate is acted on once
    assert (results[first]["status"], results[first]["error"]) == (409, "task_done")
    assert results[first]["action"] == "alternative"  # who was first, and what they chose
    assert (results[second]["status"], results[second]["action"]) == (200, "abort")
    assert results[second]["instance"]["state"] == "aborted"
    assert (results[999999]["status"], results[999999]["error"]) == (404, "unknown_task")
    assert response.json["summary"] == {"200": 1, "404": 1, "409": 1}
    open_ids = [t["id"] for t in client.get("/api/v1/tasks", headers=admin).json]
    assert open_ids == [third]
    with app.app_context():
        entries = [json.loads(e.payload)["data"] for e in db.session.execute(
            select(AuditEntry).where(AuditEntry.kind == "task.complete")
            .order_by(AuditEntry.seq)).scalars()]
    assert [(e["action"], e["comment"], e["before"], e["after"]) for e in entries] == [
        ("alternative", None, "open", "completed"), ("abort", "pool retired", "open",
                                                     "completed")]


@pytest.mark.parametrize(("payload", "field"), [
    ({"ids": [], "action": "retry"}, "ids"),
    ({"ids": ["1"], "action": "retry"}, "ids"),
    ({"ids": [True], "action": "retry"}, "ids"),
    ({"ids": list(range(1, 502)), "action": "retry"}, "ids"),
    ({"ids": [1], "action": "explode"}, "action"),
    ({"ids": [1], "action": "retry", "comment": 5}, "comment"),
    ({"ids": [1], "action": "retry", "when": "now"}, "when"),
])
def test_a_bad_bulk_request_touches_nothing(client: FlaskClient, admin: dict[str, str],
                                           inbox: list[int], payload: dict[str, Any],
                                           field: str) -> None:
    # id 1 stands for a real open task (`type is int`: True must stay True)
    payload = {**payload, "ids": [inbox[0] if type(i) is int and i == 1 else i
                                  for i in payload["ids"]]}
    response = client.post("/api/v1/tasks/bulk", json=payload, headers=admin)
    assert response.status_code == 422
    assert response.json["details"][0]["field"] == field
    assert len(client.get("/api/v1/tasks", headers=admin).json) == 3


def test_viewers_cannot_act_on_the_inbox(app: Flask, client: FlaskClient,
                                         inbox: list[int]) -> None:
    from flask import session
    from flask_wtf.csrf import generate_csrf

    with client.session_transaction() as stored:
        stored["user"] = {"name": "vic", "role": "viewer"}
        stored["csrf_token"] = "csrf-vic"
    with app.test_request_context():
        session["csrf_token"] = "csrf-vic"
        headers = {"X-CSRFToken": generate_csrf()}
    response = client.post("/api/v1/tasks/bulk", json={"ids": inbox, "action": "abort"},
                           headers=headers)
    assert response.status_code == 403 and "operator role" in response.json["message"]
