"""Instance migration on PostgreSQL: real row locks decide what a migration sees."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from lf_support import settle

pytestmark = pytest.mark.integration


def test_migrate_and_revert_on_postgresql(client: FlaskClient, admin: dict[str, str],
                                          engine: Any, deploy: Callable[..., int], v1: int,
                                          request_lease: Callable[[str], int]) -> None:
    instances = [request_lease(f"host-{n}") for n in range(3)]
    v2 = deploy("flaky_v2")
    url = "/api/v1/processes/lease_lifecycle/migrations"
    moved = client.post(url, json={"from": v1, "to": v2, "dry_run": False}, headers=admin)
    assert moved.status_code == 201, moved.json
    assert moved.json["moved"] == 3
    reverted = client.post(f"{url}/{moved.json['id']}/revert", headers=admin)
    assert reverted.status_code == 200, reverted.json
    assert {i["outcome"] for i in reverted.json["instances"]} == {"reverted"}
    for instance_id in instances:
        described = client.get(f"/api/v1/instances/{instance_id}", headers=admin).json
        assert (described["version"], described["state"]) == (v1, "waiting")


def test_a_migration_decides_on_the_state_it_finds_under_the_row_lock(
        app: Flask, client: FlaskClient, admin: dict[str, str], engine: Any,
        deploy: Callable[..., int], v1: int, request_lease: Callable[[str], int]) -> None:
    """A release that holds the instance's lock when the migration reaches it wins: the
    migration waits, then sees the instance running its release step (changed in v2)."""
    from app.extensions import db
    from app.services import instances, migration
    from app.services.uow import unit_of_work

    busy = request_lease("host-busy")
    idle = request_lease("host-idle")
    v2 = deploy("flaky_v2")
    locked, go = threading.Event(), threading.Event()
    result: dict[str, Any] = {}
    errors: list[BaseException] = []

    def release_holding_the_lock() -> None:
        try:
            with app.app_context(), unit_of_work():
                instances.lock(busy)
                locked.set()
                go.wait(30)
                instances.send_message(busy, "lease_release", {"by": "test"}, actor="test")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            locked.set()

    def migrate() -> None:
        try:
            with app.app_context(), unit_of_work():
                run = migration.migrate("lease_lifecycle", v1, v2, actor="test")
                result.update(migration.describe(run, with_items=True))
        except BaseException as exc:
            errors.append(exc)

    holder = threading.Thread(target=release_holding_the_lock)
    holder.start()
    assert locked.wait(30) and not errors
    mover = threading.Thread(target=migrate)
    mover.start()

    def migration_waits_for_the_lock() -> bool:
        with app.app_context():
            waiting = db.session.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()")).scalar_one()
            db.session.rollback()
            return bool(waiting)

    settle(migration_waits_for_the_lock, 30, "the migration waiting for the instance lock")
    go.set()
    holder.join(30)
    mover.join(30)
    assert not errors, errors
    outcomes = {i["instance_id"]: i for i in result["instances"]}
    assert outcomes[idle]["outcome"] == "moved"
    assert outcomes[busy]["outcome"] == "skipped"
    assert [(r["code"], r["element"]) for r in outcomes[busy]["reasons"]] == [
        ("running_step_changed", "release")]
