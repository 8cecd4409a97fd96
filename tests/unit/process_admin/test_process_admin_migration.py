"""Versions, diffs and migrations of running instances through the admin API, with the audit.

Instances of v1 (tests/data/process_admin/flaky_v1.bpmn) wait at different points; v2 renames
the manual-retry task, gives the commit step a longer retry policy and notes a release before
ending. The dry run says which may move and why not; the bulk migration moves the movable
ones, which then finish on v2; a revert puts back the ones that did nothing since.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.extensions import db
from app.models import AuditEntry


def audit(app: Flask, kind_prefix: str) -> list[dict[str, Any]]:
    with app.app_context():
        rows = db.session.execute(select(AuditEntry).where(AuditEntry.kind.startswith(
            kind_prefix)).order_by(AuditEntry.seq)).scalars()
        return [{"kind": r.kind, "subject": r.subject, "actor": r.actor, "at": r.at,
                 **json.loads(r.payload)["data"]} for r in rows]


def row_versions(app: Flask) -> dict[int, int]:
    from app.models import ProcessInstance

    with app.app_context():
        return dict(db.session.execute(select(ProcessInstance.id, ProcessInstance.version))
                    .tuples().all())


def release(client: FlaskClient, admin: dict[str, str], engine: Any, instance_id: int) -> None:
    from app.services import instances
    from app.services.uow import unit_of_work

    with engine.app.app_context(), unit_of_work():
        instances.send_message(instance_id, "lease_release", {"by": "test"}, actor="test")
    engine.run()


def test_versions_list_and_semantic_diff(client: FlaskClient, admin: dict[str, str],
                                         deploy: Callable[..., int], v1: int) -> None:
    v2 = deploy("flaky_v2", activate=False)
    listed = client.get("/api/v1/processes/lease_lifecycle/versions", headers=admin).json
    mine = {row["version"]: row for row in listed}
    assert mine[v1]["active"] and not mine[v2]["active"]
    assert mine[v2]["author"] == "api-token" and len(mine[v2]["checksum"]) == 64
    diff = client.get(f"/api/v1/processes/lease_lifecycle/diff?from={v1}&to={v2}",
                      headers=admin).json
    assert {e["element_id"] for e in diff["added"]} >= {"note_release", "approve_manual"}
    assert {e["element_id"] for e in diff["removed"]} >= {"approve_retry"}
    changed = {e["element_id"]: e["changes"] for e in diff["changed"]}
    assert "retry" in changed["commit"]


@pytest.mark.parametrize(("query", "status", "field"), [
    ("from=1", 422, "to"),
    ("from=x&to=2", 422, "from"),
    ("from=0&to=2", 422, "from"),
    ("from=1&to=99", 404, None),
])
def test_bad_diff_requests(client: FlaskClient, admin: dict[str, str], v1: int, query: str,
                           status: int, field: str | None) -> None:
    response = client.get(f"/api/v1/processes/lease_lifecycle/diff?{query}", headers=admin)
    assert response.status_code == status
    if field:
        assert response.json["details"][0]["field"] == field
    assert client.get("/api/v1/processes/nope/versions", headers=admin).status_code == 404


def test_migration_dry_run_bulk_move_finish_on_v2_and_revert(
        app: Flask, client: FlaskClient, admin: dict[str, str], engine: Any, flaky: Any,
        deploy: Callable[..., int], v1: int, request_lease: Callable[[str], int]) -> None:
    bound_a = request_lease("host-a")
    bound_b = request_lease("host-b")
    done = request_lease("host-done")
    release(client, admin, engine, done)
    flaky.failures_left = 4
    in_inbox = request_lease("host-inbox")
    for _ in range(3):
        engine.make_jobs_due()
        engine.tick()
    flaky.failures_left = 1
    committing = request_lease("host-committing")  # its commit waits for a retry
    v2 = deploy("flaky_v2")

    url = "/api/v1/processes/lease_lifecycle/migrations"
    dry = client.post(url, json={"from": v1, "to": v2, "dry_run": True}, headers=admin)
    assert dry.status_code == 200, dry.json
    plans = {i["instance_id"]: i for i in dry.json["instances"]}
    assert set(plans) == {bound_a, bound_b, done, in_inbox, committing}
    reasons = {i: [(r["code"], r["element"]) for r in p["reasons"]] for i, p in plans.items()}
    assert reasons == {bound_a: [], bound_b: [], done: [("ended", None)],
                       in_inbox: [("open_task_changed", "approve_retry")],
                       committing: [("running_step_changed", "commit")]}
    assert plans[bound_a]["movable"] and plans[bound_a]["reentered"] == ["await"]
    assert dry.json["id"] is None and (dry.json["movable"], dry.json["blocked"]) == (2, 3)
    versions = {i["id"]: i["version"] for i in client.get("/api/v1/instances",
                                                          headers=admin).json}
    assert set(versions.values()) == {v1}  # a dry run changes nothing

    rows_before = row_versions(app)
    moved = client.post(url, json={"from": v1, "to": v2, "dry_run": False}, headers=admin)
    assert moved.status_code == 201, moved.json
    rows_after = row_versions(app)  # a move is a write under the row's optimistic lock
    assert rows_after[bound_a] > rows_before[bound_a]
    assert rows_after[bound_b] > rows_before[bound_b]
    assert all(rows_after[i] == rows_before[i] for i in (done, in_inbox, committing))
    assert (moved.json["moved"], moved.json["skipped"]) == (2, 3)
    outcomes = {i["instance_id"]: i["outcome"] for i in moved.json["instances"]}
    assert outcomes == {bound_a: "moved", bound_b: "moved", done: "skipped",
                        in_inbox: "skipped", committing: "skipped"}
    for instance_id in (bound_a, bound_b):
        described = client.get(f"/api/v1/instances/{instance_id}", headers=admin).json
        assert (described["version"], described["state"]) == (v2, "waiting")
        assert described["wake_at"] is not None  # the expiry timer survived the move
    assert client.get(f"/api/v1/instances/{in_inbox}", headers=admin).json["version"] == v1

    # a moved instance finishes on v2: its new step runs
    release(client, admin, engine, bound_a)
    finished = client.get(f"/api/v1/instances/{bound_a}", headers=admin).json
    assert finished["state"] == "completed" and finished["outcome"]["version"] == 2

    migration_id = moved.json["id"]
    reverted = client.post(f"{url}/{migration_id}/revert", headers=admin)
    assert reverted.status_code == 200, reverted.json
    outcomes = {i["instance_id"]: i for i in reverted.json["instances"]}
    assert outcomes[bound_a]["outcome"] == "kept"  # it finished on v2 since: left alone
    assert outcomes[bound_a]["reasons"][0]["code"] == "changed_since"
    assert outcomes[bound_b]["outcome"] == "reverted"
    assert client.get(f"/api/v1/instances/{bound_b}", headers=admin).json["version"] == v1
    release(client, admin, engine, bound_b)  # and it still runs on v1
    back = client.get(f"/api/v1/instances/{bound_b}", headers=admin).json
    assert back["state"] == "completed" and "version" not in back["outcome"]
    again = client.post(f"{url}/{migration_id}/revert", headers=admin)
    assert again.status_code == 409 and again.json["error"] == "already_reverted"
    listed = client.get(url, headers=admin).json
    assert [(m["id"], m["state"]) for m in listed] == [(migration_id, "reverted")]

    moves = audit(app, "instance.migrate")
    assert [(m["kind"], m["subject"]) for m in moves] == [
        ("instance.migrate", f"instance/{bound_a}"), ("instance.migrate", f"instance/{bound_b}"),
        ("instance.migrate.revert", f"instance/{bound_b}")]
    for entry in moves:
        assert entry["actor"] == "api-token" and entry["at"] is not None
        assert entry["migration"] == migration_id
    assert moves[0]["before"]["process"] == f"lease_lifecycle/v{v1}"
    assert moves[0]["after"]["process"] == f"lease_lifecycle/v{v2}"
    assert moves[2]["before"]["definition_id"] == moves[0]["after"]["definition_id"]
    [run] = audit(app, "process.migrate.revert")
    assert (run["reverted"], run["kept"]) == (1, 1)
    [summary] = [e for e in audit(app, "process.migrate") if e["kind"] == "process.migrate"]
    assert (summary["before"], summary["after"], summary["moved"]) == (v1, v2, 2)
    deploys = audit(app, "process.deploy")
    assert deploys[-1]["before"] == v1 and deploys[-1]["after"] == v2


@pytest.mark.parametrize(("payload", "status", "field"), [
    ({"to": 2}, 422, "from"),
    ({"from": 1, "to": 1}, 422, "to"),
    ({"from": 1, "to": "two"}, 422, "to"),
    ({"from": 1, "to": 2, "dry_run": "no"}, 422, "dry_run"),
    ({"from": 1, "to": 2, "force": True}, 422, "force"),
    ({"from": 1, "to": 42}, 404, None),
])
def test_bad_migration_requests(client: FlaskClient, admin: dict[str, str], v1: int,
                                payload: dict[str, Any], status: int, field: str | None) -> None:
    response = client.post("/api/v1/processes/lease_lifecycle/migrations", json=payload,
                           headers=admin)
    assert response.status_code == status, response.json
    if field:
        assert response.json["details"][0]["field"] == field


def session_of(app: Flask, client: FlaskClient, name: str, role: str) -> dict[str, str]:
    """Log `name` in with `role` (a browser session); the CSRF header its changes must carry."""
    from flask import session
    from flask_wtf.csrf import generate_csrf

    with client.session_transaction() as stored:
        stored["user"] = {"name": name, "role": role}
        stored["csrf_token"] = "csrf-" + name
    with app.test_request_context():
        session["csrf_token"] = "csrf-" + name
        return {"X-CSRFToken": generate_csrf()}


@pytest.mark.parametrize(("role", "status"), [("viewer", 403), ("operator", 403),
                                              ("admin", 200)])
def test_migrations_need_the_admin_role(app: Flask, client: FlaskClient, deploy: Any, v1: int,
                                        role: str, status: int) -> None:
    v2 = deploy("flaky_v2")
    headers = session_of(app, client, "olga", role)
    response = client.post("/api/v1/processes/lease_lifecycle/migrations",
                           json={"from": v1, "to": v2, "dry_run": True}, headers=headers)
    assert response.status_code == status, response.json
    if status == 403:
        assert "admin role" in response.json["message"]


def test_openapi_rows_describe_every_admin_route(app: Flask) -> None:
    import re

    from app.web import admin_api

    rules = {(method.lower(), re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
             for rule in app.url_map.iter_rules() if rule.endpoint.startswith("admin_api.")
             for method in rule.methods or () if method in ("GET", "POST")}
    described = {(m, "/api/v1" + p.replace("{id}", "{migration_id}"))
                 for m, p, *_ in admin_api.OPENAPI_ROUTES}
    assert described == rules
